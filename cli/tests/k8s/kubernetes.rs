//! `kubectl osl` against a cluster made on this machine: the real `kubectl`
//! binary runs the plugin, which talks to the API fixture server, whose
//! port-forward reaches the real agent inside a sandbox pod (namespaces and
//! cgroups, as the kubelet makes them). Root; CI runs them, elsewhere they skip.

use osl_testkit::api::ApiServer;
use osl_testkit::sandbox::{self, ContainerSpec, Pod};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const NS: &str = "test";
const MIB: u64 = 1 << 20;

/// kubectl-osl's directory (put on PATH so `kubectl osl` finds it), and the
/// agent binary beside it, built if a `-p osl-cli` run did not build it.
fn binaries() -> (PathBuf, PathBuf) {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-osl"));
    let dir = plugin.parent().unwrap().to_path_buf();
    let agent = dir.join("osl-agent");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let ok = Command::new(cargo)
            .args(["build", "-q", "-p", "osl-agent", "--bin", "osl-agent"])
            .current_dir(workspace)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cargo build -p osl-agent");
    });
    (dir, agent)
}

fn agent_spec(agent: &Path, args: &[&str]) -> ContainerSpec {
    let mut argv = vec![agent.to_str().unwrap().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    ContainerSpec::new("osl-agent", argv)
}

/// A sandbox pod with two apps (64 and 128 MiB limits) and, unless `agent` is
/// false, the agent as a third container.
fn sandbox_pod(name: &str, agent: bool) -> Pod {
    let (_, bin) = binaries();
    let mut containers = vec![
        ContainerSpec::new("app-a", ["sleep", "600"]).memory_limit(64 * MIB),
        ContainerSpec::new("app-b", ["sleep", "600"]).memory_limit(128 * MIB),
    ];
    if agent {
        containers.push(agent_spec(&bin, &["serve", "--no-watch"]));
    }
    let pod = Pod::create(name, &containers).unwrap();
    if agent {
        pod.wait_for_port(7450, std::time::Duration::from_secs(20)).expect("the agent serves in the pod");
    }
    pod
}

/// The Pod object the kubelet would report for a sandbox pod.
fn pod_object(pod: &Pod, labels: Value) -> Value {
    let containers: Vec<_> = pod.containers().iter().filter(|c| c.name != "pause").collect();
    let spec: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut s = json!({"name": c.name, "image": format!("example/{}:1", c.name)});
            if let Some(limit) = c.memory_limit_bytes {
                s["resources"] = json!({"limits": {"memory": format!("{}Mi", limit / MIB)}});
            }
            s
        })
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "ready": true, "restartCount": 0, "image": format!("example/{}:1", c.name),
                "imageID": "", "containerID": format!("containerd://{}", c.id),
                "state": {"running": {"startedAt": "2026-11-27T10:00:00Z"}}
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name(), "namespace": NS, "uid": pod.uid(), "labels": labels},
        "spec": {"containers": spec, "shareProcessNamespace": true},
        "status": {"phase": "Running", "containerStatuses": statuses, "podIP": "10.0.0.7"}
    })
}

/// Serves the pod and bridges its port-forwards into the pod's network namespace.
fn publish(api: &ApiServer, pod: Arc<Mutex<Pod>>, labels: Value) {
    let object = pod_object(&pod.lock().unwrap(), labels);
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    api.add(object);
    api.set_connector(NS, &name, Arc::new(move |port| pod.lock().unwrap().connect(port)));
}

/// `kubectl osl ARGS` through the real kubectl, against the fixture server.
fn kubectl_osl(api: &ApiServer, home: &Path, args: &[&str]) -> Output {
    kubectl_osl_command(api, home, args).output().expect("run kubectl")
}

fn kubectl_osl_command(api: &ApiServer, home: &Path, args: &[&str]) -> Command {
    let (dir, _) = binaries();
    let kubeconfig = api.write_kubeconfig(home, NS);
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("kubectl");
    command.arg("osl").args(args).env("PATH", path).env("KUBECONFIG", kubeconfig).env("NO_COLOR", "1");
    command
}

