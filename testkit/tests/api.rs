//! The API fixture server checked against the real `kubectl` and kube-rs,
//! so it cannot drift from the protocol unnoticed (DESIGN.md, test strategy 6).
//! The kubectl tests skip with a printed reason where no `kubectl` is installed.

#![allow(clippy::unwrap_used)] // test code: an unwrap that fails is a test that fails

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use osl_testkit::api::{ApiServer, Connector, TOKEN, timestamp_ago};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONTAINER_ID: &str = "containerd://4f9a2c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";

/// A running pod as the apiserver returns it, created 10 minutes ago.
fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "test",
            "uid": "6f1d3b52-0c43-4e3b-9d7e-2f4a0e9b8c11",
            "resourceVersion": "4711",
            "creationTimestamp": timestamp_ago(630),
            "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "demo-7d9f8b6c5d",
                "uid": "0b5c2d9e-1f3a-4b6c-8d7e-9f0a1b2c3d4e", "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "containers": [{"name": "app", "image": "registry.example/demo:1.0", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}],
            "nodeName": "node-1",
            "restartPolicy": "Always",
        },
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "podIPs": [{"ip": "10.1.2.3"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{
                "name": "app",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": timestamp_ago(620)}},
                "lastState": {},
                "image": "registry.example/demo:1.0",
                "imageID": "registry.example/demo@sha256:9b2f0c1d",
                "containerID": CONTAINER_ID,
            }],
        },
    })
}

/// A pod whose container crash-loops: 3 restarts, the last one 5 hours ago.
fn crashing_pod() -> Value {
    let mut p = pod("crash", json!({"app": "crash"}));
    p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    p["status"]["containerStatuses"][0] = json!({
        "name": "app",
        "ready": false,
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": timestamp_ago(5 * 3600)}},
        "image": "registry.example/demo:1.0",
        "imageID": "registry.example/demo@sha256:9b2f0c1d",
        "containerID": CONTAINER_ID,
    });
    p
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": "test", "creationTimestamp": timestamp_ago(2 * 86_400), "generation": 1},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "demo"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]},
            "template": {
                "metadata": {"labels": {"app": "demo", "tier": "web"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/demo:1.0"}]},
            },
        },
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2, "observedGeneration": 1},
    })
}

fn fixture() -> ApiServer {
    let server = ApiServer::start();
    server.add(pod("demo", json!({"app": "demo", "tier": "web"})));
    server.add(pod("demo-2", json!({"app": "demo", "tier": "api"})));
    server.add(pod("other", json!({"app": "other"})));
    server.add(crashing_pod());
    let mut elsewhere = pod("demo", json!({"app": "demo"}));
    elsewhere["metadata"]["namespace"] = json!("prod");
    server.add(elsewhere);
    server.add(deployment());
    server
}

// ---------------------------------------------------------------------------
// kubectl

