//! The Kubernetes side of `kubectl osl`: kubeconfig loading as kubectl does it,
//! targets (`pod/x`, `deployment/x`, `-l app=y`…) resolved to running pods, the
//! agent found in each pod and reached through a port-forward, and `attach`.

pub mod agent;
pub mod attach;
pub mod target;

use crate::args::KubeArgs;
use crate::error::CliError;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client and the namespace to use, as kubectl would pick them.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    pub all_namespaces: bool,
}

impl Cluster {
    /// `--kubeconfig`, else KUBECONFIG (several files merged), else
    /// ~/.kube/config, else the in-cluster service account; `--context`;
    /// `-n`, else the context's namespace, else "default".
    pub async fn connect(args: &KubeArgs) -> Result<Self, CliError> {
        let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
        let config = match (&args.kubeconfig, &args.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| CliError::Usage(format!("cannot read --kubeconfig {}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(no_config)?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options).await.map_err(no_config)?,
            (None, None) => kube::Config::infer().await.map_err(no_config)?,
        };
        let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .map_err(|e| CliError::Usage(format!("cannot build a Kubernetes client: {e}")))?;
        Ok(Self { client, namespace, all_namespaces: args.all_namespaces })
    }
}

fn no_config(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("no usable Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {e}"))
}

/// An API error as the user should read it: NotFound → exit 3, Forbidden →
/// exit 5 naming the verb and resource RBAC refused, others → cannot connect.
pub fn api_error(e: kube::Error, what: &str) -> CliError {
    match e {
        kube::Error::Api(s) if s.code == 404 => CliError::NotFound { message: format!("{what}: {}", s.message) },
        kube::Error::Api(s) if s.code == 403 => CliError::PermissionDenied {
            message: format!("{} (ask for this RBAC permission, e.g. bind the chart's osl-cli ClusterRole)", s.message),
        },
        kube::Error::Api(s) if s.code == 401 => CliError::PermissionDenied {
            message: format!("the API server does not accept these credentials: {}", s.message),
        },
        e => CliError::CannotConnect { addr: "the Kubernetes API server".into(), source: Box::new(e) },
    }
}
