//! ptrace syscall profiler: the equivalent of `strace -c -w -f -p PID`.
//!
//! [`start`] spawns one tracer thread that seizes every thread of the target (following
//! clone/fork/vfork like `-f`), times each syscall from its enter stop to its exit stop and
//! counts calls and errors per thread. [`Session::stop`] (or drop) interrupts and detaches
//! every thread, re-injecting any signal caught on the way. Signals, group-stops
//! (PTRACE_LISTEN) and exec are handled as strace does, so apart from speed the target
//! behaves as if untraced. PTRACE_O_EXITKILL is never set: if the agent dies, the kernel
//! detaches and the target carries on.
//!
//! Unsafe is limited to what nix cannot express: waitpid and ptrace restarts carrying raw
//! signal numbers (nix's `Signal` has no real-time signals, and its waitpid fails on such a
//! stop after consuming it), PTRACE_LISTEN (no nix wrapper), and installing the no-op
//! SIGURG handler that lets `stop()` interrupt the tracer's blocking waitpid.
//!
//! x86_64 only: syscall numbers come from `orig_rax`; 32-bit (int 0x80) tracees are not
//! translated.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::thread::JoinHandleExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::pthread::pthread_kill;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::Pid;

use super::counts::{Counts, ErrnoCount, NO_FD, SlowCall, Slowest, SyscallCount, is_error};
use super::names;

/// Thread-directed signal that makes the tracer's blocking waitpid return EINTR on stop().
const WAKE_SIGNAL: Signal = Signal::SIGURG;
/// stop() re-sends the wake signal this often until the tracer acknowledges.
const WAKE_RESEND: Duration = Duration::from_millis(5);
/// Bound on waiting for threads to stop (first stop after seizing, last stop before detach);
/// only a thread stuck in an uninterruptible sleep takes this long.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// WSTOPSIG of a syscall stop under PTRACE_O_TRACESYSGOOD.
const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    /// `tracer_pid` is the tracing process (its TracerPid thread resolved to the thread group).
    #[error(
        "process {pid} is already traced by pid {tracer_pid} (a debugger, strace or another profiler); not attaching"
    )]
    AlreadyTraced { pid: i32, tracer_pid: i32 },
    #[error("not permitted to trace process {pid}: {hint}")]
    PermissionDenied { pid: i32, hint: String },
    #[error("process {pid} does not exist (or has exited)")]
    Gone { pid: i32 },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: impl Into<String>, source: impl Into<io::Error>) -> PtraceError {
    PtraceError::Io { what: what.into(), source: source.into() }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub counts: Counts,
    pub target_exited: bool,
    pub threads_traced: u32,
}

/// The counts of one session, keyed as the eBPF backend keys them: (tid, nr, fd, epoch).
#[derive(Debug)]
struct Aggregate {
    calls: HashMap<(u32, u32, i32, u32), SyscallCount>,
    errnos: HashMap<(u32, u32), u64>,
    /// How many times each (tgid, fd) was closed (or replaced by dup2) so far.
    epochs: HashMap<(u32, i32), u32>,
    /// (tgid, fd, epoch) seen for the first time, not yet named.
    fresh: Vec<(u32, i32, u32)>,
    slowest: Slowest,
    started: Instant,
}

/// What one syscall stop pair saw.
struct Call {
    tgid: u32,
    tid: u32,
    nr: u32,
    /// The first two arguments (rdi and rsi survive the syscall on x86_64).
    args: [u64; 2],
    ret: i64,
    entered: Instant,
    ns: u64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self {
            calls: HashMap::new(),
            errnos: HashMap::new(),
            epochs: HashMap::new(),
            fresh: Vec::new(),
            slowest: Slowest::new(super::counts::SLOWEST_KEPT),
            started: Instant::now(),
        }
    }
}

