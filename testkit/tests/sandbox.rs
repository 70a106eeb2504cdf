//! The pod sandbox, checked from inside and outside the pod, and the real agent and
//! CLI run in it. Root only: elsewhere these skip with the reason; under CI=true
//! they must run.

#![allow(clippy::unwrap_used)] // test code: an unwrap that fails is a test that fails
#![cfg(target_os = "linux")]

use osl_testkit::sandbox::{self, Container, ContainerSpec, Pod};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn sleeper(name: &str, limit: u64) -> ContainerSpec {
    ContainerSpec::new(name, ["sleep", "300"]).memory_limit(limit)
}

fn exec(pod: &Pod, container: &str, script: &str) -> String {
    let out = pod.exec(container, &["sh", "-c", script]).unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn pid_ns(host_pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{host_pid}/ns/pid")).ok()
}

/// Host pids of every process in the PID namespace `ns`.
fn processes_in(ns: &Path) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid_ns(pid).as_deref() == Some(ns))
        .collect()
}

fn memory_line(cgroup_file: &str) -> String {
    cgroup_file.lines().find(|l| l.split(':').nth(1) == Some("memory")).unwrap_or_default().to_owned()
}

#[test]
fn containers_share_the_pods_pid_and_network_namespaces_and_each_sees_its_own_cgroup() {
    if !sandbox::run_or_skip("containers_share_the_pods_pid_and_network_namespaces") {
        return;
    }
    let t0 = Instant::now();
    let pod = Pod::create("checkout", &[sleeper("app-a", 64 * MIB), sleeper("app-b", 128 * MIB)]).unwrap();
    eprintln!("pod with 2 containers created in {:?}", t0.elapsed());
    let (a, b) = (pod.container("app-a").unwrap().clone(), pod.container("app-b").unwrap().clone());
    let pause = pod.pause().clone();

    // Ids and uid in the shapes the agent parses.
    let uid = pod.uid();
    assert!(uid.len() == 36 && uid.matches('-').count() == 4, "{uid}");
    for c in [&a, &b, &pause] {
        assert!(c.id.len() == 64 && c.id.bytes().all(|x| x.is_ascii_hexdigit()), "{}", c.id);
        assert_eq!(c.cgroup_path, format!("/kubepods/burstable/pod{uid}/{}", c.id));
        assert_eq!(c.cgroup_dir, Path::new("/sys/fs/cgroup/memory").join(&c.cgroup_path[1..]));
    }
    assert_eq!(pause.host_pid, pod.pause_host_pid());

    // One PID namespace: the pause is 1, the apps have small pod pids, and /proc in a
    // container shows the pod's processes and nothing of the host's.
    assert_eq!(pause.pod_pid, 1);
    for c in [&a, &b] {
        assert!(c.pod_pid > 1 && c.pod_pid < 50, "{c:?}");
        let status = fs::read_to_string(format!("/proc/{}/status", c.host_pid)).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert_eq!(
            nspid.split_whitespace().skip(1).collect::<Vec<_>>(),
            [c.host_pid, c.pod_pid].map(|p| p.to_string())
        );
        assert_eq!(pid_ns(c.host_pid), pid_ns(pause.host_pid));
        // The container's process may still be between fork and exec (an empty cmdline).
        let cmdline = || fs::read_to_string(format!("/proc/{}/cmdline", c.host_pid)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cmdline() != "sleep\u{0}300\u{0}" && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(cmdline(), "sleep\u{0}300\u{0}");
    }
    assert_ne!(pid_ns(pause.host_pid), pid_ns(std::process::id() as i32));
    let ps = exec(&pod, "app-a", r#"for d in /proc/[0-9]*; do echo "${d#/proc/} $(cat "$d/comm")"; done"#);
    let ps: BTreeMap<i32, String> =
        ps.lines().map(|l| l.split_once(' ').unwrap()).map(|(p, c)| (p.parse().unwrap(), c.to_owned())).collect();
    assert_eq!(ps.get(&1).map(String::as_str), Some("pause"), "{ps:?}");
    assert_eq!(ps.get(&a.pod_pid).map(String::as_str), Some("sleep"), "{ps:?}");
    assert_eq!(ps.get(&b.pod_pid).map(String::as_str), Some("sleep"), "{ps:?}");
    assert!(ps.len() <= 8 && ps.keys().all(|&p| p < 100), "only the pod's processes: {ps:?}");

    // Each container's memory cgroup, from /proc/PID/cgroup on the host and inside.
    for c in [&a, &b, &pause] {
        let host_view = fs::read_to_string(format!("/proc/{}/cgroup", c.host_pid)).unwrap();
        assert!(memory_line(&host_view).ends_with(&format!(":memory:{}", c.cgroup_path)), "{host_view}");
        assert_eq!(fs::read_to_string(c.cgroup_dir.join("cgroup.procs")).unwrap(), format!("{}\n", c.host_pid));
    }
    for c in [&a, &b] {
        let inside = exec(&pod, &c.name, "cat /proc/self/cgroup");
        assert!(memory_line(&inside).ends_with(&format!(":memory:{}", c.cgroup_path)), "{inside}");
    }

    // /sys/fs/cgroup/memory in a container is its cgroup alone (one read-only mount
    // rooted there), and a sibling reads it through /proc/PID/root.
    for (c, limit) in [(&a, 64 * MIB), (&b, 128 * MIB)] {
        let inside = exec(&pod, &c.name, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes");
        assert_eq!(inside.trim(), limit.to_string(), "{} inside", c.name);
        let sibling_route = format!("/proc/{}/root/sys/fs/cgroup/memory/memory.limit_in_bytes", c.host_pid);
        assert_eq!(fs::read_to_string(&sibling_route).unwrap().trim(), limit.to_string(), "{sibling_route}");
        let from_b =
            exec(&pod, "app-b", &format!("cat /proc/{}/root/sys/fs/cgroup/memory/memory.limit_in_bytes", c.pod_pid));
        assert_eq!(from_b.trim(), limit.to_string(), "{} from app-b", c.name);
        assert!(!Path::new(&format!("/proc/{}/root/sys/fs/cgroup/memory/kubepods", c.host_pid)).exists());
        let mountinfo = fs::read_to_string(format!("/proc/{}/mountinfo", c.host_pid)).unwrap();
        let memory_mounts: Vec<&str> =
            mountinfo.lines().filter(|l| l.contains(" - cgroup ") && l.ends_with(",memory")).collect();
        assert_eq!(memory_mounts.len(), 1, "{mountinfo}");
        let f: Vec<&str> = memory_mounts[0].split(' ').collect();
        assert_eq!((f[3], f[4]), (c.cgroup_path.as_str(), "/sys/fs/cgroup/memory"), "{}", memory_mounts[0]);
        assert!(f[5].starts_with("ro,"), "{}", memory_mounts[0]);
        let procs = mountinfo.lines().filter(|l| l.split(' ').nth(4) == Some("/proc")).count();
        assert_eq!(procs, 1, "one /proc, the pod's: {mountinfo}");
    }
    // The host's mounts are untouched.
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        host.lines().any(|l| l.split(' ').nth(3) == Some("/") && l.split(' ').nth(4) == Some("/sys/fs/cgroup/memory"))
    );

    // One network namespace with only loopback, up; one UTS namespace named after the pod.
    let net = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(net(a.host_pid), net(pause.host_pid));
    assert_eq!(net(b.host_pid), net(pause.host_pid));
    assert_ne!(net(a.host_pid), fs::read_link("/proc/self/ns/net").unwrap());
    let links = exec(&pod, "app-a", "ip -o link");
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:") && links.contains(",UP,"), "{links}");
    assert_eq!(exec(&pod, "app-b", "cat /proc/sys/kernel/hostname").trim(), "checkout");

    // The pause reaps orphans: a background child of an exec'd shell outlives it, is
    // re-parented to PID 1, exits and is gone rather than left a zombie.
    exec(&pod, "app-a", "sleep 0.2 & exit 0");
    std::thread::sleep(Duration::from_millis(600));
    let ns = pid_ns(pause.host_pid).unwrap();
    let zombies: Vec<i32> = processes_in(&ns)
        .into_iter()
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.rsplit_once(") ").unwrap().1.starts_with('Z'))
        })
        .collect();
    assert!(zombies.is_empty(), "zombies in the pod: {zombies:?}");
}

