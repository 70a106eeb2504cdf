//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get`
//! asks for (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) and
//! prints as it is. The columns and cells follow the apiserver's printers
//! (`pkg/printers/internalversion/printers.go`); the apiserver always fills
//! the wide (priority 1) columns and kubectl hides them without `-o wide`.

use serde_json::{Value, json};

use super::discovery::Resource;
use super::selector::format_label_selector;
use super::time::{human_duration, now, parse_rfc3339, since};

/// What each row's `object` holds (`?includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub(crate) fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn i(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_i64()
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn name(o: &Value) -> String {
    s(o, &["metadata", "name"]).unwrap_or_default().to_string()
}

fn age(o: &Value) -> String {
    since(s(o, &["metadata", "creationTimestamp"]))
}

/// CONTAINERS and IMAGES of a pod template.
fn containers_images(o: &Value) -> (String, String) {
    let cs = arr(o, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = cs.iter().filter_map(|c| s(c, &["name"])).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| s(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

fn columns_and_cells(res: &Resource, o: &Value) -> (Vec<Value>, Vec<Value>) {
    match res.kind {
        "Pod" => pod(o),
        "Deployment" => {
            let desired = i(o, &["spec", "replicas"]).unwrap_or(1);
            let ready = i(o, &["status", "readyReplicas"]).unwrap_or(0);
            let (c, im) = containers_images(o);
            (
                vec![
                    col("Name", "string", 0),
                    col("Ready", "string", 0),
                    col("Up-to-date", "integer", 0),
                    col("Available", "integer", 0),
                    col("Age", "string", 0),
                    col("Containers", "string", 1),
                    col("Images", "string", 1),
                    col("Selector", "string", 1),
                ],
                vec![
                    json!(name(o)),
                    json!(format!("{ready}/{desired}")),
                    json!(i(o, &["status", "updatedReplicas"]).unwrap_or(0)),
                    json!(i(o, &["status", "availableReplicas"]).unwrap_or(0)),
                    json!(age(o)),
                    json!(c),
                    json!(im),
                    json!(format_label_selector(o.pointer("/spec/selector"))),
                ],
            )
        }
        "StatefulSet" => {
            let desired = i(o, &["spec", "replicas"]).unwrap_or(1);
            let ready = i(o, &["status", "readyReplicas"]).unwrap_or(0);
            let (c, im) = containers_images(o);
            (
                vec![
                    col("Name", "string", 0),
                    col("Ready", "string", 0),
                    col("Age", "string", 0),
                    col("Containers", "string", 1),
                    col("Images", "string", 1),
                ],
                vec![json!(name(o)), json!(format!("{ready}/{desired}")), json!(age(o)), json!(c), json!(im)],
            )
        }
        "DaemonSet" => {
            let st = |k: &str| json!(i(o, &["status", k]).unwrap_or(0));
            let node_selector = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    let mut kv: Vec<String> =
                        m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
                    kv.sort();
                    kv.join(",")
                })
                .unwrap_or_else(|| "<none>".into());
            let (c, im) = containers_images(o);
            (
                vec![
                    col("Name", "string", 0),
                    col("Desired", "integer", 0),
                    col("Current", "integer", 0),
                    col("Ready", "integer", 0),
                    col("Up-to-date", "integer", 0),
                    col("Available", "integer", 0),
                    col("Node Selector", "string", 0),
                    col("Age", "string", 0),
                    col("Containers", "string", 1),
                    col("Images", "string", 1),
                    col("Selector", "string", 1),
                ],
                vec![
                    json!(name(o)),
                    st("desiredNumberScheduled"),
                    st("currentNumberScheduled"),
                    st("numberReady"),
                    st("updatedNumberScheduled"),
                    st("numberAvailable"),
                    json!(node_selector),
                    json!(age(o)),
                    json!(c),
                    json!(im),
                    json!(format_label_selector(o.pointer("/spec/selector"))),
                ],
            )
        }
        "ReplicaSet" => {
            let (c, im) = containers_images(o);
            (
                vec![
                    col("Name", "string", 0),
                    col("Desired", "integer", 0),
                    col("Current", "integer", 0),
                    col("Ready", "integer", 0),
                    col("Age", "string", 0),
                    col("Containers", "string", 1),
                    col("Images", "string", 1),
                    col("Selector", "string", 1),
                ],
                vec![
                    json!(name(o)),
                    json!(i(o, &["spec", "replicas"]).unwrap_or(1)),
                    json!(i(o, &["status", "replicas"]).unwrap_or(0)),
                    json!(i(o, &["status", "readyReplicas"]).unwrap_or(0)),
                    json!(age(o)),
                    json!(c),
                    json!(im),
                    json!(format_label_selector(o.pointer("/spec/selector"))),
                ],
            )
        }
        "Job" => job(o),
        "Event" => {
            let last = s(o, &["lastTimestamp"])
                .or_else(|| s(o, &["eventTime"]))
                .or_else(|| s(o, &["metadata", "creationTimestamp"]));
            let regarding = o.get("involvedObject").or_else(|| o.get("regarding")).unwrap_or(&Value::Null);
            let object = format!(
                "{}/{}",
                s(regarding, &["kind"]).unwrap_or_default().to_lowercase(),
                s(regarding, &["name"]).unwrap_or_default()
            );
            (
                vec![
                    col("Last Seen", "string", 0),
                    col("Type", "string", 0),
                    col("Reason", "string", 0),
                    col("Object", "string", 0),
                    col("Message", "string", 0),
                ],
                vec![
                    json!(since(last)),
                    json!(s(o, &["type"]).unwrap_or_default()),
                    json!(s(o, &["reason"]).unwrap_or_default()),
                    json!(object),
                    json!(s(o, &["message"]).or_else(|| s(o, &["note"])).unwrap_or_default()),
                ],
            )
        }
        "Namespace" => (
            vec![col("Name", "string", 0), col("Status", "string", 0), col("Age", "string", 0)],
            vec![json!(name(o)), json!(s(o, &["status", "phase"]).unwrap_or("Active")), json!(age(o))],
        ),
        _ => (vec![col("Name", "string", 0), col("Age", "string", 0)], vec![json!(name(o)), json!(age(o))]),
    }
}

fn restartable_init(c: Option<&Value>) -> bool {
    c.and_then(|c| s(c, &["restartPolicy"])) == Some("Always")
}

fn pod(p: &Value) -> (Vec<Value>, Vec<Value>) {
    let init_specs = arr(p, &["spec", "initContainers"]);
    let init_spec = |n: &str| init_specs.iter().find(|c| s(c, &["name"]) == Some(n));
    let total = arr(p, &["spec", "containers"]).len() + init_specs.iter().filter(|c| restartable_init(Some(c))).count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut restartable_restarts = 0;
    let mut last_restart: Option<i64> = None;
    let mut last_restartable_restart: Option<i64> = None;
    let phase = s(p, &["status", "phase"]).unwrap_or_default();
    let mut reason = s(p, &["status", "reason"]).filter(|r| !r.is_empty()).unwrap_or(phase).to_string();
    for c in arr(p, &["status", "conditions"]) {
        if s(c, &["type"]) == Some("PodScheduled") && s(c, &["reason"]) == Some("SchedulingGated") {
            reason = "SchedulingGated".into();
        }
    }
    let finished = |c: &Value| s(c, &["lastState", "terminated", "finishedAt"]).and_then(parse_rfc3339);
    let later = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };

    let init_statuses = arr(p, &["status", "initContainerStatuses"]);
    let mut initializing = false;
    for (idx, c) in init_statuses.iter().enumerate() {
        let cname = s(c, &["name"]).unwrap_or_default();
        restarts += i(c, &["restartCount"]).unwrap_or(0);
        last_restart = later(last_restart, finished(c));
        let restartable = restartable_init(init_spec(cname));
        if restartable {
            restartable_restarts += i(c, &["restartCount"]).unwrap_or(0);
            last_restartable_restart = later(last_restartable_restart, finished(c));
        }
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = s(c, &["state", "waiting", "reason"]).unwrap_or_default();
        if terminated.is_some_and(|t| i(t, &["exitCode"]) == Some(0)) {
            continue;
        } else if restartable && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        } else if let Some(t) = terminated {
            reason = match s(t, &["reason"]).filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match i(t, &["signal"]).filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", i(t, &["exitCode"]).unwrap_or(0)),
                },
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{idx}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = arr(p, &["status", "conditions"])
        .iter()
        .any(|c| s(c, &["type"]) == Some("Initialized") && s(c, &["status"]) == Some("True"));
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in arr(p, &["status", "containerStatuses"]).iter().rev() {
            restarts += i(c, &["restartCount"]).unwrap_or(0);
            last_restart = later(last_restart, finished(c));
            let waiting = s(c, &["state", "waiting", "reason"]).filter(|r| !r.is_empty());
            let terminated = c.pointer("/state/terminated");
            if let Some(w) = waiting {
                reason = w.to_string();
            } else if let Some(t) = terminated {
                reason = match s(t, &["reason"]).filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => match i(t, &["signal"]).filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!("ExitCode:{}", i(t, &["exitCode"]).unwrap_or(0)),
                    },
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true) && c.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(p, &["status", "conditions"])
                .iter()
                .any(|c| s(c, &["type"]) == Some("Ready") && s(c, &["status"]) == Some("True"));
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        if s(p, &["status", "reason"]) == Some("NodeLost") {
            reason = "Unknown".into();
        } else if !matches!(phase, "Succeeded" | "Failed") {
            reason = "Terminating".into();
        }
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now() - t)),
        _ => restarts.to_string(),
    };
    let ip = arr(p, &["status", "podIPs"])
        .first()
        .and_then(|ip| s(ip, &["ip"]))
        .or_else(|| s(p, &["status", "podIP"]))
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>");
    let node = s(p, &["spec", "nodeName"]).filter(|s| !s.is_empty()).unwrap_or("<none>");
    let nominated = s(p, &["status", "nominatedNodeName"]).filter(|s| !s.is_empty()).unwrap_or("<none>");
    let gates = arr(p, &["spec", "readinessGates"]);
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_gates = gates
            .iter()
            .filter(|g| {
                let t = s(g, &["conditionType"]);
                arr(p, &["status", "conditions"])
                    .iter()
                    .any(|c| s(c, &["type"]) == t && s(c, &["status"]) == Some("True"))
            })
            .count();
        format!("{true_gates}/{}", gates.len())
    };
    (
        vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        vec![
            json!(name(p)),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            json!(age(p)),
            json!(ip),
            json!(node),
            json!(nominated),
            json!(gates_cell),
        ],
    )
}