impl Aggregate {
    fn record(&mut self, c: Call) {
        let Call { tgid, tid, nr, args, ret, entered, ns } = c;
        // An int: the low 32 bits, as the kernel (and the eBPF backend) read it.
        let fd = match args[0] as u32 as i32 {
            fd if fd >= 0 && names::takes_fd(nr) => fd,
            _ => NO_FD,
        };
        let epoch = if fd == NO_FD { 0 } else { self.epochs.get(&(tgid, fd)).copied().unwrap_or(0) };
        let entry = self.calls.entry((tid, nr, fd, epoch)).or_insert_with(|| {
            if fd != NO_FD {
                self.fresh.push((tgid, fd, epoch));
            }
            SyscallCount { tgid, tid, nr, fd, epoch, ..SyscallCount::default() }
        });
        entry.record(ret, ns);
        if is_error(ret) {
            *self.errnos.entry((nr, (-ret) as u32)).or_default() += 1;
        }
        // A close that fails other than with EBADF has closed the fd all the same (close(2)).
        if let Some(arg) = names::ends_fd(nr)
            && (!is_error(ret) || (arg == 0 && ret != -i64::from(libc::EBADF)))
        {
            *self.epochs.entry((tgid, args[arg] as u32 as i32)).or_default() += 1;
        }
        if ns > self.slowest.threshold() {
            let offset_ns = entered.saturating_duration_since(self.started).as_nanos() as u64;
            self.slowest.offer(SlowCall { tgid, tid, nr, fd, epoch, ret, ns, offset_ns });
        }
    }

    fn to_counts(&self) -> Counts {
        let mut syscalls: Vec<SyscallCount> = self.calls.values().cloned().collect();
        syscalls.sort_by_key(|c| (c.tgid, c.tid, c.nr, c.fd, c.epoch));
        let mut errnos: Vec<ErrnoCount> =
            self.errnos.iter().map(|(&(nr, errno), &count)| ErrnoCount { nr, errno, count }).collect();
        errnos.sort_by_key(|e| (e.nr, e.errno));
        Counts { syscalls, errnos, slowest: self.slowest.to_vec(), ..Counts::default() }
    }
}

#[derive(Debug, Default)]
struct Shared {
    agg: Mutex<Aggregate>,
    stop: AtomicBool,
    /// The tracer saw `stop` and will not block in waitpid again.
    ack: AtomicBool,
    exited: AtomicBool,
}

/// A running profile; see the module docs.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    tracer: Option<JoinHandle<Result<u32, PtraceError>>>,
}

/// Seizes every thread of process `pid` and starts profiling it.
///
/// Returns once all its threads are seized, or with an error and nothing left attached.
/// A thread id is taken as its whole process.
/// `proc_root` is the agent's /proc (`/proc`).
pub fn start(pid: i32, proc_root: &Path) -> Result<Session, PtraceError> {
    let proc = Procfs { root: proc_root.to_path_buf() };
    let status = proc.status(pid, pid).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => PtraceError::Gone { pid },
        _ => io_err(format!("reading {}/{pid}/status", proc_root.display()), e),
    })?;
    let tgid = status_field(&status, "Tgid:").unwrap_or(pid);
    match status_field(&status, "TracerPid:") {
        Some(0) | None => {}
        Some(tracer) => return Err(PtraceError::AlreadyTraced { pid, tracer_pid: proc.tracer_process(tracer) }),
    }
    if tgid == std::process::id() as i32 {
        return Err(PtraceError::PermissionDenied { pid, hint: "a process cannot trace itself".into() });
    }
    install_wake_handler()?;

    let shared = Arc::new(Shared::default());
    let (ready_tx, ready_rx) = mpsc::channel();
    let tracer_shared = Arc::clone(&shared);
    let handle = thread::Builder::new()
        .name(format!("osl-ptrace-{tgid}"))
        .spawn(move || tracer_main(tgid, proc, tracer_shared, ready_tx))
        .map_err(|e| io_err("spawning the ptrace tracer thread", e))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Session { shared, tracer: Some(handle) }),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(mpsc::RecvError) => {
            let _ = handle.join();
            Err(io_err("attaching", io::Error::other("the ptrace tracer thread panicked")))
        }
    }
}

impl Session {
    /// Aggregate so far (for progress ticks); cheap; may lag by ≤100 ms.
    pub fn snapshot(&self) -> Counts {
        self.shared.agg.lock().unwrap_or_else(PoisonError::into_inner).to_counts()
    }

    /// The fds seen for the first time since the last call: (tgid, fd, epoch).
    pub fn take_fresh(&self) -> Vec<(u32, i32, u32)> {
        std::mem::take(&mut self.shared.agg.lock().unwrap_or_else(PoisonError::into_inner).fresh)
    }

    /// How many times `fd` of `tgid` has been closed so far.
    pub fn epoch(&self, tgid: u32, fd: i32) -> u32 {
        let agg = self.shared.agg.lock().unwrap_or_else(PoisonError::into_inner);
        agg.epochs.get(&(tgid, fd)).copied().unwrap_or(0)
    }