fn have_kubectl(test: &str) -> bool {
    if Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var("CI").is_err(), "{test}: kubectl is needed under CI");
    eprintln!("skipping {test}: no kubectl on PATH");
    false
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn diagnose_pod_through_kubectl_the_api_server_and_a_port_forward() {
    let test = "diagnose_pod_through_kubectl_the_api_server_and_a_port_forward";
    if !sandbox::run_or_skip(test) || !have_kubectl(test) {
        return;
    }
    let api = ApiServer::start();
    let home = tempfile::tempdir().unwrap();
    let pod = Arc::new(Mutex::new(sandbox_pod("demo", true)));
    publish(&api, pod.clone(), json!({"app": "demo"}));
    let ids: Vec<(String, String)> =
        pod.lock().unwrap().containers().iter().map(|c| (c.name.clone(), c.id.clone())).collect();

    let out = kubectl_osl(&api, home.path(), &["diagnose", "pod/demo", "-n", NS, "-o", "json", "--blocked", "0s"]);
    let d = json_out(&out);
    let procs = d["processes"].as_array().unwrap();
    for (name, comm) in [("app-a", "sleep"), ("app-b", "sleep"), ("osl-agent", "osl-agent")] {
        let p = procs.iter().find(|p| p["container_name"] == name).unwrap_or_else(|| panic!("{name}: {procs:#?}"));
        assert_eq!(p["comm"], comm);
        let id = &ids.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(p["container_id"], id.as_str());
    }
    let containers = d["containers"].as_array().unwrap();
    for (name, limit) in [("app-a", 64 * MIB), ("app-b", 128 * MIB)] {
        let c = containers.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}: {containers:#?}"));
        assert_eq!(c["memory"]["limit_bytes"], limit, "{name}");
        let ws = c["memory"]["working_set_bytes"].as_u64().unwrap();
        assert!(ws > 0 && ws < 16 * MIB, "{name}: a sleeping app's working set: {ws}");
        assert_eq!(c["memory"]["location"]["route"], "process-root", "a sibling's cgroup through its /proc/PID/root");
    }

    // The table: processes under their container names; exit 0 without findings at or above --fail-on.
    let table = kubectl_osl(&api, home.path(), &["diagnose", "demo", "-n", NS, "--fail-on", "critical"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("app-a (") && text.contains("app-b ("), "{text}");
    let portforwards = api.requests().iter().filter(|r| r.path.contains("/portforward")).count();
    assert!(portforwards >= 2, "each run port-forwarded: {portforwards}");

    assert!(!d["findings"].as_array().unwrap().iter().any(|f| f["id"] == "memory.limit_mismatch"), "the limits agree");
    // The spec says 100Mi for app-b, the cgroup 128 MiB: the kernel's is the one that counts, and it is named.
    let mut resized = api.get("pods", NS, "demo").unwrap();
    resized["spec"]["containers"][1]["resources"]["limits"]["memory"] = json!("100Mi");
    api.add(resized);
    let d =
        json_out(&kubectl_osl(&api, home.path(), &["diagnose", "pod/demo", "-n", NS, "-o", "json", "--blocked", "0s"]));
    let f = d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "memory.limit_mismatch")
        .expect("a mismatch finding");
    assert_eq!(f["subject"], "container app-b");
    assert_eq!(f["evidence"]["cgroup_limit_bytes"], (128 * MIB).to_string());

    // The agent answers only inside the pod's network namespace.
    assert!(std::net::TcpStream::connect("127.0.0.1:7450").is_err(), "the agent is not reachable from the host");
}

