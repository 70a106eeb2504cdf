//! The agent inside a pod: which container runs it, on which port, reached by a
//! port-forward through the API server (as `kubectl port-forward` does) carried
//! into a gRPC channel; and the pod's container names put on the answers.

use super::{Cluster, api_error};
use crate::error::CliError;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod};
use kube::Api;
use osl_proto::v1;
use osl_proto::v1::diagnostics_client::DiagnosticsClient;
use std::collections::HashMap;
use tonic::transport::{Channel, Endpoint};

/// The container name the chart and `attach` give the agent.
pub const AGENT_CONTAINER: &str = "osl-agent";
/// A pod annotation naming the agent's port, for sidecars named otherwise.
pub const PORT_ANNOTATION: &str = "osl.dev/agent-port";
pub const DEFAULT_PORT: u16 = 7450;
/// How long the first call through a new port-forward may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRef {
    pub container: String,
    pub port: u16,
    pub ephemeral: bool,
    pub running: bool,
}

/// The agent's container: named osl-agent (or osl-agent-…), among the
/// containers or the ephemeral containers; its port from the annotation.
pub fn find(pod: &Pod) -> Option<AgentRef> {
    let annotated =
        pod.metadata.annotations.as_ref().and_then(|a| a.get(PORT_ANNOTATION)).and_then(|p| p.trim().parse().ok());
    let spec = pod.spec.as_ref()?;
    let is_agent = |name: &str| name == AGENT_CONTAINER || name.starts_with("osl-agent-");
    let (container, ephemeral) = spec
        .containers
        .iter()
        .map(|c| (c.name.clone(), false))
        .chain(spec.ephemeral_containers.iter().flatten().map(|c| (c.name.clone(), true)))
        .find(|(n, _)| is_agent(n))?;
    let mut agent = AgentRef { container, port: annotated.unwrap_or(DEFAULT_PORT), ephemeral, running: false };
    agent.running =
        container_status(pod, &agent).is_some_and(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()));
    Some(agent)
}

/// The agent container's status in the pod (among the ephemeral containers' for an attached one).
pub fn container_status<'a>(pod: &'a Pod, agent: &AgentRef) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let statuses = if agent.ephemeral { &status.ephemeral_container_statuses } else { &status.container_statuses };
    statuses.iter().flatten().find(|s| s.name == agent.container)
}

/// A container's status as kubectl describe would sum it up:
/// `last state: Terminated (OOMKilled, exit 137) at 2026-…, state: Running since 2026-…, restarts: 3`.
pub fn describe_status(s: &ContainerStatus) -> String {
    let mut parts = Vec::new();
    if let Some(last) = s.last_state.as_ref().and_then(describe_state) {
        parts.push(format!("last state: {last}"));
    }
    if let Some(now) = s.state.as_ref().and_then(describe_state) {
        parts.push(format!("state: {now}"));
    }
    parts.push(format!("restarts: {}", s.restart_count));
    parts.join(", ")
}

fn describe_state(s: &ContainerState) -> Option<String> {
    if let Some(t) = &s.terminated {
        let mut why: Vec<String> = t.reason.iter().cloned().collect();
        why.push(format!("exit {}", t.exit_code));
        if let Some(signal) = t.signal.filter(|&n| n != 0) {
            why.push(format!("signal {signal}"));
        }
        let at = t.finished_at.as_ref().map(|at| format!(" at {}", at.0)).unwrap_or_default();
        return Some(format!("Terminated ({}){at}", why.join(", ")));
    }
    if let Some(w) = &s.waiting {
        return Some(w.reason.as_ref().map_or_else(|| "Waiting".into(), |r| format!("Waiting ({r})")));
    }
    let r = s.running.as_ref()?;
    Some(r.started_at.as_ref().map_or_else(|| "Running".into(), |at| format!("Running since {}", at.0)))
}

/// Whether the kubelet has seen what became of the agent since `before`: a
/// restart, a new last state, or a container no longer running.
pub fn status_moved(before: Option<&ContainerStatus>, now: &ContainerStatus) -> bool {
    let running = now.state.as_ref().is_some_and(|s| s.running.is_some());
    !running || before.is_none_or(|b| b.restart_count != now.restart_count || b.last_state != now.last_state)
}

