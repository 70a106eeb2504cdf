//! File descriptors against RLIMIT_NOFILE.

use crate::support::TestProc;
use osl_agent::{Agent, Roots};
use osl_proto::v1;

#[test]
fn fds_near_a_lowered_nofile_limit_are_counted_exactly_and_found_critical() {
    let child = TestProc::spawn(&["fds", "60", "64"]);
    let agent = Agent::new(&Roots::default());
    let resp = agent.get_process(v1::GetProcessRequest { pid: child.pid, start_time_ticks: None }).unwrap();
    let fds = resp.process.unwrap().fds.unwrap();
    let on_disk = std::fs::read_dir(format!("/proc/{}/fd", child.pid)).unwrap().count() as u64;
    assert_eq!(on_disk, 63, "60 files + stdin, stdout, stderr");
    assert_eq!(fds.open, Some(63));
    assert_eq!((fds.soft_limit, fds.soft_unlimited), (Some(64), false));
    let f = &resp.findings;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, "fd.near_limit");
    assert_eq!(f[0].severity, v1::Severity::Critical as i32);
    assert_eq!(f[0].pid, Some(child.pid));
    assert_eq!(f[0].evidence["open_fds"], "63");
    assert_eq!(f[0].evidence["soft_limit"], "64");
}

#[test]
fn a_process_far_from_its_limit_has_no_fd_finding() {
    let child = TestProc::spawn(&["fds", "10", "1024"]);
    let agent = Agent::new(&Roots::default());
    let resp = agent.get_process(v1::GetProcessRequest { pid: child.pid, start_time_ticks: None }).unwrap();
    assert_eq!(resp.process.unwrap().fds.unwrap().open, Some(13));
    assert!(resp.findings.is_empty(), "{:?}", resp.findings);
}

mod table {
    use crate::support::TestProc;
    use osl_agent::{Agent, Roots};
    use osl_proto::v1::{self, FdKind, TcpState};
    use std::collections::BTreeMap;
    use std::process::{Command, Stdio};

    fn list(agent: &Agent, pid: i32) -> v1::ListFdsResponse {
        agent.list_fds(v1::ListFdsRequest { pid, ..Default::default() }).unwrap()
    }

    /// `ss -tanp` lines of one pid: state -> count.
    fn ss_states(pid: i32) -> BTreeMap<String, usize> {
        let out = Command::new("ss").args(["-tanp"]).output().expect("ss");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut states = BTreeMap::new();
        for line in text.lines().filter(|l| l.contains(&format!("pid={pid},"))) {
            *states.entry(line.split_whitespace().next().unwrap().to_string()).or_default() += 1;
        }
        states
    }