#[test]
fn diagnose_deployment_fans_out_over_its_pods() {
    let test = "diagnose_deployment_fans_out_over_its_pods";
    if !sandbox::run_or_skip(test) || !have_kubectl(test) {
        return;
    }
    let api = ApiServer::start();
    let home = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    for i in 1..=3 {
        let pod = Arc::new(Mutex::new(sandbox_pod(&format!("web-{i}"), true)));
        publish(&api, pod.clone(), json!({"app": "web"}));
        pods.push(pod);
    }
    // A pod of another app, not selected.
    api.add(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "namespace": NS, "labels": {"app": "other"}},
                   "spec": {"containers": [{"name": "x"}]}, "status": {"phase": "Running"}}));
    api.add(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app-a", "image": "x"}]}}},
        "status": {"replicas": 3, "readyReplicas": 3}
    }));
    let out =
        kubectl_osl(&api, home.path(), &["diagnose", "deployment/web", "-n", NS, "-o", "json", "--blocked", "0s"]);
    let list = json_out(&out);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["pod"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["web-1", "web-2", "web-3"]);
    for p in list.as_array().unwrap() {
        let procs = p["diagnosis"]["processes"].as_array().unwrap_or_else(|| panic!("{p}"));
        assert!(procs.iter().any(|x| x["container_name"] == "app-b"), "{p}");
    }
    let table = kubectl_osl(&api, home.path(), &["diagnose", "deploy/web", "-n", NS, "--blocked", "0s"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("web-") && l.contains(" ok ")).count(), 3, "{text}");
    drop(pods);
}