struct Kubectl {
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// None (with the reason printed) where kubectl is not installed.
    fn new(server: &ApiServer, tag: &str) -> Option<Kubectl> {
        if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
            eprintln!("skipped: no kubectl on PATH");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("osl-api-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = server.write_kubeconfig(&dir, "test");
        Some(Kubectl { dir, kubeconfig })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(self.dir.join("cache")).args(args);
        c.env("HOME", &self.dir).env_remove("KUBECONFIG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The table kubectl printed, as whitespace-separated words per line.
fn words(table: &str) -> Vec<Vec<String>> {
    table.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[test]
fn kubectl_get_pod_prints_the_servers_table() {
    let server = fixture();
    let Some(k) = Kubectl::new(&server, "get-pod") else { return };
    let out = k.ok(&["get", "pod", "demo", "-n", "test"]);
    assert_eq!(
        words(&out),
        vec![vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"], vec!["demo", "1/1", "Running", "0", "10m"]],
        "{out}"
    );

    let out = k.ok(&["get", "pod", "crash", "-n", "test"]);
    assert_eq!(words(&out)[1], vec!["crash", "0/1", "CrashLoopBackOff", "3", "(5h", "ago)", "10m"], "{out}");

    let out = k.ok(&["get", "pod", "demo", "-n", "test", "-o", "wide"]);
    assert_eq!(
        words(&out)[1],
        vec!["demo", "1/1", "Running", "0", "10m", "10.1.2.3", "node-1", "<none>", "<none>"],
        "{out}"
    );

    // The request kubectl made for it, as recorded.
    let get = server.requests().into_iter().rfind(|r| r.path_only() == "/api/v1/namespaces/test/pods/demo").unwrap();
    assert_eq!(get.method, "GET");
    assert!(get.accept.as_deref().unwrap().starts_with("application/json;as=Table;v=v1;g=meta.k8s.io"), "{get:?}");
}

#[test]
fn kubectl_get_pod_json_round_trips_the_fixture() {
    let server = fixture();
    let Some(k) = Kubectl::new(&server, "get-json") else { return };
    let printed: Value = serde_json::from_str(&k.ok(&["get", "pod", "demo", "-n", "test", "-o", "json"])).unwrap();
    let mut want = pod("demo", json!({"app": "demo", "tier": "web"}));
    // The timestamps in the fixture are computed: take the stored ones.
    let stored = server.get("pods", "test", "demo").unwrap();
    want["metadata"]["creationTimestamp"] = stored["metadata"]["creationTimestamp"].clone();
    want["status"]["containerStatuses"][0]["state"] = stored["status"]["containerStatuses"][0]["state"].clone();
    assert_eq!(printed, want);
    assert_eq!(printed, stored);
}

#[test]
fn kubectl_lists_by_label_and_across_namespaces() {
    let server = fixture();
    let Some(k) = Kubectl::new(&server, "list") else { return };
    let names = |out: String| words(&out).into_iter().skip(1).map(|w| w[0].clone()).collect::<Vec<_>>();
    assert_eq!(names(k.ok(&["get", "pods", "-n", "test", "-l", "app=demo"])), ["demo", "demo-2"]);
    assert_eq!(names(k.ok(&["get", "pods", "-n", "test", "-l", "app in (demo,other),tier!=api"])), ["demo", "other"]);
    assert_eq!(names(k.ok(&["get", "pods", "-n", "test", "-l", "!tier"])), ["crash", "other"]);
    assert_eq!(names(k.ok(&["get", "pods", "-n", "test", "--field-selector", "status.phase=Running"])).len(), 4);
    assert_eq!(names(k.ok(&["get", "pods"])), ["crash", "demo", "demo-2", "other"], "the context's namespace");

    let all = k.ok(&["get", "pods", "-A", "-l", "app=demo"]);
    let rows: Vec<Vec<String>> = words(&all).into_iter().map(|w| w[..2].to_vec()).collect();
    assert_eq!(
        rows,
        vec![vec!["NAMESPACE", "NAME"], vec!["prod", "demo"], vec!["test", "demo"], vec!["test", "demo-2"]],
        "{all}"
    );
    let list = server.requests().into_iter().rfind(|r| r.path_only() == "/api/v1/pods").unwrap();
    assert_eq!(list.query("labelSelector").as_deref(), Some("app=demo"));

    let none = k.run(&["get", "pods", "-n", "test", "-l", "app=nothing"]);
    assert!(none.status.success());
    assert_eq!(String::from_utf8_lossy(&none.stderr).trim(), "No resources found in test namespace.");
}

#[test]
fn kubectl_get_deployment() {
    let server = fixture();
    let Some(k) = Kubectl::new(&server, "deploy") else { return };
    let out = k.ok(&["get", "deployment", "demo", "-n", "test"]);
    assert_eq!(
        words(&out),
        vec![vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], vec!["demo", "2/3", "3", "2", "2d"]],
        "{out}"
    );
    let wide = k.ok(&["get", "deploy/demo", "-n", "test", "-o", "wide"]);
    assert!(wide.contains("app=demo,tier in (api,web)"), "{wide}");
    let printed: Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "demo", "-n", "test", "-o", "json"])).unwrap();
    assert_eq!(printed["spec"]["selector"], deployment()["spec"]["selector"]);
}

#[test]
fn kubectl_reports_not_found_and_forbidden_like_the_apiserver() {
    let server = fixture();
    let Some(k) = Kubectl::new(&server, "errors") else { return };
    let out = k.run(&["get", "pod", "nope", "-n", "test"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "Error from server (NotFound): pods \"nope\" not found");
    let out = k.run(&["get", "deployment", "nope", "-n", "test"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );

    server.forbid("get", "pods");
    let out = k.run(&["get", "pod", "demo", "-n", "test"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (Forbidden): pods \"demo\" is forbidden: User \"tester\" cannot get resource \"pods\" in API group \"\" in the namespace \"test\""
    );
}

// ---------------------------------------------------------------------------
// kube-rs

async fn client(server: &ApiServer) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig("test")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A local TCP echo server standing for the agent's port; the ports the
/// connector was asked for are kept.
fn echo_connector() -> (Connector, Arc<Mutex<Vec<u16>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let asked = Arc::new(Mutex::new(Vec::new()));
    let a = asked.clone();
    let connector: Connector = Arc::new(move |port| {
        a.lock().unwrap().push(port);
        TcpStream::connect(addr)
    });
    (connector, asked)
}

#[tokio::test]
async fn kube_portforward_reaches_the_pods_port() {
    let server = fixture();
    let (connector, asked) = echo_connector();
    server.set_connector("test", "demo", connector);
    let pods: Api<Pod> = Api::namespaced(client(&server).await, "test");

    let mut pf = pods.portforward("demo", &[7450]).await.unwrap();
    let mut stream = pf.take_stream(7450).unwrap();
    for msg in [&b"hello osl"[..], &[0u8, 1, 2, 255][..], &vec![7u8; 100_000][..]] {
        stream.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, msg);
    }
    assert_eq!(*asked.lock().unwrap(), [7450]);
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), pf.join()).await.unwrap().unwrap();

    let upgrade = server.requests().into_iter().find(|r| r.path_only().ends_with("/portforward")).unwrap();
    // kube-rs builds the query on a base that already ends in `?`.
    assert_eq!(upgrade.path, "/api/v1/namespaces/test/pods/demo/portforward?&ports=7450");
    assert_eq!(upgrade.query("ports").as_deref(), Some("7450"));
    assert_eq!(upgrade.method, "GET");
    assert_eq!(upgrade.status, 101);
    assert_eq!(upgrade.header("sec-websocket-protocol"), Some("v5.channel.k8s.io, v4.channel.k8s.io"));
    assert_eq!(upgrade.authorization, Some(format!("Bearer {TOKEN}")));
}

#[tokio::test]
async fn kube_portforward_ends_when_the_pod_closes_and_forwards_several_ports() {
    let server = fixture();
    // Port 7450 answers "bye" and closes; 8080 echoes.
    let bye = TcpListener::bind("127.0.0.1:0").unwrap();
    let bye_addr = bye.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in bye.incoming() {
            let _ = c.and_then(|mut c| c.write_all(b"bye"));
        }
    });
    let (echo, asked) = echo_connector();
    server.set_connector(
        "test",
        "demo",
        Arc::new(move |port| if port == 7450 { TcpStream::connect(bye_addr) } else { echo(port) }),
    );
    let pods: Api<Pod> = Api::namespaced(client(&server).await, "test");

