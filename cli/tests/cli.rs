//! kubectl-osl as a user runs it: exit codes, error lines, output formats, and the
//! same answer over gRPC as in-process.

#![allow(clippy::unwrap_used)] // test code: an unwrap that fails is a test that fails

use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-osl");

fn osl(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("NO_COLOR", "1").output().expect("run kubectl-osl")
}

/// kubectl-osl as uid 65534 with no capabilities (needs root to switch).
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", BIN])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("setpriv")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("valid JSON")
}

/// A child killed on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Kid {
    Kid(Command::new("sleep").arg("300").spawn().unwrap())
}

/// bash with RLIMIT_NOFILE 64 holding 60 more fds, then sleeping.
fn fd_hog() -> (Kid, i32) {
    fd_hog_upto(62)
}

/// bash with RLIMIT_NOFILE 64 holding fds 3..=`last` on /dev/null, then sleeping.
fn fd_hog_upto(last: u32) -> (Kid, i32) {
    // Close what the test runner leaked, then hold fds 3..=last.
    let script = format!(
        "for f in /proc/$$/fd/*; do n=${{f##*/}}; [ $n -gt 2 ] && eval \"exec $n>&-\"; done; \
         ulimit -n 64; for i in $(seq 3 {last}); do eval \"exec $i</dev/null\"; done; echo ready; exec sleep 300"
    );
    let mut child = Command::new("bash").args(["-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let pid = child.id() as i32;
    // Wait for the exec into sleep.
    for _ in 0..500 {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == "sleep" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    (Kid(child), pid)
}

#[test]
fn an_unknown_pid_exits_3_with_one_line() {
    let o = osl(&["ps", "--local", "--pid", "2147483647"]);
    assert_eq!(code(&o), 3);
    assert_eq!(stderr(&o), "error: process 2147483647 not found\n");
    assert!(o.stdout.is_empty());
}

#[test]
fn an_unreachable_agent_exits_4_naming_the_address() {
    let o = osl(&["diagnose", "--agent", "127.0.0.1:1", "--timeout", "2s"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: cannot connect to the agent at 127.0.0.1:1\nCaused by:\n"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(&osl(&["ps"])), 2, "no --agent and no --local");
    assert_eq!(code(&osl(&["ps", "--bogus"])), 2);
    assert_eq!(code(&osl(&["ps", "--local", "--pid", "0"])), 2);
    let o = osl(&["ps", "--local", "--container", "not-hex!"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = osl(&["diagnose", "pod/web", "--local"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--agent and --local ask one agent directly: drop the pod target"), "{}", stderr(&o));
    let o = osl(&["diagnose", "service/web"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).starts_with("error: cannot diagnose a \"service\""), "{}", stderr(&o));
}

#[test]
fn fail_on_turns_findings_into_exit_1() {
    let (_kid, pid) = fd_hog();
    let pid = pid.to_string();
    let o = osl(&["diagnose", "--local", "--pid", &pid, "-o", "json"]);
    let v = json(&o);
    let finding = &v["findings"][0];
    assert_eq!(finding["id"], "fd.near_limit");
    assert_eq!(finding["severity"], "critical");
    assert_eq!(v["processes"][0]["fds"]["open"], 63);
    assert_eq!(v["processes"][0]["fds"]["soft_limit"], 64);
    assert_eq!(code(&osl(&["diagnose", "--local", "--pid", &pid, "--fail-on", "critical"])), 1);
    assert_eq!(code(&osl(&["diagnose", "--local", "--pid", &pid, "--fail-on", "warn"])), 1);
    let table = osl(&["diagnose", "--local", "--pid", &pid]);
    assert_eq!(code(&table), 0);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("FINDINGS\n  CRITICAL fd.near_limit pid "), "{text}");
    assert!(text.contains("63/64"), "{text}");
    assert!(!text.contains('\x1b'), "no colour into a pipe");
}

#[test]
fn fail_on_critical_ignores_a_warning() {
    // 55 of 64 fds: 85.9%, a warning.
    let (_kid, pid) = fd_hog_upto(54);
    let pid = pid.to_string();
    let v = json(&osl(&["diagnose", "--local", "--pid", &pid, "-o", "json"]));
    assert_eq!(v["findings"][0]["severity"], "warn", "{}", v["findings"]);
    assert_eq!(code(&osl(&["diagnose", "--local", "--pid", &pid, "--fail-on", "critical"])), 0);
    assert_eq!(code(&osl(&["diagnose", "--local", "--pid", &pid, "--fail-on", "warn"])), 1);
}

#[test]
fn fds_lists_filters_and_rejects_unknown_kinds() {
    let (_kid, pid) = fd_hog();
    let pid = pid.to_string();
    let v = json(&osl(&["fds", "--local", "--pid", &pid, "-o", "json"]));
    let fds = v["fds"].as_array().unwrap();
    assert_eq!(fds.len(), 63);
    assert_eq!(v["process"]["fd_summary"]["total"], 63);
    assert_eq!(v["process"]["fd_summary"]["headroom"], 1);
    let devnull: Vec<&Value> = fds.iter().filter(|f| f["target"] == "/dev/null").collect();
    assert!(devnull.len() >= 60 && devnull.iter().all(|f| f["kind"] == "char_device"));
    assert_eq!(v["findings"][0]["id"], "fd.near_limit");
    let only = json(&osl(&["fds", "--local", "--pid", &pid, "--kind", "char_device", "-o", "json"]));
    assert!(only["fds"].as_array().unwrap().iter().all(|f| f["kind"] == "char_device"));
    let none = json(&osl(&["fds", "--local", "--pid", &pid, "--state", "CLOSE_WAIT", "-o", "json"]));
    assert_eq!(none["fds"], serde_json::json!([]));
    let table = osl(&["fds", "--local", "--pid", &pid]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("\n62   char_device   /dev/null\n"), "{text}");
    assert!(text.contains("limit: 63 of 64 used, 1 left"), "{text}");
    let bad = osl(&["fds", "--local", "--pid", &pid, "--kind", "sockets"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("unknown fd kind \"sockets\""), "{}", stderr(&bad));
}

/// Without CAP_SYS_PTRACE another user's fd table is refused by the kernel: the
/// answer is partial, with the reason, not an error.
#[test]
fn another_users_fds_without_ptrace_are_a_partial_answer() {
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root and must run this test");
        eprintln!("SKIPPED another_users_fds_without_ptrace_are_a_partial_answer: needs root to become another user");
        return;
    }
    let kid = sleeper();
    let pid = kid.0.id().to_string();
    let o = as_nobody(&["fds", "--local", "--pid", &pid, "-o", "json"]);
    let v = json(&o);
    assert_eq!(v["agent"]["level"], "basic");
    assert_eq!(v["fds"], serde_json::json!([]));
    let p = &v["process"];
    assert_eq!(p["comm"], "sleep");
    assert!(p["fds"]["open"].as_u64().is_some(), "the count needs no ptrace on Linux >= 6.2: {}", p["fds"]);
    let reasons: Vec<&str> =
        p["unavailable"].as_array().unwrap().iter().map(|u| u["field"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"fds") && reasons.contains(&"memory.pss_bytes"), "{reasons:?}");
    let fds = p["unavailable"].as_array().unwrap().iter().find(|u| u["field"] == "fds").unwrap();
    assert!(fds["reason"].as_str().unwrap().contains("needs CAP_SYS_PTRACE"), "{fds}");
}

#[test]
fn table_yaml_and_json_agree_for_a_process() {
    let kid = sleeper();
    let pid = kid.0.id().to_string();
    let v = json(&osl(&["ps", "--local", "--pid", &pid, "-o", "json"]));
    let p = &v["processes"][0];
    assert_eq!(p["comm"], "sleep");
    assert_eq!(p["cmdline"], serde_json::json!(["sleep", "300"]));
    assert_eq!(p["state"], "sleeping");
    let y = osl(&["ps", "--local", "--pid", &pid, "-o", "yaml"]);
    let from_yaml: Value = serde_norway::from_slice(&y.stdout).unwrap();
    assert_eq!(from_yaml["processes"][0]["comm"], "sleep");
    assert_eq!(from_yaml["processes"][0]["start_time_ticks"], p["start_time_ticks"]);
    let t = osl(&["ps", "--local", "--pid", &pid]);
    let text = String::from_utf8(t.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.split_whitespace().eq([
        "PID",
        "PPID",
        "UID",
        "S",
        "THR",
        "RSS",
        "PSS",
        "USS",
        "FDS",
        "CPU",
        "CONTAINER",
        "COMMAND"
    ]));
    let row = text.lines().nth(1).unwrap();
    assert!(row.trim_start().starts_with(&pid) && row.ends_with("sleep 300"), "{row}");
}

/// The same pid through a real gRPC agent and in-process: equal but for timing.
#[test]
fn the_grpc_answer_equals_the_local_one() {
    let kid = sleeper();
    let pid = kid.0.id().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let agent = Arc::new(osl_agent::Agent::new(&osl_agent::Roots::default()));
    rt.spawn(osl_agent::server::serve(listener, agent, std::future::pending()));

    for cmd in ["ps", "diagnose"] {
        let mut remote = json(&osl(&[cmd, "--agent", &addr, "--pid", &pid, "-o", "json"]));
        let mut local = json(&osl(&[cmd, "--local", "--pid", &pid, "-o", "json"]));
        for v in [&mut remote, &mut local] {
            let o = v.as_object_mut().unwrap();
            for timing in ["agent", "taken_at_unix_ms", "capture_usec"] {
                o.remove(timing);
            }
            // PSS and USS count a file page (libc) by how many processes map it at that
            // instant, which the tests running alongside change.
            for p in o.get_mut("processes").and_then(Value::as_array_mut).into_iter().flatten() {
                for shared in ["pss_bytes", "pss_file_bytes", "uss_bytes"] {
                    p["memory"].as_object_mut().unwrap().remove(shared);
                }
            }
            // Cgroup usage moves with everything else on the machine; the container's identity does not.
            for c in o.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
                for part in ["memory", "cpu"] {
                    let loc = c[part]["location"].take();
                    c[part] = serde_json::json!({ "location": loc, "limit_bytes": c[part]["limit_bytes"] });
                }
            }
        }
        assert_eq!(remote, local, "{cmd}");
        assert_eq!(remote["processes"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn kubectl_finds_the_plugin_on_path() {
    let Ok(kubectl) = which("kubectl") else {
        eprintln!("SKIPPED kubectl_finds_the_plugin_on_path: no kubectl on PATH");
        return;
    };
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new(kubectl)
        .args(["osl", "ps", "--local", "--pid", "1", "-o", "json"])
        .env("PATH", path)
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(v["processes"][0]["pid"], 1);
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .ok_or(())
}

/// Reports the watcher wrote are listed newest first, shown in full, and still
/// there after the agent restarts.
#[test]
fn reports_are_listed_shown_and_survive_a_restart() {
    use osl_agent::watch::store::Store;
    use osl_proto::v1;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 10, 1 << 20).unwrap();
    for (i, kind) in [v1::ReportKind::PreOom, v1::ReportKind::PostMortem].into_iter().enumerate() {
        let id = format!("17000000000{i}-{}-3f2a9c0d1e5b", osl_proto::enum_names::report_kind::name_of(kind as i32));
        let report = v1::Report {
            id,
            kind: kind as i32,
            created_at_unix_ms: 1_700_000_000_000 + i as i64,
            container_id: "3f2a9c0d1e5b".repeat(5) + "3f2a",
            trigger: Some(v1::Trigger { event: "threshold".into(), usage_pct: 81.5, ..Default::default() }),
            processes: vec![v1::ReportProcess {
                pid: 42,
                comm: "leaky".into(),
                rss_bytes: Some(200 << 20),
                ..Default::default()
            }],
            ..Default::default()
        };
        store.write(&report).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    for restart in 0..2 {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let store = std::sync::Arc::new(Store::open(dir.path(), 10, 1 << 20).unwrap());
        let agent = Arc::new(osl_agent::Agent::new(&osl_agent::Roots::default()).with_reports(store));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(osl_agent::server::serve(listener, agent, async { rx.await.ok().unwrap_or(()) }));

        let v = json(&osl(&["reports", "--agent", &addr, "-o", "json"]));
        let ids: Vec<&str> = v["reports"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            ["170000000001-post_mortem-3f2a9c0d1e5b", "170000000000-pre_oom-3f2a9c0d1e5b"],
            "restart {restart}"
        );
        assert_eq!(v["reports"][1]["kind"], "pre_oom");
        let one = osl(&["reports", "--agent", &addr, "170000000000-pre_oom-3f2a9c0d1e5b"]);
        let text = String::from_utf8(one.stdout).unwrap();
        assert!(text.contains("report 170000000000-pre_oom-3f2a9c0d1e5b (pre_oom"), "{text}");
        assert!(text.contains("leaky"), "{text}");
        let missing = osl(&["reports", "--agent", &addr, "1-pre_oom-host-0"]);
        assert_eq!(code(&missing), 3, "{}", stderr(&missing));
        assert_eq!(stderr(&missing), "error: no report 1-pre_oom-host-0\n");
        assert_eq!(code(&osl(&["reports", "--agent", &addr, "../../etc/passwd"])), 2);

        tx.send(()).unwrap();
        rt.block_on(server).unwrap().unwrap();
    }
    let local = osl(&["reports", "--local"]);
    assert_eq!(code(&local), 0);
    assert!(String::from_utf8_lossy(&local.stdout).contains("watcher is off"));
}

/// Without ptrace access the sampler knows running from sleeping, and says why it
/// knows no more.
#[test]
fn blocked_without_ptrace_says_what_it_cannot_see() {
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root and must run this test");
        eprintln!("SKIPPED blocked_without_ptrace_says_what_it_cannot_see: needs root to become another user");
        return;
    }
    let kid = sleeper();
    let pid = kid.0.id().to_string();
    let o = as_nobody(&["blocked", "--local", "--pid", &pid, "--duration", "200ms", "-o", "json"]);
    let v = json(&o);
    let fields: Vec<&str> = v["unavailable"].as_array().unwrap().iter().map(|u| u["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"syscall") && fields.contains(&"wchan"), "{fields:?}");
    assert!(
        v["threads"][0]["by_syscall"][0]["name"].as_str().unwrap().contains("without ptrace access"),
        "{}",
        v["threads"]
    );
}

/// bash that waits for a line on stdin, then fails to open a missing file `n`
/// times (one openat → ENOENT each: builtins only, no forks, and no message
/// catalogues looked up for the error it does not print), then waits again.
fn enoent_loop(n: u32) -> (Kid, std::process::ChildStdin) {
    let script = format!(
        "exec 2>/dev/null; read go; i=0; while [ $i -lt {n} ]; do : < /nonexistent-osl-test; i=$((i+1)); done; read end"
    );
    let mut child =
        Command::new("bash").args(["-c", &script]).env("LC_ALL", "C").stdin(Stdio::piped()).spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    (Kid(child), stdin)
}

#[test]
fn strace_counts_a_real_process_and_turns_it_into_a_seccomp_profile() {
    use std::io::Write;
    let (kid, mut stdin) = enoent_loop(300);
    let pid = kid.0.id().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["strace", "--local", "--pid", &pid, "--backend", "ptrace", "--duration", "2s"];
        args.extend_from_slice(extra);
        Command::new(BIN)
            .args(&args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let profiling = run(&["-o", "json"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    writeln!(stdin, "go").unwrap();
    let p = json(&profiling.wait_with_output().unwrap());
    assert_eq!(p["backend"], "ptrace");
    assert_eq!(p["partial"], false);
    let openat = p["syscalls"].as_array().unwrap().iter().find(|s| s["name"] == "openat").expect("openat counted");
    assert_eq!(openat["errors"], 300, "{openat}");
    assert_eq!(openat["errnos"][0], serde_json::json!({"name": "ENOENT", "count": 300}));
    let finding = p["findings"].as_array().unwrap().iter().find(|f| f["id"] == "syscall.error_storm").unwrap();
    assert!(finding["message"].as_str().unwrap().contains("of them ENOENT"), "{finding}");

    // The table: strace's columns, the backend named, times labelled.
    let table = osl(&["strace", "--local", "--pid", &pid, "--backend", "ptrace", "--duration", "300ms"]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with(&format!("pid {pid} · backend ptrace (asked for)")), "{text}");
    assert!(text.contains("wall-clock from syscall entry to exit"), "{text}");

    // An allow-list of what it did: read (waiting for "end") and nothing unknown.
    let seccomp =
        osl(&["strace", "--local", "--pid", &pid, "--backend", "ptrace", "--duration", "300ms", "-o", "seccomp"]);
    let s = json(&seccomp);
    assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(s["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
    assert!(s["syscalls"][0]["names"].as_array().unwrap().iter().all(|n| n.is_string()));

    let wrong = osl(&["ps", "--local", "-o", "seccomp"]);
    assert_eq!(code(&wrong), 2, "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("-o seccomp turns a syscall profile into a seccomp profile"));
    drop(kid);
}

#[test]
fn strace_of_a_missing_process_exits_3_and_an_impossible_backend_5() {
    let missing = osl(&["strace", "--local", "--pid", "999999999", "--backend", "ptrace", "--duration", "1s"]);
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    assert!(stderr(&missing).starts_with("error: process 999999999 not found"), "{}", stderr(&missing));
    let me = std::process::id().to_string();
    let denied = as_nobody(&["strace", "--local", "--pid", &me, "--backend", "ebpf", "--duration", "1s"]);
    assert_eq!(code(&denied), 5, "{}", stderr(&denied));
    // The cause the start-up trial measured: bpf() reached the kernel and was refused for want of capabilities.
    let why = stderr(&denied);
    assert!(why.contains("the ebpf backend cannot run here: creating a BPF map failed (EPERM"), "{why}");
    assert!(why.contains("needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"), "{why}");

    // The default backend falls back to ptrace and says why (a target of nobody's own, which
    // an agent running as nobody may trace).
    let mut sleeper = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "30"])
        .spawn()
        .expect("setpriv sleep");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let target = sleeper.id().to_string();
    let auto = as_nobody(&["strace", "--local", "--pid", &target, "--duration", "300ms"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code(&auto), 0, "{}", stderr(&auto));
    let head = String::from_utf8_lossy(&auto.stdout).lines().next().unwrap_or_default().to_string();
    assert!(
        head.starts_with(&format!(
            "pid {target} · backend ptrace (ebpf is unavailable (creating a BPF map failed (EPERM"
        )),
        "{head}"
    );
}

#[test]
fn an_agent_with_a_token_refuses_calls_without_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let agent = Arc::new(osl_agent::Agent::new(&osl_agent::Roots::default()));
    let access = osl_agent::server::Access { token: Some("s3cret-token".into()), ..osl_agent::server::Access::open() };
    rt.spawn(osl_agent::server::serve_with_access(listener, agent, access, std::future::pending()));
    let me = std::process::id().to_string();

    let without = osl(&["ps", "--agent", &addr, "--pid", &me]);
    assert_eq!(code(&without), 5, "{}", stderr(&without));
    assert!(stderr(&without).contains("this agent needs a bearer token"), "{}", stderr(&without));
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    };
    let wrong = osl(&["ps", "--agent", &addr, "--pid", &me, "--token-file", &file("wrong", "guess\n")]);
    assert_eq!(code(&wrong), 5, "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("wrong bearer token"), "{}", stderr(&wrong));
    // As `echo s3cret-token > file` or a mounted Secret writes it: the newline is not the token's.
    let right =
        osl(&["ps", "--agent", &addr, "--pid", &me, "-o", "json", "--token-file", &file("right", "s3cret-token\n")]);
    assert_eq!(json(&right)["processes"][0]["pid"], std::process::id());
    let from_env = Command::new(BIN)
        .args(["ps", "--agent", &addr, "--pid", &me, "-o", "json"])
        .env("OSL_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert_eq!(json(&from_env)["processes"][0]["pid"], std::process::id());
    // The file wins over the environment.
    let both = Command::new(BIN)
        .args(["ps", "--agent", &addr, "--pid", &me, "-o", "json", "--token-file", &file("right2", "s3cret-token")])
        .env("OSL_TOKEN", "guess")
        .output()
        .unwrap();
    assert_eq!(json(&both)["processes"][0]["pid"], std::process::id());

    // Never on the command line, where ps shows it to everyone: refused before anything is sent.
    for argv in
        [&["ps", "--agent", &addr, "--token", "s3cret-token"][..], &["ps", "--agent", &addr, "--token=s3cret-token"]]
    {
        let o = osl(argv);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "error: --token takes the token on the command line, where ps shows it to every user: put it in a file \
             and give --token-file PATH, or set OSL_TOKEN\n"
        );
        assert!(o.stdout.is_empty());
    }
    let missing = dir.path().join("missing");
    let o = osl(&["ps", "--agent", &addr, "--token-file", missing.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!("error: cannot read --token-file {}: ", missing.display())),
        "{}",
        stderr(&o)
    );
    let empty = file("empty", "\n");
    let o = osl(&["ps", "--agent", &addr, "--token-file", &empty]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(stderr(&o), format!("error: --token-file {empty} is empty\n"));
    let o = Command::new(BIN).args(["ps", "--agent", &addr]).env("OSL_TOKEN", "").output().unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(stderr(&o), "error: OSL_TOKEN is set but empty\n");
    let help = String::from_utf8(osl(&["--help"]).stdout).unwrap();
    assert!(help.contains("--token-file <PATH>") && !help.contains("--token <"), "{help}");
}

/// A process whose name, command line and open file say "clear the screen" and
/// "flip the line": the tables show the characters escaped, JSON keeps the data.
#[test]
fn what_a_process_names_itself_is_shown_escaped() {
    const CLEAR: &str = "\x1b[2J";
    const FLIP: &str = "\u{202e}";
    let dir = tempfile::tempdir().unwrap();
    // comm is the name the program was run by (at most 15 bytes): a link to bash.
    let name = format!("ev{CLEAR}{FLIP}il");
    let link = dir.path().join(&name);
    std::os::unix::fs::symlink("/bin/bash", &link).unwrap();
    let held = dir.path().join(format!("f{CLEAR}{FLIP}gnp.exe"));
    std::fs::write(&held, "x").unwrap();
    let mut child = Command::new(&link)
        .args(["-c", "exec 3<\"$0\"; echo ready; read -r _", held.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let kid = Kid(child);
    let pid = kid.0.id().to_string();

    // The agent sends the kernel's bytes with controls escaped (\x1b) and the
    // bidi override as it is; the CLI escapes that one, and not the agent's again.
    let shown_name = "ev\\x1b[2J\\u{202e}il".to_string();
    let shown_file = "f\\x1b[2J\\u{202e}gnp.exe".to_string();
    for args in [
        vec!["ps", "--local", "--pid", &pid],
        vec!["ps", "--local", "--pid", &pid, "-o", "wide"],
        vec!["diagnose", "--local", "--pid", &pid, "--blocked", "100ms"],
        vec!["mem", "--local", "--pid", &pid],
        vec!["fds", "--local", "--pid", &pid],
        vec!["blocked", "--local", "--pid", &pid, "--duration", "100ms"],
    ] {
        let o = osl(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(!text.contains('\x1b') && !text.contains(FLIP), "{args:?}: raw in {text:?}");
        let want = if args[0] == "fds" { &shown_file } else { &shown_name };
        assert!(text.contains(want.as_str()), "{args:?}: {want} not in\n{text}");
        if args[0] == "ps" {
            assert!(text.contains(&shown_file), "the command line: {text}");
        }
    }
    let v = json(&osl(&["ps", "--local", "--pid", &pid, "-o", "json"]));
    assert_eq!(v["processes"][0]["comm"], format!("ev\\x1b[2J{FLIP}il"), "JSON is the agent's data, unescaped");
    let fds = json(&osl(&["fds", "--local", "--pid", &pid, "-o", "json"]));
    let target = fds["fds"].as_array().unwrap().iter().find(|f| f["fd"] == 3).unwrap()["target"].clone();
    assert_eq!(target, held.to_str().unwrap().replace('\x1b', "\\x1b"));
    drop(kid);
}

/// The agent's connection drops in the middle of a call, as when it is killed:
/// the CLI says so, instead of "transport error".
#[test]
fn an_agent_gone_mid_call_is_named_so() {
    let kid = sleeper();
    let pid = kid.0.id().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let agent_addr = listener.local_addr().unwrap();
    let agent = Arc::new(osl_agent::Agent::new(&osl_agent::Roots::default()));
    rt.spawn(osl_agent::server::serve(listener, agent, std::future::pending()));
    // A proxy in front of the agent that forwards for a second, then drops both sides.
    let proxy = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = proxy.local_addr().unwrap().to_string();
    let (cut_tx, cut_rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let (mut client, _) = proxy.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(agent_addr).await.unwrap();
        let copied = tokio::io::copy_bidirectional(&mut client, &mut server);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(1), copied).await;
        cut_tx.send(ended.is_err()).unwrap();
    });

    let o = osl(&["blocked", "--agent", &addr, "--pid", &pid, "--duration", "10s"]);
    assert!(cut_rx.recv().unwrap(), "the call was still running when the connection was cut");
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "error: the agent at {addr} went away mid-call: the connection broke, so it was likely killed or restarted\n\
             Caused by:\n  the call ended with gRPC status "
        )),
        "{err}"
    );
    assert!(!err.contains("the agent failed"), "{err}");
    drop(kid);
}

#[path = "k8s/kubernetes.rs"]
mod kubernetes;
