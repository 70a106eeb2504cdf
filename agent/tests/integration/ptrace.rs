//! End-to-end tests of the ptrace profiler against real processes (run as root).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use osl_agent::profile::counts::Counts;
use osl_agent::profile::ptrace::{self, PtraceError};

/// The agent's /proc: the tracer reads its targets' threads there.
fn proc_root() -> &'static std::path::Path {
    std::path::Path::new("/proc")
}

const GETPPID: u32 = libc::SYS_getppid as u32;
const OPENAT: u32 = libc::SYS_openat as u32;
const EXECVE: u32 = libc::SYS_execve as u32;
const LONG: Duration = Duration::from_secs(60);

/// ptrace is slow on small VMs and the timing test needs the CPU: one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lines of a child's stdout or stderr, read on a helper thread.
fn lines<R: std::io::Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn expect_line(rx: &Receiver<String>, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no expected line within {timeout:?}: {e}"),
        }
    }
}

struct Workload {
    pid: i32,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
}

impl Workload {
    fn spawn() -> Self {
        Self::spawn_with(&[])
    }

    /// `args`: GETPPID OPENAT counts instead of 2000 500.
    fn spawn_with(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_osl-syscalls"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = lines(child.stdout.take().unwrap());
        let ready = expect_line(&out, |l| l.starts_with("ready "), LONG);
        let pid = ready["ready ".len()..].parse().unwrap();
        assert_eq!(pid, child.id() as i32);
        Workload { pid, child, stdin, out }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn expect(&self, line: &str) {
        expect_line(&self.out, |l| l == line, LONG);
    }

    /// Closes stdin and returns the exit code.
    fn finish(mut self) -> i32 {
        drop(self.stdin.take());
        self.child.wait().unwrap().code().expect("workload killed by a signal")
    }
}

fn tids(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn status_field(pid: i32, tid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("").trim().to_string()
}

/// The process whose thread traces `pid` (TracerPid is the tracing thread's id).
fn tracer_process(pid: i32) -> i32 {
    let tracer_tid: i32 = status_field(pid, pid, "TracerPid:").parse().unwrap();
    status_field(tracer_tid, tracer_tid, "Tgid:").parse().unwrap()
}

fn assert_untraced(pid: i32) {
    let t = tids(pid);
    assert!(!t.is_empty(), "process {pid} is gone");
    for tid in t {
        assert_eq!(status_field(pid, tid, "TracerPid:"), "0", "thread {tid} still traced");
    }
}

/// State letters of every thread (R, S, t, T, ...).
fn states(pid: i32) -> Vec<char> {
    tids(pid).into_iter().filter_map(|tid| status_field(pid, tid, "State:").chars().next()).collect()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// (calls, errors) of one syscall summed over threads.
fn totals(c: &Counts, nr: u32) -> (u64, u64) {
    c.syscalls.iter().filter(|s| s.nr == nr).fold((0, 0), |(n, e), s| (n + s.calls, e + s.errors))
}

/// kill(2) with a raw signal number (nix's `Signal` has no real-time signals).
fn kill_raw(pid: i32, sig: libc::c_int) -> i32 {
    Command::new("kill").args([format!("-{sig}"), pid.to_string()]).status().unwrap().code().unwrap()
}

fn kill(pid: i32, sig: Signal) {
    nix::sys::signal::kill(Pid::from_raw(pid), sig).unwrap();
}

/// The integrator shares a Session across tasks.
#[allow(dead_code)]
fn session_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ptrace::Session>();
    check::<ptrace::Outcome>();
    check::<PtraceError>();
}

#[test]
fn a_counts_exact_and_leaves_target_running() {
    let _g = serial();
    let mut w = Workload::spawn();
    let session = ptrace::start(w.pid, proc_root()).unwrap();
    assert_eq!(tracer_process(w.pid), std::process::id() as i32);
    // The tracer thread only waits for its tracees, never for the rest of the process's children.
    assert!(Command::new("/bin/true").status().unwrap().success());
    w.send("go");
    w.expect("done");
    let snap = session.snapshot();
    let out = session.stop().unwrap();
    assert_eq!(totals(&snap, GETPPID), (2000, 0), "snapshot after done");

    let c = &out.counts;
    assert_eq!(totals(c, GETPPID), (2000, 0));
    let workers: Vec<u32> = c.syscalls.iter().filter(|s| s.nr == GETPPID).map(|s| s.tid).collect();
    assert_eq!(workers.len(), 4, "getppid spread over 4 worker tids: {workers:?}");
    assert!(workers.iter().all(|&t| t != w.pid as u32));
    assert!(c.syscalls.iter().all(|s| s.tgid == w.pid as u32));
    for s in c.syscalls.iter().filter(|s| s.nr == GETPPID) {
        assert_eq!(s.calls, 500);
        assert!(s.min_ns > 0 && s.min_ns <= s.max_ns && s.total_ns >= s.calls * s.min_ns);
    }
    assert_eq!(totals(c, OPENAT), (500, 500));
    let openat_errnos: Vec<_> = c.errnos.iter().filter(|e| e.nr == OPENAT).map(|e| (e.nr, e.errno, e.count)).collect();
    assert_eq!(openat_errnos, vec![(OPENAT, libc::ENOENT as u32, 500)]);
    assert_eq!(c.lost, 0);
    assert!(out.threads_traced >= 5, "threads_traced = {}", out.threads_traced);
    assert!(!out.target_exited);

    assert_untraced(w.pid);
    w.send("sigs");
    w.expect("usr1 0 rt 0");
    assert_eq!(w.finish(), 0);
}

/// Parses `strace -c` output into (calls, errors) for one syscall name.
fn strace_row(summary: &str, name: &str) -> (u64, u64) {
    for line in summary.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.last() == Some(&name) && (f.len() == 5 || f.len() == 6) {
            let errors = if f.len() == 6 { f[4].parse().unwrap() } else { 0 };
            return (f[3].parse().unwrap(), errors);
        }
    }
    panic!("{name} not in strace summary:\n{summary}");
}

#[test]
fn b_agrees_with_strace() {
    let _g = serial();
    let ours = {
        let mut w = Workload::spawn();
        let session = ptrace::start(w.pid, proc_root()).unwrap();
        usr1_handled(&mut w);
        w.send("go");
        w.expect("done");
        let out = session.stop().unwrap();
        assert_eq!(w.finish(), 0);
        out.counts
    };

    let mut w = Workload::spawn();
    let summary_path = std::env::temp_dir().join(format!("osl-ptrace-strace-{}.txt", w.pid));
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-w", "-o"])
        .arg(&summary_path)
        .args(["-p", &w.pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(strace.stderr.take().unwrap());
    expect_line(&err, |l| l.contains("attached"), LONG);
    usr1_handled(&mut w);
    w.send("go");
    w.expect("done");
    kill(strace.id() as i32, Signal::SIGINT);
    strace.wait().unwrap(); // 130: strace re-raises SIGINT
    let summary = std::fs::read_to_string(&summary_path).unwrap();
    let _ = std::fs::remove_file(&summary_path);
    assert_untraced(w.pid);
    assert_eq!(w.finish(), 0);

    assert_eq!(strace_row(&summary, "getppid"), (2000, 0));
    assert_eq!(strace_row(&summary, "openat"), (500, 500));
    assert_eq!(totals(&ours, GETPPID), strace_row(&summary, "getppid"));
    assert_eq!(totals(&ours, OPENAT), strace_row(&summary, "openat"));
    assert_eq!(totals(&ours, libc::SYS_rt_sigreturn as u32), strace_row(&summary, "rt_sigreturn"));
}

/// Sends SIGUSR1 and waits until its handler ran.
fn usr1_handled(w: &mut Workload) {
    kill(w.pid, Signal::SIGUSR1);
    wait_until("the SIGUSR1 handler ran", LONG, || {
        w.send("sigs");
        expect_line(&w.out, |l| l.starts_with("usr1 "), LONG) == "usr1 1 rt 0"
    });
}

#[test]
fn c_refuses_already_traced() {
    let _g = serial();
    let w = Workload::spawn();
    let first = ptrace::start(w.pid, proc_root()).unwrap();
    match ptrace::start(w.pid, proc_root()) {
        Err(PtraceError::AlreadyTraced { pid, tracer_pid }) => {
            assert_eq!(pid, w.pid);
            assert_eq!(tracer_pid, std::process::id() as i32);
        }
        other => panic!("expected AlreadyTraced, got {other:?}"),
    }
    first.stop().unwrap();
    assert_untraced(w.pid);

    let mut strace = Command::new("strace")
        .args(["-o", "/dev/null", "-p", &w.pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(strace.stderr.take().unwrap());
    expect_line(&err, |l| l.contains("attached"), LONG);
    let e = ptrace::start(w.pid, proc_root()).unwrap_err();
    match &e {
        PtraceError::AlreadyTraced { pid, tracer_pid } => {
            assert_eq!(*pid, w.pid);
            assert_eq!(*tracer_pid, strace.id() as i32);
        }
        other => panic!("expected AlreadyTraced, got {other:?}"),
    }
    assert!(e.to_string().contains(&format!("already traced by pid {}", strace.id())), "{e}");
    kill(strace.id() as i32, Signal::SIGINT);
    strace.wait().unwrap();
    assert_untraced(w.pid);
    assert_eq!(w.finish(), 0);

    assert!(matches!(ptrace::start(i32::MAX, proc_root()), Err(PtraceError::Gone { pid: i32::MAX })));
}

#[test]
fn d_target_killed_mid_profile() {
    let _g = serial();
    let mut w = Workload::spawn();
    let pid = w.pid;
    let session = ptrace::start(pid, proc_root()).unwrap();
    w.send("go");
    wait_until("some getppid calls were counted", LONG, || totals(&session.snapshot(), GETPPID).0 >= 50);
    kill(pid, Signal::SIGKILL);
    let out = session.stop().unwrap();
    assert!(out.target_exited);
    let (calls, errors) = totals(&out.counts, GETPPID);
    assert!((50..2000).contains(&calls), "partial getppid count {calls}");
    assert_eq!(errors, 0);
    // The tracer thread shares our process, so it may have reaped the child already.
    let _ = w.child.wait();
    wait_until("the target is gone", LONG, || tids(pid).is_empty());
}

/// osl-agent serve (run through `wrapper`, e.g. setpriv) and its address.
fn spawn_agent(wrapper: &[&str]) -> (Child, String) {
    let mut cmd = Command::new(wrapper.first().copied().unwrap_or(env!("CARGO_BIN_EXE_osl-agent")));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg(env!("CARGO_BIN_EXE_osl-agent"));
    }
    let mut agent = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--no-watch", "--allow-pod-peers"])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = lines(agent.stderr.take().unwrap());
    let serving = expect_line(&log, |l| l.contains("serving osl.v1.Diagnostics"), LONG);
    (agent, serving.rsplit("listen=").next().unwrap().trim().to_string())
}

#[test]
fn e_agent_killed_mid_profile_leaves_the_target_whole() {
    let _g = serial();
    // Long enough under ptrace (~30 us a stop here) to be caught mid-way.
    let mut w = Workload::spawn_with(&["40000", "500"]);
    // The real agent, asked over gRPC for a ptrace profile, SIGKILLed mid-way.
    let (mut agent, addr) = spawn_agent(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pid = w.pid;
    let (calls, stream) = rt.block_on(async {
        use osl_proto::v1;
        let mut client = v1::diagnostics_client::DiagnosticsClient::connect(format!("http://{addr}")).await.unwrap();
        let req = v1::ProfileSyscallsRequest {
            pid,
            duration_msec: 60_000,
            backend: v1::ProfileBackend::Ptrace as i32,
            progress_msec: 100,
            ..Default::default()
        };
        let mut stream = client.profile_syscalls(req).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(matches!(first.event, Some(v1::profile_syscalls_event::Event::Progress(_))), "{first:?}");
        assert_eq!(tracer_process(pid), agent.id() as i32, "the agent traces it");
        w.send("go");
        loop {
            match stream.message().await.unwrap().unwrap().event {
                Some(v1::profile_syscalls_event::Event::Progress(p)) if p.calls >= 100 => break (p.calls, stream),
                _ => {}
            }
        }
    });
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    drop(stream);
    assert!(calls < 40_000, "the workload finished before the agent was killed ({calls})");
    w.expect("done");
    assert_untraced(w.pid);
    w.send("sigs");
    w.expect("usr1 0 rt 0");
    assert_eq!(w.finish(), 0, "the target completed its work and exited cleanly");
}

#[test]
fn f_signals_and_job_control() {
    let _g = serial();
    let mut w = Workload::spawn();
    let pid = w.pid;
    let session = ptrace::start(pid, proc_root()).unwrap();

    kill(pid, Signal::SIGUSR1);
    // A real-time signal: nix's `Signal` cannot represent it, the profiler must still pass it on.
    let rtmin = libc::SIGRTMIN();
    assert_eq!(kill_raw(pid, rtmin), 0);
    let mut handled = || {
        w.send("sigs");
        expect_line(&w.out, |l| l.starts_with("usr1 "), LONG) == "usr1 1 rt 1"
    };
    wait_until("the signal handlers ran", LONG, &mut handled);

    kill(pid, Signal::SIGSTOP);
    wait_until("every thread is stopped", LONG, || states(pid).iter().all(|s| matches!(s, 't' | 'T')));
    w.send("sigs");
    assert!(w.out.recv_timeout(Duration::from_millis(300)).is_err(), "a stopped process answered");
    kill(pid, Signal::SIGCONT);
    w.expect("usr1 1 rt 1");
    w.send("go");
    w.expect("done");

    let out = session.stop().unwrap();
    assert_eq!(totals(&out.counts, GETPPID), (2000, 0));
    // One return from each signal handler.
    assert_eq!(totals(&out.counts, libc::SYS_rt_sigreturn as u32).0, 2);
    assert_untraced(pid);
    assert!(states(pid).iter().all(|s| !matches!(s, 't' | 'T')), "states {:?}", states(pid));
    w.send("sigs");
    w.expect("usr1 1 rt 1");

    // Detaching while group-stopped leaves the process stopped, as it was asked to be.
    let session = ptrace::start(pid, proc_root()).unwrap();
    kill(pid, Signal::SIGSTOP);
    wait_until("every thread is stopped", LONG, || states(pid).iter().all(|s| matches!(s, 't' | 'T')));
    session.stop().unwrap();
    assert_untraced(pid);
    wait_until("the process is stopped untraced", LONG, || states(pid).iter().all(|&s| s == 'T'));

    // Attaching to an already stopped process keeps it stopped, and so does detaching again.
    let session = ptrace::start(pid, proc_root()).unwrap();
    wait_until("every thread is in a ptrace stop", LONG, || states(pid).iter().all(|&s| s == 't'));
    w.send("sigs");
    assert!(w.out.recv_timeout(Duration::from_millis(300)).is_err(), "a stopped process answered");
    session.stop().unwrap();
    assert_untraced(pid);
    assert!(states(pid).iter().all(|&s| s == 'T'), "states {:?}", states(pid));
    kill(pid, Signal::SIGCONT);
    w.expect("usr1 1 rt 1");
    w.send("sigs");
    w.expect("usr1 1 rt 1");
    assert_eq!(w.finish(), 0);
}

#[test]
fn g_stop_on_idle_target_is_prompt() {
    let _g = serial();
    let mut w = Workload::spawn();
    let session = ptrace::start(w.pid, proc_root()).unwrap();
    thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = session.stop().unwrap();
    let took = t0.elapsed();
    eprintln!("stop() on idle target took {took:?}");
    assert!(took < Duration::from_millis(200), "stop() took {took:?}");
    assert!(!out.target_exited);
    assert_untraced(w.pid);
    w.send("go");
    w.expect("done");
    assert_eq!(w.finish(), 0);
}

#[test]
fn h_exec_from_non_leader_thread() {
    let _g = serial();
    let mut w = Workload::spawn();
    let session = ptrace::start(w.pid, proc_root()).unwrap();
    w.send("exec");
    w.expect("execed");
    let out = session.stop().unwrap();
    let execs: Vec<_> = out.counts.syscalls.iter().filter(|s| s.nr == EXECVE).collect();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!((execs[0].tid, execs[0].calls, execs[0].errors), (w.pid as u32, 1, 0));
    assert_untraced(w.pid);
    assert_eq!(w.finish(), 0);
}

#[test]
fn i_follows_forked_children() {
    let _g = serial();
    let mut child = Command::new("/bin/sh")
        .args(["-c", "read x; /bin/true; /bin/true; /bin/true; read y"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    wait_until("sh reads stdin", LONG, || status_field(pid, pid, "State:").starts_with('S'));
    let session = ptrace::start(pid, proc_root()).unwrap();
    writeln!(stdin, "x").unwrap();
    wait_until("three children ran", LONG, || {
        session.snapshot().syscalls.iter().filter(|s| s.nr == EXECVE && s.tgid != pid as u32).count() == 3
    });
    let out = session.stop().unwrap();
    let execs: Vec<_> =
        out.counts.syscalls.iter().filter(|s| s.nr == EXECVE).map(|s| (s.tgid == s.tid, s.calls, s.errors)).collect();
    assert_eq!(execs, vec![(true, 1, 0); 3]);
    assert!(out.threads_traced >= 4);
    assert_untraced(pid);
    // `read y` must get this line: its read, interrupted to detach, restarts transparently.
    writeln!(stdin, "y").unwrap();
    drop(stdin);
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}");
}

#[test]
fn j_signal_pending_at_stop_is_delivered_once() {
    let _g = serial();
    let mut w = Workload::spawn();
    for round in 1..=10 {
        let session = ptrace::start(w.pid, proc_root()).unwrap();
        // Races the signal-delivery-stop against the detach: either way it must be delivered once.
        kill(w.pid, Signal::SIGUSR1);
        session.stop().unwrap();
        assert_untraced(w.pid);
        let want = format!("usr1 {round} rt 0");
        wait_until("the handler ran", LONG, || {
            w.send("sigs");
            expect_line(&w.out, |l| l.starts_with("usr1 "), LONG) == want
        });
    }
    w.send("sigs");
    w.expect("usr1 10 rt 0");
    assert_eq!(w.finish(), 0);
}

#[test]
fn k_drop_detaches() {
    let _g = serial();
    let mut w = Workload::spawn();
    let session = ptrace::start(w.pid, proc_root()).unwrap();
    w.send("go");
    w.expect("done");
    drop(session);
    assert_untraced(w.pid);
    w.send("sigs");
    w.expect("usr1 0 rt 0");
    assert_eq!(w.finish(), 0);
}

#[test]
fn l_stop_mid_burst_is_prompt_and_harmless() {
    let _g = serial();
    let mut w = Workload::spawn();
    let session = ptrace::start(w.pid, proc_root()).unwrap();
    w.send("go");
    wait_until("some getppid calls were counted", LONG, || totals(&session.snapshot(), GETPPID).0 >= 100);
    let t0 = Instant::now();
    let out = session.stop().unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(200), "stop() took {took:?}");
    let (calls, errors) = totals(&out.counts, GETPPID);
    assert!((100..2000).contains(&calls), "partial getppid count {calls}");
    assert_eq!(errors, 0);
    assert!(!out.target_exited);
    // The workers carry on untraced; their own asserts abort the workload on any odd result.
    w.expect("done");
    assert_untraced(w.pid);
    assert_eq!(w.finish(), 0);
}

#[test]
fn m_errors_without_permission() {
    let _g = serial();
    assert!(matches!(ptrace::start(std::process::id() as i32, proc_root()), Err(PtraceError::PermissionDenied { .. })));
    if !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("setpriv missing: skipping the unprivileged attach");
        return;
    }
    let w = Workload::spawn();
    let (mut agent, addr) = spawn_agent(&[
        "/usr/bin/setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        use osl_proto::v1;
        let mut client = v1::diagnostics_client::DiagnosticsClient::connect(format!("http://{addr}")).await.unwrap();
        let req = v1::ProfileSyscallsRequest { pid: w.pid, duration_msec: 1000, ..Default::default() };
        let mut stream = client.profile_syscalls(req).await.unwrap().into_inner();
        stream.message().await.unwrap_err()
    });
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&format!("not permitted to trace process {}", w.pid)), "{status:?}");
    assert!(status.message().contains("CAP_SYS_PTRACE"), "{status:?}");
    assert_untraced(w.pid);
    assert_eq!(w.finish(), 0);
}