    /// True once every traced thread has exited (the target is gone).
    pub fn target_exited(&self) -> bool {
        self.shared.exited.load(Ordering::Acquire)
    }

    /// Ends the profile: stops tracing, detaches every thread (re-injecting any pending signal),
    /// joins the tracer thread, returns the final aggregate.
    pub fn stop(mut self) -> Result<Outcome, PtraceError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Outcome, PtraceError> {
        let Some(handle) = self.tracer.take() else {
            return Err(io_err("stopping", io::Error::other("the profile was already stopped")));
        };
        self.shared.stop.store(true, Ordering::Release);
        // A wake-up landing between the tracer's check of `stop` and its waitpid is lost, hence the re-sends.
        while !self.shared.ack.load(Ordering::Acquire) && !handle.is_finished() {
            let _ = pthread_kill(handle.as_pthread_t(), WAKE_SIGNAL);
            let resend_at = Instant::now() + WAKE_RESEND;
            while Instant::now() < resend_at && !self.shared.ack.load(Ordering::Acquire) && !handle.is_finished() {
                thread::sleep(Duration::from_micros(200));
            }
        }
        let threads_traced = match handle.join() {
            Ok(result) => result?,
            Err(_) => return Err(io_err("stopping", io::Error::other("the ptrace tracer thread panicked"))),
        };
        Ok(Outcome { counts: self.snapshot(), target_exited: self.target_exited(), threads_traced })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.tracer.is_some() {
            let _ = self.finish();
        }
    }
}

fn tracer_main(
    tgid: i32,
    proc: Procfs,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<(), PtraceError>>,
) -> Result<u32, PtraceError> {
    // The signal mask is inherited from whichever thread called start(); stop() must get through.
    let mut wake = SigSet::empty();
    wake.add(WAKE_SIGNAL);
    let _ = wake.thread_unblock();

    let mut tracer = Tracer::new(shared, proc);
    let traced = panic::catch_unwind(AssertUnwindSafe(|| match tracer.attach(tgid) {
        Ok(()) => {
            let _ = ready.send(Ok(()));
            tracer.run()
        }
        Err(e) => {
            tracer.detach_all();
            let _ = ready.send(Err(e));
            Ok(())
        }
    }));
    // Whatever happened, leave nothing stopped or traced behind (a tracer thread that dies
    // would also make the kernel detach, but signals caught in signal-delivery-stops would be lost).
    let released = panic::catch_unwind(AssertUnwindSafe(|| tracer.detach_all()));
    drop(ready);
    match (traced, released) {
        (Ok(Ok(())), Ok(())) => Ok(tracer.traced_total),
        (Ok(Err(e)), _) => Err(e),
        _ => Err(io_err("tracing", io::Error::other("the ptrace tracer thread panicked"))),
    }
}

#[derive(Debug)]
struct Thread {
    tgid: u32,
    /// Entry time while inside a syscall.
    entered: Option<Instant>,
    /// Known to be in step with the enter/exit alternation (checked on the first syscall stop).
    in_step: bool,
    /// Seized during attach and not yet reported a stop.
    first_stop_pending: bool,
}

struct Tracer {
    shared: Arc<Shared>,
    proc: Procfs,
    threads: HashMap<i32, Thread>,
    awaiting_first_stop: usize,
    traced_total: u32,
    detached: u32,
    /// The tracee whose stop is being handled and the signal it is due, so that a panic
    /// mid-handling still releases it.
    held: Option<(i32, i32)>,
}

impl Tracer {
    fn new(shared: Arc<Shared>, proc: Procfs) -> Self {
        Tracer {
            shared,
            proc,
            threads: HashMap::new(),
            awaiting_first_stop: 0,
            traced_total: 0,
            detached: 0,
            held: None,
        }
    }

    fn track(&mut self, tid: i32, tgid: Option<u32>, first_stop_pending: bool) {
        if self.threads.contains_key(&tid) {
            return;
        }
        let tgid = tgid.or_else(|| self.proc.tgid(tid)).unwrap_or(tid as u32);
        self.threads.insert(tid, Thread { tgid, entered: None, in_step: false, first_stop_pending });
        self.traced_total += 1;
        self.awaiting_first_stop += usize::from(first_stop_pending);
    }

    fn untrack(&mut self, tid: i32) -> Option<Thread> {
        let t = self.threads.remove(&tid)?;
        self.awaiting_first_stop -= usize::from(t.first_stop_pending);
        Some(t)
    }

