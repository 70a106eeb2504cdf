//! Where the answers come from: a remote agent over gRPC (`--agent`), or the
//! agent's readers in this process (`--local`, Linux only).

use crate::error::CliError;
use osl_proto::v1;
use osl_proto::v1::diagnostics_client::DiagnosticsClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[allow(clippy::large_enum_variant)] // one per run of the CLI
pub enum Backend {
    Remote {
        addr: String,
        client: DiagnosticsClient<Channel>,
        /// Sent as `authorization: Bearer …` when the agent wants one.
        token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        /// The port-forward carrying the connection, for an agent in a pod.
        _forward: Option<Box<kube::api::Portforwarder>>,
    },
    #[cfg(target_os = "linux")]
    Local(std::sync::Arc<osl_agent::Agent>),
}

/// Responses can be large (thousands of processes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl Backend {
    pub async fn connect(addr: &str, timeout: Duration, token: Option<&str>) -> Result<Self, CliError> {
        let token = token.map(|t| format!("Bearer {}", t.trim()).parse()).transpose().map_err(|_| {
            CliError::Usage("the token (--token-file or OSL_TOKEN) has characters a header cannot carry".into())
        })?;
        let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| CliError::Usage(format!("--agent {addr:?} is not a HOST:PORT address ({e})")))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CliError::CannotConnect { addr: addr.to_string(), source: Box::new(e) })?;
        let client = DiagnosticsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        Ok(Self::Remote { addr: addr.to_string(), client, token, _forward: None })
    }

    /// An agent in a pod, through a port-forward.
    pub fn forwarded(addr: String, client: DiagnosticsClient<Channel>, forward: kube::api::Portforwarder) -> Self {
        Self::Remote { addr, client, token: None, _forward: Some(Box::new(forward)) }
    }

    #[cfg(target_os = "linux")]
    pub fn local(roots: osl_agent::Roots) -> Self {
        Self::Local(std::sync::Arc::new(osl_agent::Agent::new(&roots)))
    }

    pub async fn diagnose(&mut self, req: v1::DiagnoseRequest) -> Result<v1::DiagnoseResponse, CliError> {
        match self {
            Self::Remote { addr, client, token, .. } => client
                .diagnose(authed(token, req))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| CliError::from_status(s, addr)),
            #[cfg(target_os = "linux")]
            Self::Local(agent) => local(agent, move |a| a.diagnose(req)).await,
        }
    }

    pub async fn list_fds(&mut self, req: v1::ListFdsRequest) -> Result<v1::ListFdsResponse, CliError> {
        match self {
            Self::Remote { addr, client, token, .. } => client
                .list_fds(authed(token, req))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| CliError::from_status(s, addr)),
            #[cfg(target_os = "linux")]
            Self::Local(agent) => local(agent, move |a| a.list_fds(req)).await,
        }
    }

    pub async fn sample_blocked(
        &mut self,
        req: v1::SampleBlockedRequest,
    ) -> Result<v1::SampleBlockedResponse, CliError> {
        match self {
            Self::Remote { addr, client, token, .. } => client
                .sample_blocked(authed(token, req))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| CliError::from_status(s, addr)),
            #[cfg(target_os = "linux")]
            Self::Local(agent) => local(agent, move |a| a.sample_blocked(req)).await,
        }
    }

    /// Streams a profile: `progress` for each tick, then the profile.
    pub async fn profile_syscalls(
        &mut self,
        req: v1::ProfileSyscallsRequest,
        mut progress: impl FnMut(&v1::ProfileProgress),
    ) -> Result<v1::SyscallProfile, CliError> {
        use v1::profile_syscalls_event::Event;
        match self {
            Self::Remote { addr, client, token, .. } => {
                let status = |s| CliError::from_status(s, addr);
                let mut stream = client.profile_syscalls(authed(token, req)).await.map_err(status)?.into_inner();
                while let Some(event) = stream.message().await.map_err(|s| CliError::from_status(s, addr))? {
                    match event.event {
                        Some(Event::Progress(p)) => progress(&p),
                        Some(Event::Profile(p)) => return Ok(p),
                        None => {}
                    }
                }
                Err(CliError::from_status(tonic::Status::internal("the profile stream ended without a result"), addr))
            }
            #[cfg(target_os = "linux")]
            Self::Local(agent) => {
                let (tx, mut rx) = tokio::sync::mpsc::channel(4);
                let call = local(agent, move |a| {
                    a.profile_syscalls(req, |p| {
                        if let Some(p) = p {
                            let _ = tx.try_send(p);
                        }
                        true
                    })
                });
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        result = &mut call => return result,
                        Some(p) = rx.recv() => progress(&p),
                    }
                }
            }
        }
    }

    pub async fn list_reports(&mut self) -> Result<v1::ListReportsResponse, CliError> {
        let req = v1::ListReportsRequest {};
        match self {
            Self::Remote { addr, client, token, .. } => client
                .list_reports(authed(token, req))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| CliError::from_status(s, addr)),
            #[cfg(target_os = "linux")]
            Self::Local(agent) => local(agent, move |a| a.list_reports(req)).await,
        }
    }

    pub async fn get_report(&mut self, id: String) -> Result<v1::GetReportResponse, CliError> {
        let req = v1::GetReportRequest { id };
        match self {
            Self::Remote { addr, client, token, .. } => client
                .get_report(authed(token, req))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| CliError::from_status(s, addr)),
            #[cfg(target_os = "linux")]
            Self::Local(agent) => local(agent, move |a| a.get_report(req)).await,
        }
    }

    pub async fn list_processes(
        &mut self,
        req: v1::ListProcessesRequest,
    ) -> Result<v1::ListProcessesResponse, CliError> {
        match self {
            Self::Remote { addr, client, token, .. } => client
                .list_processes(authed(token, req))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| CliError::from_status(s, addr)),
            #[cfg(target_os = "linux")]
            Self::Local(agent) => local(agent, move |a| a.list_processes(req)).await,
        }
    }
}

fn authed<T>(token: &Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", t.clone());
    }
    req
}

/// Runs an agent call on the blocking pool and maps its error exactly as the
/// gRPC server would, so `--local` and `--agent` fail alike.
#[cfg(target_os = "linux")]
async fn local<T: Send + 'static>(
    agent: &std::sync::Arc<osl_agent::Agent>,
    call: impl FnOnce(&osl_agent::Agent) -> osl_agent::error::Result<T> + Send + 'static,
) -> Result<T, CliError> {
    let agent = agent.clone();
    match tokio::task::spawn_blocking(move || call(&agent)).await {
        Ok(result) => result.map_err(|e| CliError::from_status(osl_agent::convert::status_from(&e), "local")),
        Err(e) => Err(CliError::Agent { message: format!("the local reader failed: {e}") }),
    }
}