pub fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// A gRPC client to the pod's agent through a port-forward, and the forward
/// (kept alive as long as the client is used).
pub async fn connect(
    cluster: &Cluster,
    pod: &Pod,
    agent: &AgentRef,
) -> Result<(DiagnosticsClient<Channel>, kube::api::Portforwarder), CliError> {
    let name = pod_name(pod);
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| cluster.namespace.clone());
    let addr = format!("pod/{name} port {}", agent.port);
    let mut forward = Api::<Pod>::namespaced(cluster.client.clone(), &ns)
        .portforward(&name, &[agent.port])
        .await
        .map_err(|e| api_error(e, &format!("port-forward to pod {name}")))?;
    let errors = forward.take_error(agent.port);
    let stream = forward.take_stream(agent.port).ok_or_else(|| CliError::CannotConnect {
        addr: addr.clone(),
        source: "the port-forward gave no stream".into(),
    })?;
    // One HTTP/2 connection over the one forwarded stream.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let stream = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        async move {
            stream
                .map(hyper_util::rt::TokioIo::new)
                .ok_or_else(|| std::io::Error::other("the port-forward's stream is used up"))
        }
    });
    let channel = Endpoint::from_static("http://osl-agent.pod")
        .connect_with_connector(connector)
        .await
        .map_err(|e| CliError::CannotConnect { addr: addr.clone(), source: Box::new(e) })?;
    let mut client = DiagnosticsClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    // A cheap call proves the agent answers; when nothing listens, the kubelet
    // says so on the port-forward's error channel.
    let probe = tokio::time::timeout(PROBE_TIMEOUT, client.list_reports(v1::ListReportsRequest {})).await;
    let failure = match probe {
        Ok(Ok(_)) => return Ok((client, forward)),
        Ok(Err(status)) if !matches!(status.code(), tonic::Code::Unknown | tonic::Code::Unavailable) => {
            return Err(CliError::from_status(status, &addr));
        }
        Ok(Err(status)) => status.message().to_string(),
        Err(_) => format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
    };
    let said = match errors {
        Some(e) => tokio::time::timeout(std::time::Duration::from_millis(500), e).await.ok().flatten(),
        None => None,
    };
    Err(CliError::CannotConnect { addr, source: said.unwrap_or(failure).into() })
}

/// Container id (64 hex, runtime prefix stripped) → container name, from the
/// pod's container, init and ephemeral container statuses.
pub fn container_names(pod: &Pod) -> HashMap<String, String> {
    let Some(status) = pod.status.as_ref() else { return HashMap::new() };
    [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses]
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|s| {
            let id = s.container_id.as_deref()?;
            let id = id.rsplit_once("://").map_or(id, |(_, id)| id);
            Some((id.to_ascii_lowercase(), s.name.clone()))
        })
        .collect()
}

fn name_for<'a>(names: &'a HashMap<String, String>, id: &str) -> Option<&'a String> {
    if id.is_empty() {
        return None;
    }
    names.iter().find(|(full, _)| full.starts_with(id) || id.starts_with(full.as_str())).map(|(_, n)| n)
}

/// A container's memory limit from the pod spec, in bytes (`resources.limits.memory`).
pub fn spec_memory_limits(pod: &Pod) -> HashMap<String, u64> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .filter_map(|c| {
            let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
            Some((c.name.clone(), quantity_bytes(&q.0)?))
        })
        .collect()
}

/// Kubernetes quantities as memory limits write them: `128Mi`, `1G`, `1e9`, `512`.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let scale: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value >= 0.0).then(|| (value * scale).round() as u64)
}

/// A finding when a container's cgroup limit is not what its pod spec says (an
/// in-place resize not yet applied, a runtime that rounds, or a pod-level limit
/// below the container's).
pub fn limit_mismatches(pod: &Pod, containers: &[v1::Container]) -> Vec<v1::Finding> {
    let spec = spec_memory_limits(pod);
    containers
        .iter()
        .filter_map(|c| {
            let want = *spec.get(&c.name)?;
            let have = c.memory.as_ref()?.limit_bytes?;
            (have != want).then(|| v1::Finding {
                id: "memory.limit_mismatch".into(),
                severity: v1::Severity::Warn as i32,
                subject: format!("container {}", c.name),
                container_id: c.id.clone(),
                message: format!(
                    "the pod spec limits memory to {want} bytes, the container's cgroup to {have}: the kernel enforces \
                     the cgroup's"
                ),
                evidence: [
                    ("spec_limit_bytes".to_string(), want.to_string()),
                    ("cgroup_limit_bytes".into(), have.to_string()),
                ]
                .into(),
                next_step: "check for a pending in-place resize (kubectl get pod -o yaml: status.resize) or a \
                            pod-level limit"
                    .into(),
                ..Default::default()
            })
        })
        .collect()
}

