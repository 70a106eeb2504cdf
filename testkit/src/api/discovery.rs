//! The resources the fixture serves and the legacy discovery documents
//! (`/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`) that describe them.
//! kubectl asks for aggregated discovery first and falls back to these when
//! the answer is plain `application/json`.

use serde_json::{Value, json};

/// One served resource.
#[derive(Debug)]
pub(crate) struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    /// Subresources: (name, kind, verbs).
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `pods`, `deployments.apps`: how the apiserver names the resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub(crate) static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short: &["po"],
        subresources: &[
            ("ephemeralcontainers", "Pod", &["get", "patch", "update"]),
            ("log", "Pod", &["get"]),
            ("portforward", "PodPortForwardOptions", &["create", "get"]),
            ("status", "Pod", &["get", "patch", "update"]),
        ],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short: &["ev"],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short: &["ns"],
        subresources: &[("status", "Namespace", &["get", "patch", "update"])],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short: &["no"],
        subresources: &[],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short: &["deploy"],
        subresources: &[
            ("scale", "Scale", &["get", "patch", "update"]),
            ("status", "Deployment", &["get", "patch", "update"]),
        ],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        namespaced: true,
        short: &["sts"],
        subresources: &[
            ("scale", "Scale", &["get", "patch", "update"]),
            ("status", "StatefulSet", &["get", "patch", "update"]),
        ],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short: &["ds"],
        subresources: &[("status", "DaemonSet", &["get", "patch", "update"])],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short: &["rs"],
        subresources: &[
            ("scale", "Scale", &["get", "patch", "update"]),
            ("status", "ReplicaSet", &["get", "patch", "update"]),
        ],
    },
    Resource {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        singular: "job",
        namespaced: true,
        short: &[],
        subresources: &[("status", "Job", &["get", "patch", "update"])],
    },
    Resource {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        plural: "cronjobs",
        singular: "cronjob",
        namespaced: true,
        short: &["cj"],
        subresources: &[("status", "CronJob", &["get", "patch", "update"])],
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short: &["ev"],
        subresources: &[],
    },
];

/// The groups after the core one, in the order `/apis` lists them.
const GROUPS: &[&str] = &["apps", "events.k8s.io", "batch"];

pub(crate) fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource an object's `apiVersion` and `kind` belong to.
pub(crate) fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.api_version() == api_version && r.kind == kind)
}

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "emulationMajor": "1",
        "emulationMinor": "32",
        "gitVersion": "v1.32.4",
        "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
        "gitTreeState": "clean",
        "buildDate": "2025-04-22T16:02:27Z",
        "goVersion": "go1.23.6",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_json(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

pub(crate) fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": GROUPS.iter().map(|g| group_json(g)).collect::<Vec<_>>()})
}

pub(crate) fn api_group(name: &str) -> Option<Value> {
    GROUPS.contains(&name).then(|| {
        let mut g = group_json(name);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ALL_VERBS,
        });
        if !r.short.is_empty() {
            entry["shortNames"] = json!(r.short);
        }
        if matches!(r.kind, "Pod" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "CronJob") {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        for (sub, kind, verbs) in r.subresources {
            let mut e = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if *kind == "Scale" {
                e["group"] = json!("autoscaling");
                e["version"] = json!("v1");
            }
            resources.push(e);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}