    // One port: the pod closing it ends the stream (the server closes the WebSocket).
    let mut pf = pods.portforward("demo", &[7450]).await.unwrap();
    let mut closing = pf.take_stream(7450).unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), closing.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"bye");
    drop(closing);
    // kube-rs 5 then tries to send its own close and reports that, as it
    // does with a real kubelet: a caller must not take this for a failure.
    let joined = tokio::time::timeout(Duration::from_secs(10), pf.join()).await.unwrap();
    assert!(format!("{joined:?}").contains("SendAfterClosing"), "{joined:?}");

    // Two ports on one WebSocket: channels 0/1 and 2/3. v4 has no per-port
    // close, so the connection lives until every port is done.
    let mut pf = pods.portforward("demo", &[7450, 8080]).await.unwrap();
    let mut echoed = pf.take_stream(8080).unwrap();
    echoed.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), echoed.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back, b"ping");
    let mut closing = pf.take_stream(7450).unwrap();
    let mut got = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(10), closing.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"bye");
    drop((echoed, closing));
    tokio::time::timeout(Duration::from_secs(10), pf.join()).await.unwrap().unwrap();
    assert_eq!(*asked.lock().unwrap(), [8080]);
}

#[tokio::test]
async fn kube_portforward_to_a_closed_port_fails_with_the_kubelets_error() {
    let server = fixture();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    server.set_connector("test", "demo", Arc::new(move |_| TcpStream::connect(closed)));
    let pods: Api<Pod> = Api::namespaced(client(&server).await, "test");

    let mut pf = pods.portforward("demo", &[7450]).await.unwrap();
    let error = pf.take_error(7450).unwrap();
    let mut stream = pf.take_stream(7450).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), error).await.unwrap().expect("an error message");
    assert!(message.starts_with("error forwarding port 7450 to pod "), "{message}");
    assert!(message.contains("dial tcp4 127.0.0.1:7450: connect: connection refused"), "{message}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(n, 0, "the port's stream ends");

    // No connector at all: nothing listens in the pod.
    let mut pf = pods.portforward("crash", &[7450]).await.unwrap();
    let message = pf.take_error(7450).unwrap().await.expect("an error message");
    assert!(message.contains("connection refused"), "{message}");
}

