//! `kubectl osl attach`: the agent added to a running pod as an ephemeral
//! container targeting one of its containers (so it shares that container's
//! PID namespace), without a restart. Ephemeral containers cannot be removed,
//! so an agent already there is reused rather than a second one added.

use super::agent::{AGENT_CONTAINER, AgentRef, find, pod_name};
use super::{Cluster, api_error};
use crate::args::Level;
use crate::error::CliError;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The capabilities each level adds (as the Helm chart's sidecar has them):
/// reading another user's /proc/PID/fd needs DAC_READ_SEARCH besides SYS_PTRACE.
pub fn capabilities(level: Level) -> &'static [&'static str] {
    match level {
        Level::Basic => &[],
        Level::Ptrace => &["SYS_PTRACE", "DAC_READ_SEARCH"],
        Level::Ebpf => &["SYS_PTRACE", "DAC_READ_SEARCH", "BPF", "PERFMON"],
    }
}

/// The ephemeral container: the agent serving on loopback, the pod's identity
/// from the downward API, only the capabilities the level needs.
pub fn ephemeral_container(target: &str, image: &str, level: Level) -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut security = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"], "add": capabilities(level)},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    // Capabilities only work for root (Kubernetes has no ambient capabilities).
    if level != Level::Basic {
        security["runAsUser"] = json!(0);
    }
    json!({
        "name": AGENT_CONTAINER,
        "image": image,
        "args": ["serve", "--report-dir", "/tmp/osl-reports"],
        "targetContainerName": target,
        "env": [
            {"name": "OSL_POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "OSL_POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "OSL_POD_UID", "valueFrom": field("metadata.uid")},
        ],
        "securityContext": security,
    })
}

/// Adds the agent unless one is there; waits until it runs. Returns the agent
/// and whether it was added now.
pub async fn attach(
    cluster: &Cluster,
    pod: &Pod,
    target: Option<&str>,
    image: &str,
    level: Level,
    wait: Duration,
) -> Result<(AgentRef, bool), CliError> {
    let name = pod_name(pod);
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| cluster.namespace.clone());
    let api = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    if let Some(agent) = find(pod).filter(|a| a.running) {
        return Ok((agent, false));
    }
    let added = find(pod).is_none();
    if added {
        let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
        let target = match target {
            Some(t) if containers.iter().any(|c| c.name == t) => t.to_string(),
            Some(t) => {
                let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
                return Err(CliError::NotFound {
                    message: format!("pod {name} has no container {t:?} (it has {})", names.join(", ")),
                });
            }
            None => containers.first().map(|c| c.name.clone()).unwrap_or_default(),
        };
        let patch = json!({"spec": {"ephemeralContainers": [ephemeral_container(&target, image, level)]}});
        api.patch_ephemeral_containers(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| api_error(e, &format!("adding the agent to pod {name}")))?;
    }
    let deadline = Instant::now() + wait;
    loop {
        let now = api.get(&name).await.map_err(|e| api_error(e, &format!("pod {name}")))?;
        if let Some(agent) = find(&now).filter(|a| a.running) {
            return Ok((agent, added));
        }
        if Instant::now() >= deadline {
            return Err(CliError::CannotConnect {
                addr: format!("pod/{name}"),
                source: format!("the agent container did not start within {}s{}", wait.as_secs(), waiting(&now)).into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn waiting(pod: &Pod) -> String {
    let statuses = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.as_ref());
    statuses
        .into_iter()
        .flatten()
        .filter(|s| s.name == AGENT_CONTAINER)
        .find_map(|s| {
            let w = s.state.as_ref()?.waiting.as_ref()?;
            Some(format!(" ({}: {})", w.reason.clone().unwrap_or_default(), w.message.clone().unwrap_or_default()))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_adds_only_what_it_needs() {
        let basic = ephemeral_container("app", "img", Level::Basic);
        assert_eq!(basic["capabilities"], Value::Null);
        assert_eq!(basic["securityContext"]["capabilities"]["add"], json!([]));
        assert_eq!(basic["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(basic["securityContext"].get("runAsUser"), None);
        let ebpf = ephemeral_container("app", "img", Level::Ebpf);
        assert_eq!(
            ebpf["securityContext"]["capabilities"]["add"],
            json!(["SYS_PTRACE", "DAC_READ_SEARCH", "BPF", "PERFMON"])
        );
        assert_eq!(ebpf["securityContext"]["runAsUser"], 0);
        assert_eq!(ebpf["targetContainerName"], "app");
        assert_eq!(ebpf["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    }
}