#[test]
fn a_listener_in_the_pod_is_reached_through_connect_and_not_from_the_host() {
    if !sandbox::run_or_skip("a_listener_in_the_pod_is_reached_through_connect") {
        return;
    }
    let server = r#"use IO::Socket::INET;
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:7450", Listen => 5, ReuseAddr => 1) or die "listen: $!";
        while (my $c = $s->accept) { print $c "hello from the pod\n"; close $c }"#;
    let pod = Pod::create("web", &[ContainerSpec::new("server", ["perl", "-e", server])]).unwrap();
    let stream = pod.wait_for_port(7450, Duration::from_secs(10)).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the pod\n");
    // Twice, from another thread: the namespace switch is per connection, not sticky.
    let again = std::thread::scope(|s| s.spawn(|| pod.connect(7450).map(|_| ())).join().unwrap());
    again.unwrap();
    let from_host = TcpStream::connect_timeout(&"127.0.0.1:7450".parse().unwrap(), Duration::from_secs(1));
    assert_eq!(from_host.map(|_| ()).unwrap_err().kind(), ErrorKind::ConnectionRefused);
    // Nothing else listens in the pod.
    assert_eq!(pod.connect(7451).unwrap_err().kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn dropping_the_pod_leaves_nothing_behind() {
    if !sandbox::run_or_skip("dropping_the_pod_leaves_nothing_behind") {
        return;
    }
    let t0 = Instant::now();
    let mut pod = Pod::create(
        "leaky",
        &[
            // Children that ignore SIGTERM and a grandchild in a new session.
            ContainerSpec::new("forks", ["sh", "-c", "trap '' TERM; sleep 1000 & setsid sleep 1000 & exec sleep 1000"]),
            sleeper("limited", 32 * MIB),
        ],
    )
    .unwrap();
    let created = t0.elapsed();
    pod.add_container(ContainerSpec::new("ephemeral", ["sleep", "1000"]).env("ROLE", "debug")).unwrap();
    let out = pod.exec("ephemeral", &["sh", "-c", "echo $ROLE $HOSTNAME; (sleep 1000 > /dev/null 2>&1 &)"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "debug leaky\n");

    let pause = pod.pause().clone();
    let ns = pid_ns(pause.host_pid).unwrap();
    let pids: BTreeSet<i32> = processes_in(&ns).into_iter().collect();
    assert!(pids.len() >= 7, "pause, 3 containers, 2 children of forks, 1 exec'd orphan: {pids:?}");
    let mut cgroups: Vec<PathBuf> = pod.containers().iter().map(|c| c.cgroup_dir.clone()).collect();
    cgroups.push(pause.cgroup_dir.clone());
    cgroups.push(pod.cgroup_dir().to_owned());
    let in_cgroups: usize =
        cgroups.iter().map(|d| fs::read_to_string(d.join("cgroup.procs")).unwrap().lines().count()).sum();
    assert_eq!(in_cgroups, pids.len(), "every process of the pod is in one of its cgroups");
    let dir = pod.dir().to_owned();
    assert!(dir.join("forks.log").exists());

    let t1 = Instant::now();
    drop(pod);
    let destroyed = t1.elapsed();
    eprintln!("pod with 3 containers: created (2 of them) in {created:?}, destroyed in {destroyed:?}");

    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || pid_ns(*pid).as_deref() != Some(&ns),
            "pid {pid} survived"
        );
    }
    for d in &cgroups {
        assert!(!d.exists(), "{} is left", d.display());
    }
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists(), "the host's hierarchy is still mounted");
}