#[tokio::test]
async fn kube_portforward_forbidden_and_missing_pod_are_api_errors() {
    let server = fixture();
    let pods: Api<Pod> = Api::namespaced(client(&server).await, "test");
    match pods.portforward("nope", &[7450]).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.message, "pods \"nope\" not found");
        }
        other => panic!("expected a 404, got {:?}", other.map(|_| ())),
    }
    server.forbid("create", "pods/portforward");
    match pods.portforward("demo", &[7450]).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.reason, "Forbidden");
            assert_eq!(
                s.message,
                "pods \"demo\" is forbidden: User \"tester\" cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"test\""
            );
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn kube_patch_ephemeral_containers_is_recorded_applied_and_hooked() {
    let server = fixture();
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let h = hooked.clone();
    server.on_ephemeral(move |ns, pod, c| h.lock().unwrap().push((ns.to_string(), pod.to_string(), c.clone())));
    let pods: Api<Pod> = Api::namespaced(client(&server).await, "test");

    let agent = json!({"name": "osl-agent", "image": "registry.example/osl-agent:0.1", "targetContainerName": "app",
        "command": ["osl-agent", "--listen", "127.0.0.1:7450"]});
    let patch = json!({"spec": {"ephemeralContainers": [agent]}});
    let pod = pods
        .patch_ephemeral_containers("demo", &PatchParams::default(), &Patch::Strategic(patch.clone()))
        .await
        .unwrap();

    let req = server.requests().into_iter().find(|r| r.path_only().ends_with("/ephemeralcontainers")).unwrap();
    assert_eq!(req.method, "PATCH");
    assert_eq!(req.path, "/api/v1/namespaces/test/pods/demo/ephemeralcontainers?");
    assert_eq!(req.content_type.as_deref(), Some("application/strategic-merge-patch+json"));
    assert_eq!(req.body, Some(patch.clone()));
    assert_eq!(req.status, 200);

    assert_eq!(*hooked.lock().unwrap(), vec![("test".to_string(), "demo".to_string(), agent.clone())]);
    let spec = pod.spec.unwrap();
    let eph = spec.ephemeral_containers.unwrap();
    assert_eq!(eph.len(), 1);
    assert_eq!(eph[0].name, "osl-agent");
    assert_eq!(eph[0].target_container_name.as_deref(), Some("app"));
    let status = &pod.status.unwrap().ephemeral_container_statuses.unwrap()[0];
    assert_eq!(status.name, "osl-agent");
    assert!(status.state.as_ref().unwrap().running.is_some());
    let id = status.container_id.as_deref().unwrap();
    assert!(
        id.starts_with("containerd://") && id.len() == 13 + 64 && id[13..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );

    // Again: the container exists, nothing is added, the hook is not called.
    pods.patch_ephemeral_containers("demo", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    assert_eq!(hooked.lock().unwrap().len(), 1);
    let stored = pods.get("demo").await.unwrap();
    assert_eq!(stored.spec.unwrap().ephemeral_containers.unwrap().len(), 1);

    // A JSON merge patch and a PUT of the whole pod add theirs.
    let debug = json!({"name": "debugger", "image": "busybox"});
    let merge = json!({"spec": {"ephemeralContainers": [agent, debug]}});
    pods.patch_ephemeral_containers("demo", &PatchParams::default(), &Patch::Merge(merge)).await.unwrap();
    let mut whole = pods.get_ephemeral_containers("demo").await.unwrap();
    whole
        .spec
        .as_mut()
        .unwrap()
        .ephemeral_containers
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"name": "third", "image": "x"})).unwrap());
    let replaced = pods.replace_ephemeral_containers("demo", &PostParams::default(), &whole).await.unwrap();
    let names: Vec<String> = replaced.spec.unwrap().ephemeral_containers.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["osl-agent", "debugger", "third"]);
    assert_eq!(replaced.status.unwrap().ephemeral_container_statuses.unwrap().len(), 3);
    let put = server.requests().into_iter().rfind(|r| r.path_only().ends_with("/ephemeralcontainers")).unwrap();
    assert_eq!((put.method.as_str(), put.content_type.as_deref()), ("PUT", Some("application/json")));
    assert_eq!(hooked.lock().unwrap().len(), 3);

    server.forbid("patch", "pods/ephemeralcontainers");
    let err = pods
        .patch_ephemeral_containers("demo", &PatchParams::default(), &Patch::Strategic(json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403 && s.message.contains("cannot patch resource \"pods/ephemeralcontainers\"")),
        "{err}"
    );
}