#[test]
fn attach_patches_an_ephemeral_container_then_connects() {
    let test = "attach_patches_an_ephemeral_container_then_connects";
    if !sandbox::run_or_skip(test) || !have_kubectl(test) {
        return;
    }
    let (_, bin) = binaries();
    let api = ApiServer::start();
    let home = tempfile::tempdir().unwrap();
    let pod = Arc::new(Mutex::new(sandbox_pod("bare", false)));
    publish(&api, pod.clone(), json!({"app": "bare"}));
    // The kubelet's part: run the ephemeral container the patch asked for.
    let started = pod.clone();
    api.on_ephemeral(move |_, _, container| {
        let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let mut p = started.lock().unwrap();
        p.add_container(agent_spec(&bin, &args)).unwrap();
        p.wait_for_port(7450, std::time::Duration::from_secs(20)).unwrap();
    });

    let no_agent = kubectl_osl(&api, home.path(), &["diagnose", "pod/bare", "-n", NS]);
    assert_eq!(no_agent.status.code(), Some(3), "{}", stderr(&no_agent));
    assert!(stderr(&no_agent).contains("kubectl osl attach pod/bare"), "{}", stderr(&no_agent));

    let out = kubectl_osl(&api, home.path(), &["attach", "pod/bare", "-n", NS, "-c", "app-b"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("attached to pod/bare: the agent sees"), "{said}");
    assert!(said.contains("next: kubectl osl diagnose pod/bare -n test"), "{said}");
    let patches: Vec<_> = api.requests().into_iter().filter(|r| r.path.contains("/ephemeralcontainers")).collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    let patch = &patches[0];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.content_type.as_deref(), Some("application/strategic-merge-patch+json"));
    let ec = &patch.body.as_ref().unwrap()["spec"]["ephemeralContainers"][0];
    assert_eq!(ec["name"], "osl-agent");
    assert_eq!(ec["targetContainerName"], "app-b");
    assert_eq!(
        ec["securityContext"]["capabilities"],
        json!({"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]})
    );
    assert_eq!(ec["securityContext"]["runAsUser"], 0);
    assert_eq!(
        ec["env"][0],
        json!({"name": "OSL_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );

    // Attached once: a second attach reuses it (ephemeral containers cannot be removed).
    let again = kubectl_osl(&api, home.path(), &["attach", "bare", "-n", NS]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("already attached to pod/bare"));
    assert_eq!(api.requests().iter().filter(|r| r.path.contains("/ephemeralcontainers")).count(), 1);
    let d =
        json_out(&kubectl_osl(&api, home.path(), &["diagnose", "pod/bare", "-n", NS, "-o", "json", "--blocked", "0s"]));
    assert!(d["processes"].as_array().unwrap().iter().any(|p| p["container_name"] == "app-b"));
}

#[test]
fn each_error_says_what_to_do_with_its_exit_code() {
    let test = "each_error_says_what_to_do_with_its_exit_code";
    if !sandbox::run_or_skip(test) || !have_kubectl(test) {
        return;
    }
    let api = ApiServer::start();
    let home = tempfile::tempdir().unwrap();
    // An agent container in the spec, but nothing listening in the pod.
    let silent = Arc::new(Mutex::new(sandbox_pod("silent", false)));
    let mut object = pod_object(&silent.lock().unwrap(), json!({}));
    object["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "osl-agent", "image": "x"}));
    object["status"]["containerStatuses"].as_array_mut().unwrap().push(json!({
        "name": "osl-agent", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"running": {"startedAt": "2026-11-27T10:00:00Z"}}
    }));
    api.add(object);
    let s = silent.clone();
    api.set_connector(NS, "silent", Arc::new(move |port| s.lock().unwrap().connect(port)));
    api.add(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending", "namespace": NS},
                   "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                       "image": "x", "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}));
    let run = |args: &[&str]| kubectl_osl(&api, home.path(), args);

    let missing = run(&["diagnose", "pod/nope", "-n", NS]);
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
    assert!(
        stderr(&missing).starts_with("error: pod nope in namespace test: pods \"nope\" not found"),
        "{}",
        stderr(&missing)
    );

    let pending = run(&["diagnose", "pod/pending", "-n", NS]);
    assert_eq!(pending.status.code(), Some(3), "{}", stderr(&pending));
    assert!(
        stderr(&pending).contains("pod pending is Pending, not Running")
            && stderr(&pending).contains("ImagePullBackOff")
    );

    let silent_out = run(&["diagnose", "pod/silent", "-n", NS, "--timeout", "2s"]);
    assert_eq!(silent_out.status.code(), Some(4), "{}", stderr(&silent_out));
    assert!(
        stderr(&silent_out).starts_with("error: cannot connect to the agent at pod/silent"),
        "{}",
        stderr(&silent_out)
    );

    let no_workload = run(&["diagnose", "deployment/nope", "-n", NS]);
    assert_eq!(no_workload.status.code(), Some(3), "{}", stderr(&no_workload));

    api.forbid("create", "pods/portforward");
    let forbidden = run(&["diagnose", "pod/silent", "-n", NS]);
    assert_eq!(forbidden.status.code(), Some(5), "{}", stderr(&forbidden));
    let msg = stderr(&forbidden);
    assert!(msg.contains("cannot create resource \"pods/portforward\""), "{msg}");
    assert!(msg.contains("osl-cli ClusterRole"), "{msg}");
}

/// The agent killed in the middle of a call (as the OOM killer or a failed
/// probe does it): the CLI says it went away, and what the pod now says of its
/// container.
#[test]
fn an_agent_killed_mid_call_is_named_with_its_containers_last_state() {
    let test = "an_agent_killed_mid_call_is_named_with_its_containers_last_state";
    if !sandbox::run_or_skip(test) || !have_kubectl(test) {
        return;
    }
    let api = ApiServer::start();
    let home = tempfile::tempdir().unwrap();
    let pod = Arc::new(Mutex::new(sandbox_pod("doomed", true)));
    publish(&api, pod.clone(), json!({"app": "doomed"}));
    let agent_pid = pod.lock().unwrap().container("osl-agent").unwrap().host_pid;

    let call =
        kubectl_osl_command(&api, home.path(), &["blocked", "pod/doomed", "-n", NS, "--pid", "1", "--duration", "20s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    // Once the port-forward is up, the probe and the call follow within milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !api.requests().iter().any(|r| r.path.contains("/portforward")) {
        assert!(std::time::Instant::now() < deadline, "no port-forward");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The kubelet's part: it sees the kill and restarts the container.
    let mut object = api.get("pods", NS, "doomed").unwrap();
    for status in object["status"]["containerStatuses"].as_array_mut().unwrap() {
        if status["name"] == "osl-agent" {
            status["restartCount"] = json!(1);
            status["state"] = json!({"running": {"startedAt": "2026-11-27T10:05:01Z"}});
            status["lastState"] =
                json!({"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-27T10:05:00Z"}});
        }
    }
    api.add(object);
    assert!(Command::new("kill").args(["-KILL", &agent_pid.to_string()]).status().unwrap().success());

    let out = call.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: the agent at pod/doomed (container osl-agent) went away mid-call: the connection broke, so it was \
             likely killed or restarted; its container now: last state: Terminated (OOMKilled, exit 137) at \
             2026-11-27T10:05:00Z, state: Running since 2026-11-27T10:05:01Z, restarts: 1\nCaused by:\n"
        ),
        "{err}"
    );
    drop(pod);
}
