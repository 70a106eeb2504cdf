//! `pod/x`, bare `x`, `deployment/x`, `statefulset/x`, `daemonset/x`,
//! `replicaset/x`, `job/x` (kubectl's short names too) and `-l` selectors,
//! resolved to the running pods they name.

use super::{Cluster, api_error};
use crate::error::CliError;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::ListParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
            Kind::ReplicaSet => "replicaset",
            Kind::Job => "job",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

pub fn parse(s: &str) -> Result<Target, CliError> {
    let (kind, name) = s.split_once('/').unwrap_or(("pod", s));
    let kind = match kind.to_ascii_lowercase().as_str() {
        "pod" | "pods" | "po" => Kind::Pod,
        "deployment" | "deployments" | "deploy" => Kind::Deployment,
        "statefulset" | "statefulsets" | "sts" => Kind::StatefulSet,
        "daemonset" | "daemonsets" | "ds" => Kind::DaemonSet,
        "replicaset" | "replicasets" | "rs" => Kind::ReplicaSet,
        "job" | "jobs" => Kind::Job,
        other => {
            return Err(CliError::Usage(format!(
                "cannot diagnose a {other:?}: give pod/NAME, deployment/NAME, statefulset/NAME, daemonset/NAME, \
                 replicaset/NAME, job/NAME or -l SELECTOR"
            )));
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(CliError::Usage(format!("{s:?} is not KIND/NAME")));
    }
    Ok(Target { kind, name: name.to_string() })
}

/// kubectl's string form of a label selector.
pub fn selector_string(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    parts.join(",")
}

/// The running pods of a target or selector. Err when there are none, saying
/// what there is instead.
pub async fn resolve(cluster: &Cluster, target: Option<&Target>, selector: Option<&str>) -> Result<Vec<Pod>, CliError> {
    let ns = cluster.namespace.as_str();
    let client = cluster.client.clone();
    let (what, selector) = match (target, selector) {
        (Some(t), _) if t.kind == Kind::Pod => {
            let pod = Api::<Pod>::namespaced(client, ns)
                .get(&t.name)
                .await
                .map_err(|e| api_error(e, &format!("pod {} in namespace {ns}", t.name)))?;
            return match phase(&pod) {
                "Running" => Ok(vec![pod]),
                p => Err(CliError::NotFound {
                    message: format!(
                        "pod {} is {p}, not Running: there is no process to ask yet{}",
                        t.name,
                        waiting(&pod)
                    ),
                }),
            };
        }
        (Some(t), _) => {
            let what = format!("{t} in namespace {ns}");
            let err = |e| api_error(e, &what);
            let sel = match t.kind {
                Kind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
                    .get(&t.name)
                    .await
                    .map_err(err)?
                    .spec
                    .map(|s| s.selector),
                Kind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .get(&t.name)
                    .await
                    .map_err(err)?
                    .spec
                    .map(|s| s.selector),
                Kind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
                    .get(&t.name)
                    .await
                    .map_err(err)?
                    .spec
                    .map(|s| s.selector),
                Kind::ReplicaSet => Api::<ReplicaSet>::namespaced(client.clone(), ns)
                    .get(&t.name)
                    .await
                    .map_err(err)?
                    .spec
                    .map(|s| s.selector),
                Kind::Job => Api::<Job>::namespaced(client.clone(), ns)
                    .get(&t.name)
                    .await
                    .map_err(err)?
                    .spec
                    .and_then(|s| s.selector),
                Kind::Pod => unreachable!("handled above"),
            };
            let sel = sel
                .map(|s| selector_string(&s))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| CliError::NotFound { message: format!("{what} has no pod selector") })?;
            (what, sel)
        }
        (None, Some(sel)) => (format!("pods matching {sel:?}"), sel.to_string()),
        (None, None) => {
            return Err(CliError::Usage("what to diagnose? give pod/NAME, KIND/NAME or -l SELECTOR".into()));
        }
    };
    let api: Api<Pod> =
        if cluster.all_namespaces && target.is_none() { Api::all(client) } else { Api::namespaced(client, ns) };
    let pods = api.list(&ListParams::default().labels(&selector)).await.map_err(|e| api_error(e, &what))?.items;
    let total = pods.len();
    let mut running: Vec<Pod> = pods.into_iter().filter(|p| phase(p) == "Running").collect();
    running.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if running.is_empty() {
        return Err(CliError::NotFound {
            message: if total == 0 {
                format!("{what}: no pods match {selector:?}")
            } else {
                format!("{what}: none of its {total} pods is Running")
            },
        });
    }
    Ok(running)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Unknown")
}

/// " (app: ImagePullBackOff)" for the first waiting container, if any.
fn waiting(pod: &Pod) -> String {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses
        .into_iter()
        .flatten()
        .find_map(|c| {
            let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
            Some(format!(" ({}: {reason})", c.name))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn kinds_and_short_names() {
        assert_eq!(parse("demo").unwrap(), Target { kind: Kind::Pod, name: "demo".into() });
        assert_eq!(parse("deploy/web").unwrap().kind, Kind::Deployment);
        assert_eq!(parse("sts/db").unwrap().kind, Kind::StatefulSet);
        assert_eq!(parse("ds/x").unwrap().kind, Kind::DaemonSet);
        assert_eq!(parse("rs/x").unwrap().kind, Kind::ReplicaSet);
        assert_eq!(parse("job/x").unwrap().kind, Kind::Job);
        assert_eq!(parse("deployment/web").unwrap().to_string(), "deployment/web");
        assert!(parse("service/x").is_err());
        assert!(parse("pod/").is_err());
    }

    #[test]
    fn selectors_read_as_kubectl_writes_them() {
        let s = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement { key: "canary".into(), operator: "DoesNotExist".into(), values: None },
            ]),
        };
        assert_eq!(selector_string(&s), "app=web,tier in (a,b),!canary");
    }
}