    fn attach(&mut self, tgid: i32) -> Result<(), PtraceError> {
        let options = Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACEEXEC;
        let me = nix::unistd::gettid().as_raw();
        let mut zombies = Vec::new();
        loop {
            let tids = self.proc.tasks(tgid).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => PtraceError::Gone { pid: tgid },
                _ => io_err(format!("listing {}/{tgid}/task", self.proc.root.display()), e),
            })?;
            let mut seized = false;
            for tid in tids {
                if self.threads.contains_key(&tid) || zombies.contains(&tid) {
                    continue;
                }
                let Ok(status) = self.proc.status(tgid, tid) else { continue }; // exited meanwhile
                match status_field(&status, "TracerPid:") {
                    Some(0) | None => {}
                    // Auto-attached by the clone of a thread we already hold; it reports soon.
                    Some(t) if t == me => continue,
                    Some(tracer) => {
                        return Err(PtraceError::AlreadyTraced {
                            pid: tgid,
                            tracer_pid: self.proc.tracer_process(tracer),
                        });
                    }
                }
                match ptrace::seize(Pid::from_raw(tid), options) {
                    Ok(()) => {
                        self.track(tid, Some(tgid as u32), true);
                        // An error here means it died right away; its exit status tells us.
                        let _ = ptrace::interrupt(Pid::from_raw(tid));
                        seized = true;
                    }
                    Err(Errno::ESRCH) => {}
                    Err(Errno::EPERM) => match self.proc.status(tgid, tid) {
                        Err(_) => {}
                        Ok(s) if is_zombie(&s) => zombies.push(tid),
                        Ok(s) => match status_field(&s, "TracerPid:") {
                            Some(t) if t != 0 && t != me => {
                                return Err(PtraceError::AlreadyTraced {
                                    pid: tgid,
                                    tracer_pid: self.proc.tracer_process(t),
                                });
                            }
                            _ => {
                                let hint = "PTRACE_SEIZE was refused (EPERM)".into();
                                return Err(PtraceError::PermissionDenied { pid: tgid, hint });
                            }
                        },
                    },
                    Err(e) => return Err(io_err(format!("PTRACE_SEIZE of thread {tid}"), e)),
                }
            }
            if !seized {
                break;
            }
            // Once a seized thread has stopped, any clone it was in the middle of has completed,
            // so the new thread shows in /proc and the next scan finds it.
            self.await_first_stops()?;
        }
        if self.threads.is_empty() {
            return Err(PtraceError::Gone { pid: tgid });
        }
        Ok(())
    }

    fn await_first_stops(&mut self) -> Result<(), PtraceError> {
        let deadline = Instant::now() + STOP_WAIT;
        while self.awaiting_first_stop > 0 && Instant::now() < deadline {
            match wait_any(true) {
                Ok(Some((tid, status))) => self.handle(tid, status),
                Ok(None) => thread::sleep(Duration::from_micros(100)),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => break,
                Err(e) => return Err(io_err("waitpid", e)),
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), PtraceError> {
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                self.shared.ack.store(true, Ordering::Release);
                return Ok(());
            }
            if self.threads.is_empty() {
                self.shared.exited.store(true, Ordering::Release);
                return Ok(());
            }
            match wait_any(false) {
                Ok(Some((tid, status))) => self.handle(tid, status),
                Ok(None) | Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => self.threads.clear(),
                Err(e) => return Err(io_err("waitpid", e)),
            }
        }
    }

    fn handle(&mut self, tid: i32, status: i32) {
        let now = Instant::now();
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.untrack(tid);
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        // A new auto-attached tracee may report before its creator's clone event.
        self.track(tid, None, false);
        if let Some(t) = self.threads.get_mut(&tid)
            && t.first_stop_pending
        {
            t.first_stop_pending = false;
            self.awaiting_first_stop -= 1;
        }
        self.held = Some((tid, 0));
        let sig = libc::WSTOPSIG(status);
        let mut request = libc::PTRACE_SYSCALL;
        let mut inject = 0;
        if sig == SYSCALL_STOP {
            self.on_syscall_stop(tid, now);
        } else {
            match status >> 16 {
                0 => {
                    inject = sig;
                    self.held = Some((tid, sig));
                }
                libc::PTRACE_EVENT_STOP if is_stop_signal(sig) => request = libc::PTRACE_LISTEN,
                libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                    if let Ok(child) = ptrace::getevent(Pid::from_raw(tid)) {
                        self.track(child as i32, None, false);
                    }
                }
                libc::PTRACE_EVENT_EXEC => self.on_exec(tid),
                _ => {}
            }
        }
        // ESRCH: killed while stopped; its exit status follows.
        let _ = ptrace_raw(request, tid, inject);
        self.held = None;
    }

    fn on_syscall_stop(&mut self, tid: i32, now: Instant) {
        let Some(t) = self.threads.get_mut(&tid) else { return };
        match t.entered.take() {
            Some(entered) => {
                let Ok(regs) = ptrace::getregs(Pid::from_raw(tid)) else { return };
                // orig_rax survives the syscall, except rt_sigreturn, which sets it to -1.
                let nr = match regs.orig_rax as i64 {
                    -1 => libc::SYS_rt_sigreturn,
                    nr => nr,
                };
                if let Ok(nr) = u32::try_from(nr) {
                    let ns = now.duration_since(entered).as_nanos().try_into().unwrap_or(u64::MAX);
                    let call = Call {
                        tgid: t.tgid,
                        tid: tid as u32,
                        nr,
                        args: [regs.rdi, regs.rsi],
                        ret: regs.rax as i64,
                        entered,
                        ns,
                    };
                    self.shared.agg.lock().unwrap_or_else(PoisonError::into_inner).record(call);
                }
            }
            // Entry and exit stops alternate, so once in step an entry needs no register read.
            None if t.in_step => t.entered = Some(now),
            None => {
                // The kernel enters every syscall with rax = -ENOSYS; anything else is the exit of
                // a syscall whose entry we did not see (e.g. an execve in flight while attaching).
                let Ok(regs) = ptrace::getregs(Pid::from_raw(tid)) else { return };
                if regs.rax as i64 == -i64::from(libc::ENOSYS) {
                    t.entered = Some(now);
                    t.in_step = true;
                }
            }
        }
    }

    /// A non-leader thread that execs takes over the leader's tid, and the old leader vanishes
    /// without an exit report: the execing thread's state moves to the leader's tid.
    fn on_exec(&mut self, tid: i32) {
        let Ok(former) = ptrace::getevent(Pid::from_raw(tid)) else { return };
        let former = former as i32;
        if former == tid {
            return;
        }
        match self.untrack(former) {
            Some(mut moved) => {
                moved.first_stop_pending = false;
                self.untrack(tid);
                self.threads.insert(tid, moved);
            }
            None => {
                // Unknown former thread: the leader's state is not the execve's.
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.entered = None;
                    t.in_step = false;
                }
            }
        }
    }

    /// Interrupts every tracee, detaches each as it stops (re-injecting a signal caught in a
    /// signal-delivery-stop), and forgets those that exit. Syscalls still in flight are not counted.
    fn detach_all(&mut self) {
        if let Some((tid, sig)) = self.held.take()
            && ptrace_raw(libc::PTRACE_DETACH, tid, sig).is_ok()
        {
            self.detached += 1;
            self.untrack(tid);
        }
        let tids: Vec<i32> = self.threads.keys().copied().collect();
        for tid in tids {
            if ptrace::interrupt(Pid::from_raw(tid)) == Err(Errno::ESRCH) {
                self.untrack(tid);
            }
        }
        let deadline = Instant::now() + STOP_WAIT;
        let mut last_prune = Instant::now();
        while !self.threads.is_empty() && Instant::now() < deadline {
            match wait_any(true) {
                Ok(Some((tid, status))) => self.detach_stopped(tid, status),
                Ok(None) => {
                    // A zombie leader whose other threads live on never stops nor reports its exit.
                    if last_prune.elapsed() > Duration::from_millis(10) {
                        let proc = &self.proc;
                        self.threads.retain(|&tid, _| !matches!(proc.task_state(tid), None | Some('Z' | 'X')));
                        last_prune = Instant::now();
                    }
                    thread::sleep(Duration::from_micros(50));
                }
                Err(Errno::EINTR) => {}
                Err(_) => self.threads.clear(), // ECHILD: nothing is attached any more
            }
        }
        if self.threads.is_empty() && self.detached == 0 {
            self.shared.exited.store(true, Ordering::Release);
        }
    }

    fn detach_stopped(&mut self, tid: i32, status: i32) {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.untrack(tid);
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        self.track(tid, None, false);
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        let inject = if sig != SYSCALL_STOP && event == 0 { sig } else { 0 };
        match event {
            libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                // The new tracee reports its initial stop and is detached then.
                if let Ok(child) = ptrace::getevent(Pid::from_raw(tid)) {
                    self.track(child as i32, None, false);
                }
            }
            libc::PTRACE_EVENT_EXEC => self.on_exec(tid),
            _ => {}
        }
        // On failure it was killed meanwhile and its exit status follows.
        if ptrace_raw(libc::PTRACE_DETACH, tid, inject).is_ok() {
            self.detached += 1;
            self.untrack(tid);
        }
    }
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// waitpid(-1, __WALL | __WNOTHREAD): only this thread's tracees, never the agent's other children.
fn wait_any(nohang: bool) -> Result<Option<(i32, i32)>, Errno> {
    let mut status: libc::c_int = 0;
    let flags = libc::__WALL | libc::__WNOTHREAD | if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: waitpid writes one c_int through a pointer to a live local.
    let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
    match pid {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some((pid, status))),
    }
}

