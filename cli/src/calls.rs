//! What every command shares with the workload fan-out: reaching a pod's agent
//! (attaching one first if asked), the requests it is sent, and its answer put in
//! the pod's words. `app` dispatches, `fanout` asks many pods; both call these.

use crate::args::{DiagnoseArgs, FailOn, Level, Selection};
use crate::backend::Backend;
use crate::error::{CliError, code};
use crate::k8s::{Cluster, agent, attach};
use k8s_openapi::api::core::v1::Pod;
use osl_proto::v1;
use std::collections::HashMap;

/// An agent that went away mid-call, with what its pod now says of its
/// container (`last state: Terminated (OOMKilled, exit 137) at …, restarts: 3`).
/// The kubelet reports a dead container within a second or two, so the pod is
/// read up to three times, a second apart, until its status shows a change
/// from `pod` (the pod as it was when the call started).
pub async fn with_agent_status<T>(cluster: &Cluster, pod: &Pod, result: Result<T, CliError>) -> Result<T, CliError> {
    let Err(CliError::AgentGone { addr, container_status: None, source }) = result else { return result };
    let mut said = None;
    if let Some(found) = agent::find(pod) {
        let before = agent::container_status(pod, &found);
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            let Some(now) = refreshed(cluster, pod).await else { continue };
            let Some(status) = agent::container_status(&now, &found) else { continue };
            said = Some(agent::describe_status(status));
            if agent::status_moved(before, status) {
                break;
            }
        }
    }
    Err(CliError::AgentGone { addr, container_status: said, source })
}

/// The pod's agent (attached first when `attach` says so), its container names,
/// and the pod as it is now.
pub async fn pod_backend(
    cluster: &Cluster,
    pod: &Pod,
    attach: Option<Level>,
    timeout: std::time::Duration,
) -> Result<(Backend, HashMap<String, String>, Pod), CliError> {
    let name = agent::pod_name(pod);
    let found = match (agent::find(pod), attach) {
        (Some(a), _) if a.running => a,
        (_, Some(level)) => {
            attach::attach(cluster, pod, None, crate::args::DEFAULT_IMAGE, level, std::time::Duration::from_secs(60))
                .await?
                .0
        }
        (Some(a), None) => {
            return Err(CliError::NotFound {
                message: format!("the agent container {} in pod {name} is not running", a.container),
            });
        }
        (None, None) => {
            return Err(CliError::NotFound {
                message: format!(
                    "no osl agent in pod {name} (no container named {} and no {} annotation): \
                     add one without a restart with `kubectl osl attach pod/{name}`, or use diagnose --attach",
                    agent::AGENT_CONTAINER,
                    agent::PORT_ANNOTATION
                ),
            });
        }
    };
    reach(cluster, pod, &found, timeout).await
}

/// Connects through a port-forward, retrying while a just-started agent comes up.
pub async fn reach(
    cluster: &Cluster,
    pod: &Pod,
    found: &agent::AgentRef,
    within: std::time::Duration,
) -> Result<(Backend, HashMap<String, String>, Pod), CliError> {
    let deadline = std::time::Instant::now() + within;
    let pod = refreshed(cluster, pod).await.unwrap_or_else(|| pod.clone());
    loop {
        match agent::connect(cluster, &pod, found).await {
            Ok((client, forward)) => {
                let addr = format!("pod/{} (container {})", agent::pod_name(&pod), found.container);
                let names = agent::container_names(&pod);
                return Ok((Backend::forwarded(addr, client, forward), names, pod));
            }
            Err(CliError::CannotConnect { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pod as it is now (an attach adds statuses).
async fn refreshed(cluster: &Cluster, pod: &Pod) -> Option<Pod> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| cluster.namespace.clone());
    kube::Api::<Pod>::namespaced(cluster.client.clone(), &ns).get(&agent::pod_name(pod)).await.ok()
}

/// A pod's answer: container names on processes and containers, and a finding
/// for each container whose cgroup limit is not the pod spec's.
pub fn in_pod(resp: &mut v1::DiagnoseResponse, names: &HashMap<String, String>, pod: Option<&Pod>) {
    agent::name_containers(names, &mut resp.processes, &mut resp.containers);
    if let Some(pod) = pod {
        resp.findings.extend(agent::limit_mismatches(pod, &resp.containers));
        resp.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    }
}

pub fn diagnose_request(args: &DiagnoseArgs, names: &HashMap<String, String>) -> v1::DiagnoseRequest {
    v1::DiagnoseRequest {
        filter: Some(filter(&args.selection, names)),
        blocked_sample_msec: u32::try_from(args.blocked.as_millis()).unwrap_or(u32::MAX),
    }
}

/// The request's filter; a container given by name (in a pod) becomes its id.
pub fn filter(s: &Selection, names: &HashMap<String, String>) -> v1::Filter {
    v1::Filter { pids: s.pids.clone(), container_id: container_id(s.container.as_ref(), names) }
}

/// A container named as in the pod spec, or by (a prefix of) its id.
pub fn container_id(container: Option<&String>, names: &HashMap<String, String>) -> String {
    let Some(c) = container else { return String::new() };
    names.iter().find(|(_, name)| *name == c).map_or_else(|| c.clone(), |(id, _)| id.clone())
}

/// 1 when a finding is at or above `--fail-on`, else 0.
pub fn exit_for(args: &DiagnoseArgs, findings: &[v1::Finding]) -> u8 {
    let Some(fail_on) = args.fail_on else { return code::OK };
    let threshold = match fail_on {
        FailOn::Warn => v1::Severity::Warn,
        FailOn::Critical => v1::Severity::Critical,
    } as i32;
    if findings.iter().any(|f| f.severity >= threshold) { code::FINDINGS } else { code::OK }
}
