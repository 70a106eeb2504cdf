//! Syscall profiles through the agent's API: exact counts from both backends on
//! the same deterministic workload, strace's names, findings, one profile per
//! process, and a partial result when the target dies.

use osl_agent::Agent;
use osl_agent::error::AgentError;
use osl_agent::snapshot::Roots;
use osl_proto::v1;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

struct Workload {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    pid: i32,
}

impl Workload {
    fn spawn(getppid: u32, openat: u32) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_osl-syscalls"))
            .args([getppid.to_string(), openat.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready"), "{line:?}");
        let pid = child.id() as i32;
        Self { child, stdin, out, pid }
    }

    /// Sends "go" once the profile has started, and waits for "done".
    fn go_after(&mut self, delay: Duration) -> std::thread::JoinHandle<()> {
        let mut stdin = self.stdin.try_clone_for_test();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            writeln!(stdin, "go").unwrap();
        })
    }

    fn expect_done(&mut self) {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait CloneStdin {
    fn try_clone_for_test(&self) -> std::fs::File;
}

impl CloneStdin for ChildStdin {
    fn try_clone_for_test(&self) -> std::fs::File {
        use std::os::fd::AsFd;
        std::fs::File::from(self.as_fd().try_clone_to_owned().unwrap())
    }
}

fn request(pid: i32, backend: v1::ProfileBackend, duration_msec: u32) -> v1::ProfileSyscallsRequest {
    v1::ProfileSyscallsRequest {
        pid,
        duration_msec,
        backend: backend as i32,
        threads: true,
        progress_msec: 200,
        ..Default::default()
    }
}

fn stat<'a>(p: &'a v1::SyscallProfile, name: &str) -> &'a v1::SyscallStat {
    p.syscalls.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} not in {:#?}", p.syscalls))
}

/// The workload's exact counts, whichever backend counted them.
fn assert_exact(p: &v1::SyscallProfile, getppid: u64, openat: u64, pid: i32) {
    assert!(!p.partial, "{}", p.partial_reason);
    assert_eq!(p.lost_events, 0);
    let g = stat(p, "getppid");
    assert_eq!((g.calls, g.errors), (getppid, 0));
    let o = stat(p, "openat");
    assert_eq!((o.calls, o.errors), (openat, openat));
    assert_eq!(o.errnos, [v1::Count { name: "ENOENT".into(), count: openat }]);
    assert!(g.min_nsec <= g.max_nsec && g.total_nsec >= g.calls * g.min_nsec);
    // Four workers made them all, a quarter each; the main thread none.
    let workers: Vec<&v1::ThreadProfile> =
        p.threads.iter().filter(|t| t.syscalls.iter().any(|s| s.name == "getppid")).collect();
    assert_eq!(workers.len(), 4, "{:#?}", p.threads);
    for t in workers {
        assert_eq!(t.pid, pid);
        assert_ne!(t.tid, pid);
        let n = t.syscalls.iter().find(|s| s.name == "getppid").unwrap().calls;
        assert_eq!(n, getppid / 4);
    }
    let storm = p.findings.iter().find(|f| f.id == "syscall.error_storm").expect("the ENOENT storm is a finding");
    assert!(storm.message.starts_with(&format!("openat failed {openat} of {openat} calls")), "{}", storm.message);
    assert_eq!(p.pids, [pid]);
    assert_eq!(p.arch, std::env::consts::ARCH);
}

#[test]
fn ptrace_counts_exactly_through_the_agent() {
    let agent = Agent::new(&Roots::default());
    let mut w = Workload::spawn(2000, 500);
    let go = w.go_after(Duration::from_millis(300));
    let mut ticks = 0;
    let p = agent
        .profile_syscalls(request(w.pid, v1::ProfileBackend::Ptrace, 1500), |t| {
            ticks += t.is_some() as u32;
            true
        })
        .unwrap();
    go.join().unwrap();
    w.expect_done();
    assert_eq!(p.backend, v1::ProfileBackend::Ptrace as i32);
    assert_eq!(p.backend_reason, "asked for");
    assert_exact(&p, 2000, 500, w.pid);
    assert!(ticks >= 5, "progress every 200 ms over 1.5 s: {ticks}");
}

#[test]
fn a_second_profile_of_the_same_process_is_refused_and_a_dead_target_gives_a_partial_result() {
    let agent = std::sync::Arc::new(Agent::new(&Roots::default()));
    let mut w = Workload::spawn(2000, 500);
    let pid = w.pid;
    let first = {
        let agent = agent.clone();
        std::thread::spawn(move || agent.profile_syscalls(request(pid, v1::ProfileBackend::Ptrace, 10_000), |_| true))
    };
    std::thread::sleep(Duration::from_millis(300));
    let second = agent.profile_syscalls(request(pid, v1::ProfileBackend::Ptrace, 1000), |_| true);
    match second {
        Err(e @ AgentError::ProfileBusy { .. }) => {
            assert!(e.to_string().starts_with(&format!("process {pid} is already being profiled (ptrace")), "{e}");
            assert_eq!(osl_agent::convert::status_from(&e).code(), tonic::Code::FailedPrecondition);
        }
        other => panic!("the second profile ran: {other:?}"),
    }
    w.child.kill().unwrap();
    let p = first.join().unwrap().unwrap();
    assert!(p.partial);
    assert_eq!(p.partial_reason, "the target exited before the end");
    assert!(p.duration_msec < 5000, "ended with the target: {} ms", p.duration_msec);
    // Free again once the first ended.
    let again = agent.profile_syscalls(request(pid, v1::ProfileBackend::Ptrace, 100), |_| true);
    assert!(matches!(again, Err(AgentError::ProcessNotFound { .. })), "{again:?}");
}