#[tokio::test]
async fn kube_lists_with_set_based_and_field_selectors() {
    let server = fixture();
    let c = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "test");
    let names =
        |l: kube::core::ObjectList<Pod>| l.items.into_iter().map(|p| p.metadata.name.unwrap()).collect::<Vec<_>>();
    let sel = ListParams::default().labels("app=demo,tier in (api,web),!canary");
    assert_eq!(names(pods.list(&sel).await.unwrap()), ["demo", "demo-2"]);
    let list = pods.list(&ListParams::default().fields("status.phase=Running")).await.unwrap();
    assert!(list.metadata.resource_version.is_some());
    assert_eq!(list.items.len(), 4);
    assert_eq!(
        names(Api::<Pod>::all(c.clone()).list(&ListParams::default().labels("app=demo")).await.unwrap()),
        ["demo", "demo", "demo-2"]
    );
    match pods.get("nope").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), (404, "NotFound", "pods \"nope\" not found"))
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    let deploy: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(c, "test");
    let d = deploy.get("demo").await.unwrap();
    assert_eq!(d.spec.unwrap().selector.match_labels.unwrap()["app"], "demo");
}

#[tokio::test]
async fn kube_posts_events() {
    let server = fixture();
    let events: Api<Event> = Api::namespaced(client(&server).await, "test");
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "demo."},
        "involvedObject": {"kind": "Pod", "namespace": "test", "name": "demo", "apiVersion": "v1"},
        "reason": "AgentAttached", "message": "osl agent attached", "type": "Normal",
        "source": {"component": "kubectl-osl"},
    }))
    .unwrap();
    let created = events.create(&PostParams::default(), &event).await.unwrap();
    let name = created.metadata.name.unwrap();
    assert!(name.starts_with("demo.") && name.len() > 5, "{name}");
    let post = server.requests().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!((post.path_only(), post.status), ("/api/v1/namespaces/test/events", 201));
    assert_eq!(post.body.as_ref().unwrap()["reason"], "AgentAttached");
    let stored = server.list("events", Some("test"));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["metadata"]["name"], name.as_str());
}