    /// The default table asks for fdinfo only where it is the fd's detail: the
    /// same fds, kinds and targets, the detail of eventfds and epolls kept, and
    /// no offset or flags read for the rest.
    #[test]
    fn the_table_level_reads_fdinfo_only_for_the_kinds_it_details() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_osl-testproc"));
        cmd.args(["kinds", &server.local_addr().unwrap().port().to_string(), dir.path().to_str().unwrap()]);
        cmd.stderr(Stdio::null());
        let child = TestProc::start(cmd);
        let agent = Agent::new(&Roots::default());
        let ask = |level: v1::FdInfoLevel| {
            let req = v1::ListFdsRequest { pid: child.pid, fdinfo: level as i32, ..Default::default() };
            agent.list_fds(req).unwrap().fds
        };
        let (full, table) = (ask(v1::FdInfoLevel::Full), ask(v1::FdInfoLevel::Table));
        let shape = |fds: &[v1::Fd]| fds.iter().map(|f| (f.fd, f.kind, f.target.clone())).collect::<Vec<_>>();
        assert_eq!(shape(&full), shape(&table));
        let detailed =
            [FdKind::Eventfd, FdKind::Epoll, FdKind::Timerfd, FdKind::Signalfd, FdKind::Inotify, FdKind::Pidfd];
        let mut seen_detail = 0;
        for (f, t) in full.iter().zip(&table) {
            assert!(!f.flags.is_empty(), "full reads every fdinfo: {f:?}");
            if detailed.iter().any(|&k| k as i32 == t.kind) {
                assert!(t.detail.is_some(), "fd {}: {t:?}", t.fd);
                if t.kind != FdKind::Timerfd as i32 {
                    assert_eq!(t.detail, f.detail, "fd {}", t.fd); // a timer's time left moves on
                }
                seen_detail += 1;
            } else {
                assert!(t.flags.is_empty() && t.pos_bytes.is_none(), "fd {} read fdinfo: {t:?}", t.fd);
            }
        }
        assert!(seen_detail >= 2, "the kinds process has an eventfd and an epoll");
    }

    #[test]
    fn every_kind_of_fd_is_reported_exactly() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_osl-testproc"));
        cmd.args(["kinds", &port.to_string(), dir.path().to_str().unwrap()]).stderr(Stdio::null());
        let child = TestProc::start(cmd);
        let listen_port = child.announced[0];
        let client_ports: Vec<i32> = child.announced[1..].to_vec();
        // Keep one connection, close three: the child's ends go to CLOSE_WAIT.
        let accepted: Vec<_> = (0..4).map(|_| server.accept().unwrap().0).collect();
        let kept = accepted.into_iter().next().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ss_states(child.pid).get("CLOSE-WAIT") != Some(&3) {
            assert!(std::time::Instant::now() < deadline, "no CLOSE_WAIT: {:?}", ss_states(child.pid));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }

        let agent = Agent::new(&Roots::default());
        let resp = list(&agent, child.pid);
        let fds = &resp.fds;
        let by_fd: BTreeMap<i32, &v1::Fd> = fds.iter().map(|f| (f.fd, f)).collect();
        let on_disk = std::fs::read_dir(format!("/proc/{}/fd", child.pid)).unwrap().count();
        assert_eq!(fds.len(), 20);
        assert_eq!(on_disk, 20);
        let kind = |k: FdKind| fds.iter().filter(|f| f.kind == k as i32).count();
        // stdin and stdout are pipes from this test, stderr is /dev/null.
        let counts = [
            (FdKind::File, 5),
            (FdKind::Pipe, 4),
            (FdKind::CharDevice, 1),
            (FdKind::Eventfd, 1),
            (FdKind::Epoll, 1),
            (FdKind::Timerfd, 1),
            (FdKind::Socket, 7),
        ];
        for (k, n) in counts {
            assert_eq!(kind(k), n, "{k:?}");
        }
        let summary = resp.process.as_ref().unwrap().fd_summary.as_ref().unwrap();
        assert_eq!(summary.total, 20);
        assert_eq!(summary.by_kind[0], v1::Count { name: "socket".into(), count: 7 });

        // Files, in creation order from fd 3: a.txt, b.log, bad\xff.log, new\nline.txt, gone.tmp.
        let d = dir.path().to_str().unwrap();
        assert_eq!(by_fd[&3].target, format!("{d}/a.txt"));
        assert_eq!(by_fd[&5].target, format!("{d}/bad\\xff.log"));
        assert_eq!(by_fd[&6].target, format!("{d}/new\\nline.txt"));
        let json = serde_json::to_string(&by_fd[&5]).unwrap();
        let back: v1::Fd = serde_json::from_str(&json).unwrap();
        let mut original = format!("{d}/bad").into_bytes();
        original.extend_from_slice(b"\xff.log");
        assert_eq!(osl_proto::text::unescape(&back.target).unwrap(), original, "lossless through JSON");
        let gone = by_fd[&7];
        assert!(gone.deleted);
        assert_eq!(gone.target, format!("{d}/gone.tmp"));
        assert_eq!(gone.size_bytes, Some(12345));
        let on_disk =
            std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(format!("/proc/{}/fd/7", child.pid)).unwrap())
                * 512;
        assert!(on_disk >= 12345);
        assert_eq!((summary.deleted_files, summary.deleted_bytes), (1, on_disk), "the disk it holds, not its size");
        let raw = std::fs::read_to_string(format!("/proc/{}/fdinfo/7", child.pid)).unwrap();
        assert!(raw.contains("flags:\t02100001\n"), "{raw}");
        assert_eq!(gone.flags, ["O_WRONLY", "O_LARGEFILE", "O_CLOEXEC"], "O_CREAT and O_TRUNC act at open only");
        assert_eq!(gone.pos_bytes, Some(12345));

        // pipe 8 (read), 9 (write); eventfd 10; epoll 11; timerfd 12.
        assert_eq!((by_fd[&8].kind, by_fd[&9].kind), (FdKind::Pipe as i32, FdKind::Pipe as i32));
        assert_eq!(by_fd[&10].detail.as_ref().unwrap().eventfd_count, Some(5));
        let watched: Vec<i32> = by_fd[&11].detail.as_ref().unwrap().epoll_targets.iter().map(|t| t.fd).collect();
        assert_eq!(watched.len(), 2);
        assert!(watched.contains(&10) && watched.contains(&8), "{watched:?}");
        let timer = by_fd[&12].detail.as_ref().unwrap();
        assert_eq!((timer.timerfd_interval_nsec, timer.timerfd_clockid), (Some(1_000_000_000), Some(1)));

        // The socketpair, 13 and 14.
        for fd in [13, 14] {
            let s = by_fd[&fd].socket.as_ref().unwrap();
            assert_eq!(
                (s.protocol.as_str(), s.unix_type.as_str(), s.unix_state.as_str()),
                ("unix", "stream", "connected")
            );
        }
        // The listener, 15.
        let l = by_fd[&15].socket.as_ref().unwrap();
        assert_eq!((l.protocol.as_str(), l.tcp_state), ("tcp", TcpState::Listen as i32));
        assert_eq!(l.local, format!("127.0.0.1:{listen_port}"));
        assert_eq!(l.accept_queue, Some(0));
        let ss_backlog = Command::new("ss").args(["-ltnH", &format!("sport = :{listen_port}")]).output().unwrap();
        let backlog: u32 =
            String::from_utf8_lossy(&ss_backlog.stdout).split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(l.accept_backlog, Some(backlog), "the backlog as ss shows it");

        // The connections, 16..=19: the first kept (ESTABLISHED), three closed by the server.
        for (i, fd) in (16..=19).enumerate() {
            let s = by_fd[&fd].socket.as_ref().unwrap();
            assert_eq!(s.local, format!("127.0.0.1:{}", client_ports[i]));
            assert_eq!(s.remote, format!("127.0.0.1:{port}"));
            let want = if i == 0 { TcpState::Established } else { TcpState::CloseWait };
            assert_eq!(s.tcp_state, want as i32, "fd {fd}");
        }
        let tcp: BTreeMap<&str, u64> = summary.by_tcp_state.iter().map(|c| (c.name.as_str(), c.count)).collect();
        assert_eq!(tcp, BTreeMap::from([("close_wait", 3), ("established", 1), ("listen", 1)]));
        let ss = ss_states(child.pid);
        assert_eq!(ss, BTreeMap::from([("CLOSE-WAIT".into(), 3), ("ESTAB".into(), 1), ("LISTEN".into(), 1)]));
        assert_eq!(summary.top_remotes[0], v1::Endpoint { remote: format!("127.0.0.1:{port}"), connections: 4 });

        let ids: Vec<(&str, i32)> = resp.findings.iter().map(|f| (f.id.as_str(), f.severity)).collect();
        assert_eq!(
            ids,
            [("socket.close_wait", v1::Severity::Warn as i32), ("fd.deleted_file", v1::Severity::Info as i32)]
        );
        assert!(resp.findings[0].message.contains(&format!("3 to 127.0.0.1:{port}")), "{}", resp.findings[0].message);

        // Filters.
        let only = |kinds: Vec<i32>, tcp_states: Vec<i32>| {
            agent.list_fds(v1::ListFdsRequest { pid: child.pid, kinds, tcp_states, ..Default::default() }).unwrap().fds
        };
        assert_eq!(only(vec![FdKind::Socket as i32], vec![]).len(), 7);
        let cw: Vec<i32> = only(vec![], vec![TcpState::CloseWait as i32]).iter().map(|f| f.fd).collect();
        assert_eq!(cw, [17, 18, 19]);
        drop(kept);
    }
}