fn job(o: &Value) -> (Vec<Value>, Vec<Value>) {
    let cond = |t: &str| {
        arr(o, &["status", "conditions"])
            .iter()
            .any(|c| s(c, &["type"]) == Some(t) && s(c, &["status"]) == Some("True"))
    };
    let status = if cond("Complete") {
        "Complete"
    } else if cond("Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if cond("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if cond("FailureTarget") {
        "FailureTarget"
    } else if cond("Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    let succeeded = i(o, &["status", "succeeded"]).unwrap_or(0);
    let completions = match (i(o, &["spec", "completions"]), i(o, &["spec", "parallelism"])) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    };
    let start = s(o, &["status", "startTime"]).and_then(parse_rfc3339);
    let end = s(o, &["status", "completionTime"]).and_then(parse_rfc3339);
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(st), None) => human_duration(now() - st),
        (Some(st), Some(e)) => human_duration(e - st),
    };
    let (c, im) = containers_images(o);
    (
        vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Completions", "string", 0),
            col("Duration", "string", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        vec![
            json!(name(o)),
            json!(status),
            json!(completions),
            json!(duration),
            json!(age(o)),
            json!(c),
            json!(im),
            json!(format_label_selector(o.pointer("/spec/selector"))),
        ],
    )
}

fn row_object(o: &Value, include: Include) -> Option<Value> {
    match include {
        Include::None => None,
        Include::Object => Some(o.clone()),
        Include::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// The `Table` of some objects of one resource.
pub(crate) fn table(res: &Resource, objects: &[Value], resource_version: &str, include: Include) -> Value {
    let columns = columns_and_cells(res, &Value::Null).0;
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": columns_and_cells(res, o).1});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            if res.kind == "Pod" {
                match s(o, &["status", "phase"]) {
                    Some("Succeeded") => row["conditions"] = json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
                    Some("Failed") => row["conditions"] = json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
                    _ => {}
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::discovery::by_kind;

    fn cells(o: Value) -> Vec<Value> {
        columns_and_cells(by_kind("v1", "Pod").unwrap(), &o).1
    }

    #[test]
    fn pod_status_column_follows_the_printer() {
        let running = json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}, {"name": "d"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "d", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = cells(running);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3");
        let init = json!({"metadata": {"name": "a"}, "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "restartCount": 0, "state": {"running": {}}}]}});
        assert_eq!(cells(init)[2], "Init:0/1");
        let oom = json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}});
        assert_eq!(cells(oom)[2], "OOMKilled");
    }
}