#[test]
fn a_client_that_goes_away_ends_the_profile_and_the_target_runs_on() {
    let agent = Agent::new(&Roots::default());
    let mut w = Workload::spawn(2000, 500);
    let started = std::time::Instant::now();
    let mut checks = 0;
    let p = agent
        .profile_syscalls(request(w.pid, v1::ProfileBackend::Ptrace, 30_000), |_| {
            checks += 1;
            checks < 10
        })
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(p.partial);
    assert_eq!(p.partial_reason, "the client went away");
    writeln!(w.stdin, "go").unwrap();
    w.expect_done();
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
    assert!(status.contains("TracerPid:\t0\n"), "detached");
}

#[test]
fn bad_requests_get_clear_errors() {
    let agent = Agent::new(&Roots::default()).with_profile_limits(Duration::from_secs(10), 4);
    let me = std::process::id() as i32;
    let err = |req| agent.profile_syscalls(req, |_| true).unwrap_err().to_string();
    assert_eq!(
        err(request(me, v1::ProfileBackend::Ptrace, 1000)),
        "invalid argument: the agent does not profile itself"
    );
    let w = Workload::spawn(2000, 500);
    assert_eq!(
        err(request(w.pid, v1::ProfileBackend::Ptrace, 11_000)),
        "invalid argument: profiles are capped at 10 s in this agent (--max-profile-duration); asked 11 s"
    );
    assert_eq!(
        err(request(0, v1::ProfileBackend::Ptrace, 1000)),
        "invalid argument: profile what? give a pid or a container id"
    );
    assert_eq!(err(request(999_999_999, v1::ProfileBackend::Ptrace, 1000)), "process 999999999 not found");
    let bad_backend = v1::ProfileSyscallsRequest { backend: 9, ..request(w.pid, v1::ProfileBackend::Ptrace, 1000) };
    assert_eq!(err(bad_backend), "invalid argument: unknown backend 9");
}

#[test]
fn ebpf_counts_exactly_in_the_kernel_without_stopping_the_target() {
    if !crate::support::privileged("ebpf_counts_exactly_in_the_kernel_without_stopping_the_target") {
        return;
    }
    let agent = Agent::new(&Roots::default());
    let mut w = Workload::spawn(20_000, 5_000);
    let go = w.go_after(Duration::from_millis(300));
    let p = agent.profile_syscalls(request(w.pid, v1::ProfileBackend::Unspecified, 1500), |_| true).unwrap();
    go.join().unwrap();
    w.expect_done();
    assert_eq!(p.backend, v1::ProfileBackend::Ebpf as i32, "root may load BPF: the agent picks ebpf");
    assert!(p.backend_reason.contains("no stops"), "{}", p.backend_reason);
    assert_exact(&p, 20_000, 5_000, w.pid);
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
    assert!(status.contains("TracerPid:\t0\n"), "never traced");
}

#[test]
fn a_container_is_profiled_whole() {
    if !crate::support::privileged("a_container_is_profiled_whole") {
        return;
    }
    // A cgroup whose path carries a container id, as a runtime's does.
    let id = format!("{:08x}", std::process::id()).repeat(8);
    let cg = crate::support::V1Cgroup::create(&id, 256 * crate::support::MIB);
    let mut a = Workload::spawn(2000, 500);
    let mut b = Workload::spawn(2000, 500);
    cg.add(a.pid);
    cg.add(b.pid);
    let outsider = Workload::spawn(2000, 500); // same program, not in the container
    let agent = Agent::new(&Roots::default());
    let (go_a, go_b) = (a.go_after(Duration::from_millis(300)), b.go_after(Duration::from_millis(300)));
    let req =
        v1::ProfileSyscallsRequest { container_id: id[..12].to_string(), duration_msec: 1500, ..Default::default() };
    let p = agent.profile_syscalls(req, |_| true).unwrap();
    go_a.join().unwrap();
    go_b.join().unwrap();
    a.expect_done();
    b.expect_done();
    let mut pids = p.pids.clone();
    pids.sort();
    let mut want = vec![a.pid, b.pid];
    want.sort();
    assert_eq!(pids, want, "the container's processes, not the outsider {}", outsider.pid);
    let g = stat(&p, "getppid");
    assert_eq!((g.calls, g.errors), (4000, 0));
    let o = stat(&p, "openat");
    assert_eq!((o.calls, o.errors), (1000, 1000));
}