mod trend {
    use crate::support::TestProc;
    use osl_agent::trend::FdSampler;
    use osl_agent::{Agent, Roots};
    use osl_proto::v1;
    use std::time::Duration;

    fn sampled(args: &[&str]) -> (TestProc, v1::ListFdsResponse) {
        let child = TestProc::spawn(args);
        let agent = Agent::new(&Roots::default()).with_fd_sampler(FdSampler::new(Duration::from_secs(60), 1000));
        for _ in 0..16 {
            agent.sample_fds();
            std::thread::sleep(Duration::from_millis(100));
        }
        let resp = agent.list_fds(v1::ListFdsRequest { pid: child.pid, ..Default::default() }).unwrap();
        (child, resp)
    }

    #[test]
    fn a_socket_every_50ms_is_a_leak_with_an_eta() {
        let (_child, resp) = sampled(&["leak", "50", "400"]);
        let p = resp.process.unwrap();
        let t = p.fd_trend.expect("a trend after 16 samples");
        assert!(t.growing, "{t:?}");
        assert!((12.0..=28.0).contains(&t.slope_per_sec), "about 20 sockets a second: {t:?}");
        let eta = t.eta_to_limit_sec.expect("an ETA");
        let expected = (400 - t.last) as f64 / t.slope_per_sec;
        assert!((eta as f64 - expected).abs() <= 1.0, "{eta} vs {expected}");
        let leak = resp.findings.iter().find(|f| f.id == "fd.leak").expect("fd.leak");
        assert_eq!(leak.severity, v1::Severity::Critical as i32, "{}", leak.message);
        assert!(leak.message.contains("socket"), "{}", leak.message);
    }