/// Puts the pod's container names on a diagnose answer's processes and containers.
pub fn name_containers(
    names: &HashMap<String, String>,
    processes: &mut [v1::Process],
    containers: &mut [v1::Container],
) {
    for p in processes {
        if let Some(n) = name_for(names, &p.container_id) {
            p.container_name = n.clone();
        }
    }
    for c in containers {
        if let Some(n) = name_for(names, &c.id) {
            c.name = n.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_agent_is_found_by_name_or_annotation_and_its_state_read() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "demo", "annotations": {"osl.dev/agent-port": "9000"}},
            "spec": {"containers": [{"name": "app"}, {"name": "osl-agent"}]},
            "status": {"containerStatuses": [
                {"name": "osl-agent", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}
            ]}
        }));
        assert_eq!(
            find(&p),
            Some(AgentRef { container: "osl-agent".into(), port: 9000, ephemeral: false, running: true })
        );
        let attached = pod(serde_json::json!({
            "metadata": {"name": "demo"},
            "spec": {"containers": [{"name": "app"}], "ephemeralContainers": [{"name": "osl-agent"}]},
            "status": {"ephemeralContainerStatuses": [
                {"name": "osl-agent", "ready": false, "restartCount": 0, "image": "x", "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]}
        }));
        assert_eq!(
            find(&attached),
            Some(AgentRef { container: "osl-agent".into(), port: 7450, ephemeral: true, running: false })
        );
        let none = pod(serde_json::json!({"metadata": {"name": "demo"}, "spec": {"containers": [{"name": "app"}]}}));
        assert_eq!(find(&none), None);
    }

    #[test]
    fn an_agent_containers_status_reads_as_kubectl_describe_sums_it_up() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "demo"},
            "spec": {"containers": [{"name": "app"}, {"name": "osl-agent"}]},
            "status": {"containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}},
                {"name": "osl-agent", "ready": true, "restartCount": 3, "image": "x", "imageID": "",
                 "state": {"running": {"startedAt": "2026-11-27T10:05:02Z"}},
                 "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-27T10:05:00Z"}}}
            ]}
        }));
        let agent = find(&p).unwrap();
        let status = container_status(&p, &agent).unwrap();
        assert_eq!(status.name, "osl-agent");
        assert_eq!(
            describe_status(status),
            "last state: Terminated (OOMKilled, exit 137) at 2026-11-27T10:05:00Z, state: Running since 2026-11-27T10:05:02Z, restarts: 3"
        );
        let crashing: ContainerStatus = serde_json::from_value(serde_json::json!({
            "name": "osl-agent", "ready": false, "restartCount": 5, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
            "lastState": {"terminated": {"exitCode": 143, "signal": 15}}
        }))
        .unwrap();
        assert_eq!(
            describe_status(&crashing),
            "last state: Terminated (exit 143, signal 15), state: Waiting (CrashLoopBackOff), restarts: 5"
        );
        let fresh: ContainerStatus = serde_json::from_value(serde_json::json!({
            "name": "osl-agent", "ready": false, "restartCount": 0, "image": "x", "imageID": ""
        }))
        .unwrap();
        assert_eq!(describe_status(&fresh), "restarts: 0");

        // What the kubelet says once it has seen the kill, against what it said before the call.
        let mut before = status.clone();
        assert!(!status_moved(Some(&before), status), "nothing new yet");
        before.restart_count = 2;
        assert!(status_moved(Some(&before), status), "a restart");
        assert!(status_moved(Some(status), &crashing), "not running");
    }

    #[test]
    fn quantities_and_limit_mismatches() {
        assert_eq!(quantity_bytes("128Mi"), Some(128 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1e9"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("512"), Some(512));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("12 parsecs"), None);
        let p = pod(serde_json::json!({
            "metadata": {"name": "demo"},
            "spec": {"containers": [
                {"name": "a", "resources": {"limits": {"memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"memory": "128Mi"}}}
            ]}
        }));
        let c = |name: &str, limit: u64| v1::Container {
            name: name.into(),
            memory: Some(v1::CgroupMemory { limit_bytes: Some(limit), ..Default::default() }),
            ..Default::default()
        };
        let f = limit_mismatches(&p, &[c("a", 64 << 20), c("b", 96 << 20)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "container b");
        assert_eq!(f[0].evidence["cgroup_limit_bytes"], (96u64 << 20).to_string());
    }

    #[test]
    fn container_ids_map_to_names_by_prefix() {
        let id = "3f2a9c1d0e4b".repeat(5) + "abcd";
        let p = pod(serde_json::json!({
            "metadata": {"name": "demo"},
            "status": {"containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "containerID": format!("containerd://{id}")}
            ]}
        }));
        let names = container_names(&p);
        let mut procs = vec![v1::Process { container_id: id.clone(), ..Default::default() }, v1::Process::default()];
        let mut containers = vec![v1::Container { id: id[..12].to_string(), ..Default::default() }];
        name_containers(&names, &mut procs, &mut containers);
        assert_eq!(procs[0].container_name, "app");
        assert_eq!(procs[1].container_name, "");
        assert_eq!(containers[0].name, "app");
    }
}