/// PTRACE_SYSCALL, PTRACE_LISTEN or PTRACE_DETACH with a raw signal number (0 for none).
fn ptrace_raw(request: libc::c_uint, tid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: these requests dereference no pointer: addr is ignored and data is a signal number.
    let ret = unsafe { libc::ptrace(request, tid, std::ptr::null_mut::<libc::c_void>(), libc::c_long::from(sig)) };
    Errno::result(ret).map(drop)
}

extern "C" fn on_wake_signal(_: libc::c_int) {}

/// Installs, once per process, a no-op WAKE_SIGNAL handler without SA_RESTART, so that the
/// signal interrupts waitpid. Refuses to replace a handler someone else installed.
fn install_wake_handler() -> Result<(), PtraceError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let ours = SigAction::new(SigHandler::Handler(on_wake_signal), SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let previous = unsafe { sigaction(WAKE_SIGNAL, &ours) }.map_err(|e| format!("sigaction: {e}"))?;
        match previous.handler() {
            SigHandler::SigDfl | SigHandler::SigIgn => Ok(()),
            _ => {
                // SAFETY: puts back exactly the action that was installed before.
                let _ = unsafe { sigaction(WAKE_SIGNAL, &previous) };
                Err(format!("{WAKE_SIGNAL} already has a handler, and the ptrace backend needs that signal"))
            }
        }
    });
    installed.clone().map_err(|msg| io_err("installing the tracer's wake-up signal handler", io::Error::other(msg)))
}