    #[test]
    fn a_steady_process_is_not_a_leak() {
        let (_child, resp) = sampled(&["fds", "10", "400"]);
        let t = resp.process.unwrap().fd_trend.expect("a trend after 16 samples");
        assert!(!t.growing, "{t:?}");
        assert_eq!(t.eta_to_limit_sec, None);
        assert_eq!((t.first, t.last), (13, 13));
        assert!(resp.findings.iter().all(|f| f.id != "fd.leak"), "{:?}", resp.findings);
    }
}

mod races {
    use crate::support::TestProc;
    use osl_agent::error::AgentError;
    use osl_agent::{Agent, Roots};
    use osl_proto::v1;

    #[test]
    fn fds_closing_during_the_read_never_fail_it() {
        let child = TestProc::spawn(&["churn"]);
        let agent = Agent::new(&Roots::default());
        let mut closed = 0;
        for _ in 0..200 {
            let resp = agent.list_fds(v1::ListFdsRequest { pid: child.pid, ..Default::default() }).unwrap();
            let s = resp.process.unwrap().fd_summary.unwrap();
            // An fd that closed mid-read is dropped and counted, never half-reported.
            for fd in &resp.fds {
                assert!(!fd.flags.is_empty(), "an fd without its fdinfo: {fd:?}");
                assert!(fd.kind != v1::FdKind::Other as i32 && fd.kind != 0, "an fd without a kind: {fd:?}");
            }
            closed += s.closed_during_read;
        }
        eprintln!("{closed} fds closed between readdir and readlink/fdinfo in 200 reads");
    }

    #[test]
    fn a_process_exiting_during_the_read_is_not_found_or_marked() {
        for _ in 0..20 {
            let mut child = std::process::Command::new("sh")
                .args(["-c", "exec 3</dev/null 4</dev/null; sleep 0.01"])
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            let agent = Agent::new(&Roots::default());
            for _ in 0..50 {
                match agent.list_fds(v1::ListFdsRequest { pid, ..Default::default() }) {
                    Ok(r) => {
                        let p = r.process.unwrap();
                        assert!(
                            p.fd_summary.is_some() || p.exited_mid_read || p.state == v1::ProcessState::Zombie as i32,
                            "{p:?}"
                        );
                    }
                    Err(AgentError::ProcessNotFound { .. }) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            child.wait().unwrap();
        }
    }
}

/// A process in a network namespace of its own: its sockets are resolved through
/// its /proc/PID/net tables (sock_diag answers for the agent's namespace only).
#[test]
fn sockets_of_another_network_namespace_are_resolved_through_its_proc_tables() {
    use osl_agent::{Agent, Roots};
    use osl_proto::v1::{self, TcpState};
    use std::process::Command;
    if !crate::support::privileged("sockets_of_another_network_namespace_are_resolved_through_its_proc_tables") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_osl-testproc");
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "sh", "-c", &format!("ip link set lo up && exec {bin} many 40")]);
    let child = crate::support::TestProc::start(cmd);
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(netns(&child.pid.to_string()), netns("self"), "the child has a namespace of its own");
    let agent = Agent::new(&Roots::default());
    let resp = agent.list_fds(v1::ListFdsRequest { pid: child.pid, ..Default::default() }).unwrap();
    let sockets: Vec<&v1::Socket> = resp.fds.iter().filter_map(|f| f.socket.as_ref()).collect();
    assert_eq!(sockets.len(), 12 + 6 + 1, "6 socketpairs, 3 connections (both ends), 1 listener");
    assert!(sockets.iter().all(|s| !s.protocol.is_empty()), "every socket found in the namespace's tables");
    let tcp = |state: TcpState| sockets.iter().filter(|s| s.protocol == "tcp" && s.tcp_state == state as i32).count();
    assert_eq!((tcp(TcpState::Established), tcp(TcpState::Listen)), (6, 1));
    let listener = sockets.iter().find(|s| s.tcp_state == TcpState::Listen as i32).unwrap();
    assert_eq!(listener.accept_backlog, None, "/proc/net/tcp does not show a listener's backlog");
    assert_eq!(listener.accept_queue, Some(0));
}