#[test]
fn a_failing_container_is_an_error_and_cleans_up() {
    if !sandbox::run_or_skip("a_failing_container_is_an_error_and_cleans_up") {
        return;
    }
    let err = Pod::create("broken", &[ContainerSpec::new("nope", ["/does/not/exist"])]).unwrap_err().to_string();
    assert!(err.contains("/does/not/exist: executable file not found"), "{err}");
    let uid = err.split("(uid ").nth(1).unwrap().split(')').next().unwrap();
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/kubepods/burstable/pod{uid}")).exists(), "{err}");
    assert!(!std::env::temp_dir().join("osl-sandbox").join(uid).exists(), "{err}");
    // A command that exits at once has started: like a container that completed.
    let mut pod = Pod::create("fine", &[]).unwrap();
    let c = pod.add_container(ContainerSpec::new("quick", ["true"])).unwrap().clone();
    assert!(c.pod_pid > 1);
    assert!(pod.add_container(ContainerSpec::new("quick", ["true"])).is_err(), "names are unique");
    assert!(pod.add_container(ContainerSpec::new("Not_A_Label", ["true"])).is_err());
    assert!(pod.add_container(ContainerSpec::new("empty", Vec::<String>::new())).is_err());
}

/// Run by the next test in a child process, which then SIGKILLs it. It also ends
/// (dropping its pod) when its parent goes away and its stdin closes.
#[test]
fn helper_holds_a_pod_until_killed() {
    if std::env::var_os("OSL_SANDBOX_HELPER").is_none() {
        return;
    }
    let pod = Pod::create("orphan", &[sleeper("app", 16 * MIB)]).unwrap();
    let c = &pod.containers()[0];
    println!("\nsandbox-helper {} {} {}", pod.uid(), pod.pause_host_pid(), c.host_pid);
    let _ = std::io::stdin().read_line(&mut String::new());
}