/// The /proc the tracer reads its targets' threads from: the agent's own (the pids it
/// traces are numbered in its pid namespace), injectable like every other reader's.
#[derive(Debug, Clone)]
struct Procfs {
    root: PathBuf,
}

impl Procfs {
    fn status(&self, tgid: i32, tid: i32) -> io::Result<String> {
        let dir = self.root.join(tgid.to_string());
        fs::read_to_string(if tgid == tid { dir.join("status") } else { dir.join(format!("task/{tid}/status")) })
    }

    /// TracerPid names the tracing thread; report its process.
    fn tracer_process(&self, tracer_tid: i32) -> i32 {
        self.tgid(tracer_tid).and_then(|t| i32::try_from(t).ok()).unwrap_or(tracer_tid)
    }

    fn tgid(&self, tid: i32) -> Option<u32> {
        let status = fs::read_to_string(self.root.join(format!("{tid}/status"))).ok()?;
        status_field(&status, "Tgid:").and_then(|t| u32::try_from(t).ok())
    }

    /// The state letter of /proc/TID/stat, or None if the thread is gone.
    fn task_state(&self, tid: i32) -> Option<char> {
        let stat = fs::read_to_string(self.root.join(format!("{tid}/stat"))).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    fn tasks(&self, tgid: i32) -> io::Result<Vec<i32>> {
        let mut tids = Vec::new();
        for entry in fs::read_dir(self.root.join(format!("{tgid}/task")))? {
            if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
                tids.push(tid);
            }
        }
        tids.sort_unstable();
        Ok(tids)
    }
}

fn status_field(status: &str, key: &str) -> Option<i32> {
    status.lines().find_map(|l| l.strip_prefix(key))?.trim().parse().ok()
}

fn is_zombie(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|s| matches!(s.trim_start().chars().next(), Some('Z' | 'X')))
}