mod blocked {
    use crate::support::TestProc;
    use osl_agent::{Agent, Roots};
    use osl_proto::v1;

    #[test]
    fn each_thread_is_found_in_the_syscall_it_blocks_in() {
        let child = TestProc::spawn(&["blockers"]);
        let agent = Agent::new(&Roots::default());
        let req = v1::SampleBlockedRequest { pid: child.pid, duration_msec: 500, rate_hz: 100, ..Default::default() };
        let resp = agent.sample_blocked(req).unwrap();
        assert!((40..=51).contains(&resp.samples), "about 50 samples: {}", resp.samples);
        let thread = |comm: &str| {
            resp.threads.iter().find(|t| t.comm == comm).unwrap_or_else(|| panic!("{comm}: {:?}", resp.threads))
        };
        for (comm, syscall) in [("reader", "read"), ("locker", "futex"), ("sleeper", "clock_nanosleep")] {
            let t = thread(comm);
            let top = &t.by_syscall[0];
            assert_eq!(top.name, syscall, "{comm}: {t:?}");
            assert!(top.count * 100 >= u64::from(t.samples) * 95, "{comm} in {syscall} nearly always: {t:?}");
            assert!(!t.by_wchan.is_empty() || comm == "locker", "{comm} has a wchan: {t:?}");
        }
        // The main thread waits on stdin: read too.
        let total = resp.total.unwrap();
        assert_eq!(
            total.by_syscall.iter().find(|c| c.name == "read").map(|c| c.count),
            Some(2 * u64::from(resp.samples))
        );
        let too_long = v1::SampleBlockedRequest { pid: child.pid, duration_msec: 600_000, ..Default::default() };
        assert!(matches!(agent.sample_blocked(too_long), Err(osl_agent::error::AgentError::InvalidArgument(_))));
    }

    #[test]
    fn diagnose_samples_every_process_at_once_when_asked() {
        let a = TestProc::spawn(&["blockers"]);
        let b = TestProc::spawn(&["blockers"]);
        let agent = Agent::new(&Roots::default());
        let filter = Some(v1::Filter { pids: vec![a.pid, b.pid], ..Default::default() });
        let started = std::time::Instant::now();
        let resp = agent.diagnose(v1::DiagnoseRequest { filter: filter.clone(), blocked_sample_msec: 300 }).unwrap();
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(900),
            "sampled side by side, not one after the other: {took:?}"
        );
        for p in &resp.processes {
            let s = p.blocked.as_ref().unwrap_or_else(|| panic!("pid {} sampled", p.pid));
            // Thread-samples: about 30 rounds at 100 Hz of 4 threads.
            assert!(s.samples >= 80 && s.samples % 4 == 0, "{}", s.samples);
            let count = |name: &str| s.by_syscall.iter().find(|c| c.name == name).map_or(0, |c| c.count);
            // Main thread and reader in read, locker in futex, sleeper in clock_nanosleep.
            let n = u64::from(s.samples / 4);
            assert_eq!(count("read"), 2 * n, "{s:?}");
            assert!(count("futex") * 100 >= n * 95 && count("clock_nanosleep") * 100 >= n * 90, "{s:?}");
        }
        let plain = agent.diagnose(v1::DiagnoseRequest { filter, blocked_sample_msec: 0 }).unwrap();
        assert!(plain.processes.iter().all(|p| p.blocked.is_none()), "not asked, not sampled");
        let too_long = v1::DiagnoseRequest { blocked_sample_msec: 6000, ..Default::default() };
        assert!(matches!(agent.diagnose(too_long), Err(osl_agent::error::AgentError::InvalidArgument(_))));
    }

    #[test]
    fn a_process_that_exits_while_sampled_keeps_its_samples() {
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let agent = Agent::new(&Roots::default());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let req =
            v1::SampleBlockedRequest { pid: child.id() as i32, duration_msec: 2000, rate_hz: 50, ..Default::default() };
        let resp = agent.sample_blocked(req).unwrap();
        child.wait().unwrap();
        assert!(resp.exited, "{resp:?}");
        assert!(resp.samples > 3 && resp.samples < 30, "sampled until the exit, not for 2 s: {}", resp.samples);
        assert_eq!(resp.threads[0].by_syscall[0].name, "clock_nanosleep");
    }
}