#[test]
fn a_test_process_killed_outright_takes_its_pod_along_and_the_next_create_sweeps_the_rest() {
    if !sandbox::run_or_skip("a_test_process_killed_outright") {
        return;
    }
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_holds_a_pod_until_killed", "--nocapture", "--test-threads=1"])
        .env("OSL_SANDBOX_HELPER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // libtest prints "test NAME ... " before the test's own output, on the same line.
    let line = BufReader::new(helper.stdout.take().unwrap())
        .lines()
        .find_map(|l| Some(l.ok()?.split_once("sandbox-helper ")?.1.to_owned()));
    let Some(line) = line else {
        let _ = helper.kill();
        panic!("the helper exited without creating its pod: {:?}", helper.wait());
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let (uid, pids) = (fields[0], [fields[1], fields[2]].map(|p| p.parse::<i32>().unwrap()));
    let pod_dir = PathBuf::from(format!("/sys/fs/cgroup/memory/kubepods/burstable/pod{uid}"));
    assert!(pod_dir.exists());
    helper.kill().unwrap(); // SIGKILL: no Drop runs
    helper.wait().unwrap();
    // The pause's unshare has a parent-death signal and kills the pause, and with it the pod.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
        assert!(Instant::now() < deadline, "pod processes {pids:?} outlived their test process");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The cgroups are left for the next Pod::create (this one, or a test running in parallel) to sweep.
    drop(Pod::create("sweeper", &[]).unwrap());
    assert!(!pod_dir.exists(), "{} was not swept", pod_dir.display());
    assert!(!std::env::temp_dir().join("osl-sandbox").join(uid).exists());
}

/// The binaries of the workspace, built now (cargo is fast when they are fresh).
fn build(packages: &[&str]) -> BTreeMap<String, PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut cmd = Command::new(cargo);
    cmd.arg("build").arg("--message-format=json-render-diagnostics").current_dir(workspace);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "cargo build {packages:?} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| Some((m["target"]["name"].as_str()?.to_owned(), PathBuf::from(m["executable"].as_str()?))))
        .collect()
}

#[test]
fn the_agent_as_one_more_container_sees_every_container_and_its_limit() {
    if !sandbox::run_or_skip("the_agent_as_one_more_container") {
        return;
    }
    let bins = build(&["osl-agent", "osl-cli"]);
    let (agent, cli) = (&bins["osl-agent"], &bins["kubectl-osl"]);
    let mut pod = Pod::create("checkout-7f9c", &[sleeper("app-a", 64 * MIB), sleeper("app-b", 128 * MIB)]).unwrap();
    let reports = pod.dir().join("reports");
    let agent_spec = ContainerSpec::new(
        "osl",
        [agent.to_str().unwrap(), "serve", "--listen", "127.0.0.1:7450", "--no-watch", "--report-dir"]
            .into_iter()
            .map(String::from)
            .chain([reports.to_string_lossy().into_owned()]),
    );
    pod.add_container(agent_spec).unwrap();
    let osl = pod.container("osl").unwrap().clone();
    if let Err(e) = pod.wait_for_port(7450, Duration::from_secs(30)) {
        panic!("{e}; agent log:\n{}", osl.log());
    }

    let out = pod.net_command(cli).args(["diagnose", "--agent", "127.0.0.1:7450", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}\nagent log:\n{}", String::from_utf8_lossy(&out.stderr), osl.log());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["agent"]["pid"], osl.pod_pid, "the agent reports its pod pid");

    let mut all: Vec<Container> = pod.containers().to_vec();
    all.push(pod.pause().clone());
    let processes = json["processes"].as_array().unwrap();
    let containers = json["containers"].as_array().unwrap();
    let mut seen = String::new();
    for c in &all {
        let p = processes.iter().find(|p| p["pid"] == c.pod_pid);
        let p = p.unwrap_or_else(|| panic!("{} (pod pid {}) is not listed: {processes:#?}", c.name, c.pod_pid));
        assert_eq!(p["container_id"], c.id.as_str(), "{}", c.name);
        assert_eq!(p["cgroup_path"], c.cgroup_path.as_str(), "{}", c.name);
        let e = containers
            .iter()
            .find(|e| e["id"] == c.id.as_str())
            .unwrap_or_else(|| panic!("{}: {containers:#?}", c.name));
        assert_eq!(e["pod_uid"], pod.uid(), "{}", c.name);
        assert!(e["pids"].as_array().unwrap().contains(&c.pod_pid.into()), "{}: {e}", c.name);
        let memory = &e["memory"];
        assert_eq!(memory["limit_bytes"], serde_json::json!(c.memory_limit_bytes), "{}: {memory}", c.name);
        let location = &memory["location"];
        seen += &format!(
            "{:6} pod pid {:2} limit {:>10} route {} dir {}\n",
            c.name, c.pod_pid, memory["limit_bytes"], location["route"], location["dir"]
        );
        // DESIGN.md: a sibling in its own mount namespace is read through its own
        // /proc/PID/root; the agent's own cgroup through its own mount.
        let (route, dir) = if c.name == "osl" {
            ("agent-mount", "/sys/fs/cgroup/memory".to_owned())
        } else {
            ("process-root", format!("/proc/{}/root/sys/fs/cgroup/memory", c.pod_pid))
        };
        assert_eq!(location["route"], route, "{}: {location}", c.name);
        assert_eq!(location["dir"].as_str().unwrap().trim_end_matches('/'), dir, "{}: {location}", c.name);
        assert_eq!(location["path"], c.cgroup_path.as_str(), "{}", c.name);
        assert!(memory["usage_bytes"].as_u64().is_some_and(|u| u > 0), "{}: {memory}", c.name);
    }
    eprintln!("the agent in pod {} saw:\n{seen}", pod.uid());
    let unavailable: Vec<&serde_json::Value> =
        containers.iter().flat_map(|c| c["unavailable"].as_array().unwrap()).collect();
    eprintln!("containers' unavailable: {unavailable:#?}");
}

/// DESIGN.md: every container shares the pod's loopback, so the agent tells a
/// port-forward (dialled from outside the pod's PID namespace) from a neighbour
/// (a process of the pod) by who holds the client socket.
#[test]
fn a_neighbour_container_cannot_borrow_the_agent() {
    if !sandbox::run_or_skip("a_neighbour_container_cannot_borrow_the_agent") {
        return;
    }
    let bins = build(&["osl-agent", "osl-cli"]);
    let (agent, cli) = (&bins["osl-agent"], &bins["kubectl-osl"]);
    let mut pod = Pod::create("neighbours", &[sleeper("app", 64 * MIB)]).unwrap();
    let serve = |name: &str, port: &str, extra: &[&str]| {
        let args = [agent.to_str().unwrap(), "serve", "--listen", port, "--no-watch"];
        ContainerSpec::new(name, args.iter().chain(extra).map(|s| s.to_string()))
    };
    pod.add_container(serve("osl", "127.0.0.1:7450", &[])).unwrap();
    pod.add_container(serve("osl-open", "127.0.0.1:7451", &["--allow-pod-peers"])).unwrap();
    let osl = pod.container("osl").unwrap().clone();
    for port in [7450, 7451] {
        if let Err(e) = pod.wait_for_port(port, Duration::from_secs(30)) {
            panic!("{e}; agent log:\n{}", osl.log());
        }
    }
    let cli = cli.to_str().unwrap();

    let inside = pod.exec("app", &[cli, "ps", "--agent", "127.0.0.1:7450"]).unwrap();
    let err = String::from_utf8_lossy(&inside.stderr);
    assert!(!inside.status.success(), "a neighbour was served: {}", String::from_utf8_lossy(&inside.stdout));
    assert!(err.contains("inside the pod") && err.contains("--allow-pod-peers"), "{err}");
    let log = osl.log();
    assert!(log.contains("osl.v1 refused on this connection") && log.contains("Neighbour"), "agent log:\n{log}");

    // The port-forward path: the same loopback, from outside the pod's PID namespace.
    let outside = pod.net_command(cli).args(["ps", "--agent", "127.0.0.1:7450", "-o", "json"]).output().unwrap();
    assert!(outside.status.success(), "{}\nagent log:\n{}", String::from_utf8_lossy(&outside.stderr), osl.log());
    let json: serde_json::Value = serde_json::from_slice(&outside.stdout).unwrap();
    assert!(json["processes"].as_array().unwrap().len() >= 3, "{json}");

    // A neighbour holding more connections than the agent takes cannot crowd
    // the port-forwards out: past a few, its connections are closed at once.
    let hog = "import socket, time\nheld = []\nfor _ in range(80):\n    try:\n        held.append(socket.create_connection(('127.0.0.1', 7450)))\n    except OSError:\n        pass\ntime.sleep(20)\n";
    let script = format!("python3 -c \"{hog}\" >/dev/null 2>&1 &");
    pod.exec("app", &["sh", "-c", &script]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let crowded = pod.net_command(cli).args(["ps", "--agent", "127.0.0.1:7450", "-o", "json"]).output().unwrap();
    assert!(crowded.status.success(), "{}\nagent log:\n{}", String::from_utf8_lossy(&crowded.stderr), osl.log());
    assert!(started.elapsed() < Duration::from_secs(10), "served after {:?}", started.elapsed());

    // --allow-pod-peers serves the pod's own processes.
    let open = pod.exec("app", &[cli, "ps", "--agent", "127.0.0.1:7451"]).unwrap();
    assert!(open.status.success(), "{}", String::from_utf8_lossy(&open.stderr));
}
