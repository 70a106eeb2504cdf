//! `diagnose deployment/web` over 1, 5 and 10 sandbox pods (root): total time
//! and its growth with the number of pods, through the API fixture server and a
//! port-forward per pod, as on a cluster.
//!
//!     cargo build --release -p osl-agent -p osl-cli && \
//!     sudo target/release/examples/fanout [--runs 5]
//!
//! (`cargo run --release -p osl-cli --example fanout` builds the example only:
//! build the two binaries first.)

#![allow(clippy::unwrap_used)] // test code: an unwrap that fails is a test that fails

use osl_testkit::api::ApiServer;
use osl_testkit::sandbox::{ContainerSpec, Pod};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    if let Err(why) = osl_testkit::sandbox::available() {
        eprintln!("the pod sandbox needs root: {why}");
        std::process::exit(2);
    }
    let runs: usize = std::env::args().skip_while(|a| a != "--runs").nth(1).map_or(5, |n| n.parse().expect("--runs N"));
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let (agent, plugin) = (bin.join("osl-agent"), bin.join("kubectl-osl"));
    assert!(agent.exists() && plugin.exists(), "build first: cargo build --release -p osl-agent -p osl-cli");
    let home = std::env::temp_dir().join(format!("osl-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let mut base = None;
    println!("{:>5} {:>12} {:>12} {:>8}", "pods", "median", "max", "vs 1");
    for n in [1usize, 5, 10] {
        let api = ApiServer::start();
        let mut pods = Vec::new();
        for i in 0..n {
            let pod = Pod::create(
                &format!("web-{i}"),
                &[
                    ContainerSpec::new("app", ["sleep", "600"]).memory_limit(64 << 20),
                    ContainerSpec::new("osl-agent", [agent.to_str().unwrap(), "serve", "--no-watch"]),
                ],
            )
            .unwrap();
            pod.wait_for_port(7450, Duration::from_secs(20)).unwrap();
            let statuses: Vec<_> = pod
                .containers()
                .iter()
                .filter(|c| c.name != "pause")
                .map(|c| {
                    json!({
                        "name": c.name, "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                        "containerID": format!("containerd://{}", c.id), "state": {"running": {}}
                    })
                })
                .collect();
            api.add(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod.name(), "namespace": "bench", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app"}, {"name": "osl-agent"}]},
                "status": {"phase": "Running", "containerStatuses": statuses}
            }));
            let pod = Arc::new(Mutex::new(pod));
            let connect = pod.clone();
            api.set_connector(
                "bench",
                &format!("web-{i}"),
                Arc::new(move |port| connect.lock().unwrap().connect(port)),
            );
            pods.push(pod);
        }
        api.add(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "bench"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": []}}}
        }));
        let kubeconfig = api.write_kubeconfig(&home, "bench");
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let out = std::process::Command::new(&plugin)
                .args(["diagnose", "deployment/web", "-o", "json", "--blocked", "0s"])
                .env("KUBECONFIG", &kubeconfig)
                .output()
                .unwrap();
            times.push(t.elapsed());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(answers.as_array().map(Vec::len), Some(n), "every pod answered");
        }
        times.sort();
        let median = times[times.len() / 2];
        let one = *base.get_or_insert(median);
        println!(
            "{n:>5} {:>10.1}ms {:>10.1}ms {:>7.2}x",
            median.as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
            median.as_secs_f64() / one.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&home);
}