/// Reads `n` bytes from a pipe, `m` from a file and `k` answers from a TCP peer that
/// sleeps `SLEEP_MS` before each, and checks what each backend says about each fd.
fn time_by_fd(backend: v1::ProfileBackend) {
    let (n, m, k, sleep_ms): (u64, u64, u64, u64) = (2000, 1000, 100, 20);
    let agent = Agent::new(&Roots::default());
    let mut w = Workload::spawn(2000, 500);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    writeln!(w.stdin, "fdio {n} {m} {k} {sleep_ms} {}", path.display()).unwrap();
    let mut line = String::new();
    w.out.read_line(&mut line).unwrap();
    let fds: Vec<i32> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
    let [pipe, file, tcp] = fds[..] else { panic!("{line:?}") };
    let mut stdin = w.stdin.try_clone_for_test();
    let run = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        writeln!(stdin, "run").unwrap();
    });
    let p = agent.profile_syscalls(request(w.pid, backend, 3500), |_| true).unwrap();
    run.join().unwrap();
    w.expect_done();
    assert!(!p.partial, "{}", p.partial_reason);
    let on = |fd: i32| {
        let f = p.fds.iter().find(|f| f.pid == w.pid && f.fd == fd);
        f.unwrap_or_else(|| panic!("fd {fd} not in {:#?}", p.fds))
    };
    let calls = |f: &v1::FdStat, name: &str| f.syscalls.iter().find(|s| s.name == name).map_or(0, |s| s.calls);
    let (p_, f_, t_) = (on(pipe), on(file), on(tcp));
    // Besides the reads: its close at the end (and a debug build's fcntl check before it).
    assert_eq!((calls(p_, "read"), calls(p_, "close"), p_.kind), (n, 1, v1::FdKind::Pipe as i32), "{p_:?}");
    assert!(p_.target.starts_with("pipe:["), "{}", p_.target);
    assert_eq!((calls(f_, "read"), f_.target.as_str()), (m, path.to_str().unwrap()), "{f_:?}");
    assert_eq!(f_.kind, v1::FdKind::File as i32);
    // std's TcpStream reads with recv and writes with send.
    assert_eq!((calls(t_, "recvfrom"), calls(t_, "sendto")), (k, k), "{t_:?}");
    assert!(t_.target.starts_with("tcp 127.0.0.1:") && t_.target.ends_with("(ESTABLISHED)"), "{}", t_.target);
    // Every recv of an answer waited sleep_ms (20 ms): the [16.8, 33.6) ms bucket.
    let read_ns: u64 = t_.syscalls.iter().find(|s| s.name == "recvfrom").unwrap().total_nsec;
    assert!(read_ns >= k * sleep_ms * 1_000_000, "{read_ns}");
    assert!(t_.latency_buckets.len() == 25 && t_.latency_buckets[24] == k, "{:?}", t_.latency_buckets);
    assert!(t_.p99_nsec >= sleep_ms * 1_000_000 && t_.p99_nsec <= t_.max_nsec, "{t_:?}");
    let read = stat(&p, "recvfrom");
    assert!(read.top_fds.first().is_some_and(|t| t.name == t_.target), "{:?}", read.top_fds);
    assert_eq!(read.latency_buckets.iter().sum::<u64>(), read.calls);
    // The thread spent well over half the profile on the socket.
    let slow = p.findings.iter().find(|f| f.id == "syscall.slow_fd").expect("a slow_fd finding");
    assert!(slow.message.contains(&format!("on {} (fd {tcp})", t_.target)), "{}", slow.message);
    assert!(slow.message.starts_with(&format!("thread {} spent", w.pid)), "{}", slow.message);
    // The slowest calls: the reads of answers (each waits for the peer's sleep, so a little
    // longer than it), the peer's sleeps, and under ptrace the calls that were waiting at attach
    // and restarted (the read of `run`, the peer's first read).
    assert_eq!(p.slowest.len(), 10);
    assert!(p.slowest.iter().all(|c| c.duration_nsec >= sleep_ms * 1_000_000), "{:#?}", p.slowest);
    assert!(p.slowest.windows(2).all(|w| w[0].duration_nsec >= w[1].duration_nsec));
    let answer = p.slowest.iter().find(|c| c.syscall == "recvfrom" && c.fd == tcp);
    let answer = answer.unwrap_or_else(|| panic!("no read of an answer in {:#?}", p.slowest));
    assert_eq!((answer.target.as_str(), answer.result, answer.pid), (t_.target.as_str(), 1, w.pid));
    assert!(answer.offset_nsec >= 250_000_000 && answer.offset_nsec < 3_500_000_000, "{answer:?}");
    assert_eq!(p.slowest_missed, 0);
}

#[test]
fn ptrace_times_each_fd_target() {
    time_by_fd(v1::ProfileBackend::Ptrace);
}

#[test]
fn ebpf_times_each_fd_target() {
    if crate::support::privileged("ebpf_times_each_fd_target") {
        time_by_fd(v1::ProfileBackend::Ebpf);
    }
}
