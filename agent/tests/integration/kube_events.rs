//! Kubernetes Events: what the agent posts, checked on the requests a recording
//! API server received; and the whole path from a real OOM kill (root).

use crate::api_recorder::ApiRecorder;
use crate::support::{MIB, TestProc, V1Cgroup, privileged};
use osl_agent::kube_events::{Notice, PodRef, Poster, RateLimit};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pod() -> PodRef {
    PodRef { name: "demo-7f9c".into(), namespace: "test".into(), uid: "0b8e-uid".into() }
}

async fn client_for(api: &ApiRecorder) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&api.kubeconfig("test")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_notice_becomes_a_warning_event_on_the_pod_and_repeats_are_held_back() {
    let api = ApiRecorder::start();
    let mut poster = Poster::new(client_for(&api).await, pod(), RateLimit::default());
    let warn = Notice { reason: "PreOOM", key: "PreOOM/abc".into(), message: "at 91%; osl report r1".into() };
    assert!(poster.post(&warn).await.unwrap());
    assert!(!poster.post(&warn).await.unwrap(), "the same container within a minute is held back");
    let kill = Notice { reason: "OOMKilled", key: "OOMKilled/abc".into(), message: "killed pid 42".into() };
    assert!(poster.post(&kill).await.unwrap());

    let sent = api.requests();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    for r in &sent {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/v1/namespaces/test/events?"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer test-token"));
        let e = &r.body;
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["metadata"]["generateName"], "demo-7f9c.osl-");
        assert_eq!(e["metadata"]["namespace"], "test");
        assert_eq!(e["involvedObject"]["kind"], "Pod");
        assert_eq!(e["involvedObject"]["name"], "demo-7f9c");
        assert_eq!(e["involvedObject"]["namespace"], "test");
        assert_eq!(e["involvedObject"]["uid"], "0b8e-uid");
        assert_eq!(e["source"]["component"], "osl-agent");
        assert_eq!(e["count"], 1);
        assert!(e["firstTimestamp"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    assert_eq!(sent[0].body["reason"], "PreOOM");
    assert_eq!(sent[0].body["message"], "at 91%; osl report r1");
    assert_eq!(sent[1].body["reason"], "OOMKilled");
}

/// Starts osl-agent serve and returns it once it logged a line containing
/// `until`, with its log so far (the rest is copied to the test's stderr).
fn agent(envs: &[(&str, &str)], args: &[&str], until: &str) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_osl-agent"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .env("NO_COLOR", "1")
        .env("OSL_LOG", "info,osl_agent::watch=debug")
        .envs(envs.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let serving = line.contains(until);
        lines.push(line);
        if serving {
            break;
        }
    }
    std::thread::spawn(move || stderr.for_each(|l| eprintln!("agent: {}", l.unwrap_or_default())));
    (child, lines)
}

#[test]
fn outside_a_cluster_events_are_off_with_one_line_saying_why() {
    let reports = tempfile::tempdir().unwrap();
    let dir = reports.path().to_str().unwrap();
    let (mut a, log) = agent(&[], &["--report-dir", dir], "serving osl.v1.Diagnostics");
    a.kill().unwrap();
    let off: Vec<&String> = log.iter().filter(|l| l.contains("Kubernetes Events")).collect();
    assert_eq!(off.len(), 1, "{log:#?}");
    assert!(off[0].contains("Kubernetes Events off: OSL_POD_NAME and OSL_POD_NAMESPACE are not set"), "{off:?}");

    let (mut a, log) = agent(
        &[("OSL_POD_NAME", "p"), ("OSL_POD_NAMESPACE", "n")],
        &["--report-dir", dir],
        "serving osl.v1.Diagnostics",
    );
    a.kill().unwrap();
    let off: Vec<&String> = log.iter().filter(|l| l.contains("Kubernetes Events")).collect();
    assert_eq!(off.len(), 1, "{log:#?}");
    assert!(off[0].contains("Kubernetes Events off: not in a cluster and no kubeconfig"), "{off:?}");
}

#[test]
fn an_oom_kill_in_the_pod_is_announced_pre_oom_then_oom_killed() {
    if !privileged("an_oom_kill_in_the_pod_is_announced_pre_oom_then_oom_killed") {
        return;
    }
    let api = ApiRecorder::start();
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("test")).unwrap();
    let reports = tempfile::tempdir().unwrap();
    let cg = V1Cgroup::create("events", 256 * MIB);
    let mut leaker = TestProc::spawn(&["anon", "0"]);
    cg.add(leaker.pid);
    let (mut a, log) = agent(
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("OSL_POD_NAME", "demo-7f9c"),
            ("OSL_POD_NAMESPACE", "test"),
            ("OSL_POD_UID", "0b8e-uid"),
        ],
        &["--report-dir", reports.path().to_str().unwrap(), "--pre-oom-poll", "100ms"],
        &format!("watching a container cgroup={}", cg.path()),
    );
    assert!(log.iter().any(|l| l.contains("Kubernetes Events on")), "{log:#?}");
    assert_eq!(leaker.send("grow 200").as_deref(), Some("ok"));
    leaker.wait();

    // This cgroup's reports (the agent watches every cgroup on the machine).
    let ids = |kind: &str| -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(reports.path())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let r: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                (r["cgroup_path"] == cg.path().as_str() && r["kind"] == kind).then(|| r["id"].as_str().unwrap().into())
            })
            .collect();
        ids.sort();
        ids
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let ours = loop {
        let ours: Vec<serde_json::Value> = api
            .requests()
            .into_iter()
            .map(|r| r.body)
            .filter(|e| {
                ids("pre_oom")
                    .iter()
                    .chain(&ids("post_mortem"))
                    .any(|id| e["message"].as_str().unwrap().contains(id.as_str()))
            })
            .collect();
        if ours.iter().any(|e| e["reason"] == "OOMKilled") || Instant::now() > deadline {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    a.kill().unwrap();
    let reasons: Vec<&str> = ours.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["PreOOM", "OOMKilled"], "one warning (the rest held back), then the kill: {ours:#?}");
    let kill = ours[1]["message"].as_str().unwrap();
    assert!(kill.contains(&format!("killed pid {} (osl-testproc", leaker.pid)), "{kill}");
    assert!(kill.contains(&format!("osl report {}", ids("post_mortem")[0])), "{kill}");
    assert!(kill.contains(&format!("(pre-OOM report {})", ids("pre_oom").last().unwrap())), "{kill}");
    let warn = ours[0]["message"].as_str().unwrap();
    assert!(warn.contains(&format!("top grower pid {} (osl-testproc)", leaker.pid)), "{warn}");
    assert_eq!(ours[0]["involvedObject"]["uid"], "0b8e-uid");
}