// ---------------------------------------------------------------------------
// kubectl port-forward: SPDY, tunneled in a WebSocket or after an upgrade

struct PortForward {
    child: std::process::Child,
    local: u16,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl PortForward {
    fn start(k: &Kubectl, websockets: bool) -> PortForward {
        use std::io::BufRead;
        let mut cmd = k.command(&["port-forward", "-n", "test", "pod/demo", ":7450"]);
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", if websockets { "true" } else { "false" });
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (etx, stderr) = std::sync::mpsc::channel();
        let err = std::io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("kubectl port-forward says where it forwards from");
        // "Forwarding from 127.0.0.1:40123 -> 7450"
        let local =
            line.split(['-', ':']).nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("{line}"));
        PortForward { child, local, stderr }
    }

    fn echo(&self, msg: &[u8]) -> Vec<u8> {
        let mut c = TcpStream::connect(("127.0.0.1", self.local)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        if let Err(e) = c.read_exact(&mut back) {
            std::thread::sleep(Duration::from_secs(1));
            let stderr: Vec<String> = self.stderr.try_iter().collect();
            panic!("{e}; kubectl said:\n{}", stderr.join("\n"));
        }
        back
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl_port_forward(websockets: bool) {
    let server = fixture();
    let (connector, asked) = echo_connector();
    server.set_connector("test", "demo", connector);
    let Some(k) = Kubectl::new(&server, if websockets { "pf-ws" } else { "pf-spdy" }) else { return };
    let pf = PortForward::start(&k, websockets);
    assert_eq!(pf.echo(b"hello through kubectl"), b"hello through kubectl");
    let big = vec![42u8; 300_000];
    assert_eq!(pf.echo(&big), big);
    assert_eq!(*asked.lock().unwrap(), [7450, 7450]);

    let upgrade = server.requests().into_iter().find(|r| r.path_only().ends_with("/portforward")).unwrap();
    assert_eq!(upgrade.status, 101);
    if websockets {
        assert_eq!(upgrade.method, "GET");
        assert_eq!(upgrade.header("sec-websocket-protocol"), Some("SPDY/3.1+portforward.k8s.io"));
    } else {
        assert_eq!(upgrade.method, "POST");
        assert_eq!(upgrade.header("upgrade"), Some("SPDY/3.1"));
        assert_eq!(upgrade.header("x-stream-protocol-version"), Some("portforward.k8s.io"));
    }
    assert_eq!(upgrade.query("ports"), None, "kubectl names the port in each stream's headers");
}

#[test]
fn kubectl_port_forward_over_websocket_tunneled_spdy() {
    kubectl_port_forward(true);
}

#[test]
fn kubectl_port_forward_over_spdy_upgrade() {
    kubectl_port_forward(false);
}

#[test]
fn kubectl_port_forward_to_a_closed_port_reports_the_kubelets_error() {
    let server = fixture();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    server.set_connector("test", "demo", Arc::new(move |_| TcpStream::connect(closed)));
    let Some(k) = Kubectl::new(&server, "pf-refused") else { return };
    let pf = PortForward::start(&k, true);
    let mut c = TcpStream::connect(("127.0.0.1", pf.local)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(b"x");
    let mut buf = [0u8; 16];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "the local connection ends");
    let mut lines = Vec::new();
    while let Ok(l) = pf.stderr.recv_timeout(Duration::from_secs(10)) {
        let done = l.contains("connection refused");
        lines.push(l);
        if done {
            break;
        }
    }
    let text = lines.join("\n");
    assert!(text.contains("an error occurred forwarding"), "{text}");
    assert!(text.contains("error forwarding port 7450 to pod"), "{text}");
    assert!(text.contains("dial tcp4 127.0.0.1:7450: connect: connection refused"), "{text}");
}

#[test]
fn the_server_is_shared_across_threads_and_stops_on_drop() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ApiServer>();
    let server = ApiServer::start();
    let addr = server.url().trim_start_matches("http://").to_string();
    assert!(TcpStream::connect(&addr).is_ok());
    drop(server);
    assert!(TcpStream::connect(&addr).is_err(), "the port is closed once the server is dropped");
}
