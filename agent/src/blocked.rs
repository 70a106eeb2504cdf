//! The blocked-on sampler: what every thread of a process is doing, from
//! /proc/PID/task/TID/{stat,syscall,wchan} read at a rate for a while. Nothing
//! stops the target (unlike ptrace); each sample costs three small reads a thread.
//! /proc/PID/task/TID/syscall needs ptrace access (PTRACE_MODE_ATTACH): without it
//! only running/sleeping and wchan are known.

use crate::error::{ReadError, open_dir, read_file_at};
use crate::model::Unavailable;
use crate::proc::parse::parse_stat;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// How many samples fell in each bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub samples: u32,
    pub running: u32,
    pub by_syscall: BTreeMap<String, u32>,
    pub by_wchan: BTreeMap<String, u32>,
}

impl Tally {
    fn add(&mut self, s: &ThreadState) {
        self.samples += 1;
        match &s.syscall {
            None => self.running += 1,
            Some(name) => *self.by_syscall.entry(name.clone()).or_default() += 1,
        }
        if let Some(w) = &s.wchan {
            *self.by_wchan.entry(w.clone()).or_default() += 1;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Sampled {
    pub samples: u32,
    pub duration: Duration,
    pub total: Tally,
    /// tid → (comm, tally)
    pub threads: BTreeMap<i32, (Vec<u8>, Tally)>,
    pub unavailable: Vec<Unavailable>,
    pub exited: bool,
}

/// One thread at one instant. `syscall: None` is running (or runnable).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadState {
    comm: Vec<u8>,
    syscall: Option<String>,
    wchan: Option<String>,
}

pub const NOT_IN_SYSCALL: &str = "(in kernel, not in a syscall)";
const SLEEPING_UNKNOWN: &str = "(blocked; syscall unknown without ptrace access)";

/// Samples the process at `pid_dir` `rate_hz` times a second for `duration`.
pub fn sample(pid_dir: &Path, duration: Duration, rate_hz: u32) -> Result<Sampled, ReadError> {
    let mut one = Sampler::open(pid_dir);
    run(&mut [&mut one], duration, rate_hz);
    one.map(Sampler::finish)
}

/// Samples several processes over the same `duration`, for `diagnose`'s short look
/// at what everything is blocked in: each of at most [`SAMPLE_ALL_THREADS`]
/// threads takes a share of the processes and samples each once a tick (a tick
/// that outlasts the interval makes fewer samples: the cap is time).
pub fn sample_all(
    proc_root: &Path,
    pids: &[i32],
    duration: Duration,
    rate_hz: u32,
) -> BTreeMap<i32, Result<Sampled, ReadError>> {
    let mut samplers: Vec<(i32, Result<Sampler, ReadError>)> =
        pids.iter().map(|&pid| (pid, Sampler::open(&proc_root.join(pid.to_string())))).collect();
    if samplers.is_empty() {
        return BTreeMap::new();
    }
    let share = samplers.len().div_ceil(SAMPLE_ALL_THREADS);
    std::thread::scope(|s| {
        for part in samplers.chunks_mut(share) {
            s.spawn(move || {
                let mut part: Vec<&mut Result<Sampler, ReadError>> = part.iter_mut().map(|(_, r)| r).collect();
                run(&mut part, duration, rate_hz);
            });
        }
    });
    samplers.into_iter().map(|(pid, s)| (pid, s.map(Sampler::finish))).collect()
}

/// Threads that sample at once in [`sample_all`].
pub const SAMPLE_ALL_THREADS: usize = 4;

/// Ticks every live sampler `rate_hz` times a second until `duration` is over or
/// every process has exited.
fn run(samplers: &mut [&mut Result<Sampler, ReadError>], duration: Duration, rate_hz: u32) {
    let every = Duration::from_secs(1) / rate_hz.max(1);
    let start = Instant::now();
    for n in 0u32.. {
        let mut live = 0;
        for slot in samplers.iter_mut() {
            let Ok(s) = &mut **slot else { continue };
            if s.done {
                continue;
            }
            match s.tick(n) {
                Ok(()) => {
                    live += usize::from(!s.done);
                    s.out.duration = start.elapsed();
                }
                Err(e) => **slot = Err(e),
            }
        }
        let next = every * (n + 1);
        // A tick over thousands of threads can outlast the interval: the cap is time.
        if live == 0 || next >= duration || start.elapsed() >= duration {
            break;
        }
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// One process being sampled.
struct Sampler {
    pid_dir: std::path::PathBuf,
    dir: rustix::fd::OwnedFd,
    task_path: std::path::PathBuf,
    out: Sampled,
    denied: HashMap<&'static str, ReadError>,
    done: bool,
}

impl Sampler {
    fn open(pid_dir: &Path) -> Result<Self, ReadError> {
        Ok(Self {
            dir: open_dir(pid_dir)?,
            pid_dir: pid_dir.to_path_buf(),
            task_path: pid_dir.join("task"),
            out: Sampled::default(),
            denied: HashMap::new(),
            done: false,
        })
    }

    /// Sample `n`. A process gone at its first sample is an error; later, it exited.
    fn tick(&mut self, n: u32) -> Result<(), ReadError> {
        let tids = match list_tasks(&self.dir, &self.task_path) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) | Err(ReadError::Gone { .. }) if n > 0 => {
                (self.out.exited, self.done) = (true, true);
                return Ok(());
            }
            Ok(_) => return Err(ReadError::Gone { path: self.task_path.clone() }),
            Err(e) => return Err(e),
        };
        let mut alive = 0;
        for tid in tids {
            let Some(state) = thread_state(&self.dir, &self.pid_dir, tid, &mut self.denied) else { continue };
            alive += 1;
            self.out.total.add(&state);
            let entry = self.out.threads.entry(tid).or_insert_with(|| (state.comm.clone(), Tally::default()));
            entry.1.add(&state);
        }
        if alive == 0 && n > 0 {
            (self.out.exited, self.done) = (true, true);
            return Ok(());
        }
        self.out.samples += 1;
        Ok(())
    }

    fn finish(self) -> Sampled {
        let mut out = self.out;
        out.unavailable = self
            .denied
            .into_iter()
            .map(|(field, e)| {
                let mut u = Unavailable::from_read(field, &e);
                u.reason = format!("{} (ptrace access to the process is needed: CAP_SYS_PTRACE)", u.reason);
                u
            })
            .collect();
        out
    }
}

fn list_tasks(dir: &rustix::fd::OwnedFd, task_path: &Path) -> Result<Vec<i32>, ReadError> {
    use rustix::fs::{Mode, OFlags};
    let err = |e: rustix::io::Errno| ReadError::from_io(task_path, e.into());
    let fd = rustix::fs::openat(dir, "task", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(err)?;
    let entries = rustix::fs::Dir::read_from(&fd).map_err(err)?;
    Ok(entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str().ok()?.parse().ok()).collect())
}

/// One thread now; `None` if it is gone.
fn thread_state(
    dir: &rustix::fd::OwnedFd,
    pid_dir: &Path,
    tid: i32,
    denied: &mut HashMap<&'static str, ReadError>,
) -> Option<ThreadState> {
    let base = format!("task/{tid}");
    let stat = read_file_at(dir, pid_dir, &format!("{base}/stat")).ok()?;
    let (comm, stat) = parse_stat(&stat).ok()?;
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return None; // exited, not yet reaped
    }
    let running = stat.state == 'R';
    let syscall = if running {
        None
    } else {
        match read_file_at(dir, pid_dir, &format!("{base}/syscall")) {
            Ok(text) => syscall_of(&text),
            Err(e @ ReadError::Denied { .. }) => {
                denied.entry("syscall").or_insert(e);
                Some(SLEEPING_UNKNOWN.to_string())
            }
            Err(_) => return None,
        }
    };
    let syscall_denied = syscall.as_deref() == Some(SLEEPING_UNKNOWN);
    let wchan = match read_file_at(dir, pid_dir, &format!("{base}/wchan")) {
        // Without ptrace access the kernel answers "0" instead of refusing.
        Ok(w) if syscall_denied => {
            if let Some(e) = denied.get("syscall") {
                let path = e.path().with_file_name("wchan");
                denied.entry("wchan").or_insert(ReadError::Denied { path });
            }
            wchan_of(&w)
        }
        Ok(w) => wchan_of(&w),
        Err(e @ ReadError::Denied { .. }) => {
            denied.entry("wchan").or_insert(e);
            None
        }
        Err(_) => None,
    };
    Some(ThreadState { comm, syscall, wchan })
}

/// /proc/PID/task/TID/syscall: "running", "-1 sp pc" (blocked, not in a syscall),
/// or "NR arg1 … arg6 sp pc". `None` is running.
fn syscall_of(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let first = text.split_whitespace().next()?;
    match first {
        "running" => None,
        "-1" => Some(NOT_IN_SYSCALL.to_string()),
        n => Some(n.parse::<usize>().map_or_else(|_| format!("syscall {n}"), syscall_name)),
    }
}

/// The syscall's name on this machine's architecture, as strace prints it.
pub fn syscall_name(nr: usize) -> String {
    syscalls::Sysno::new(nr).map_or_else(|| format!("syscall_{nr:#x}"), |s| s.name().to_string())
}

fn wchan_of(text: &[u8]) -> Option<String> {
    let w = String::from_utf8_lossy(text).trim().to_string();
    (!w.is_empty() && w != "0").then_some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        assert_eq!(syscall_of(b"running\n"), None);
        assert_eq!(syscall_of(b"-1 0x7ffd 0x7f00\n").as_deref(), Some(NOT_IN_SYSCALL));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(syscall_of(b"0 0x3 0x7ffd 0x1 0x0 0x0 0x0 0x7ffd 0x7f00\n").as_deref(), Some("read"));
            assert_eq!(syscall_of(b"202 0x1 0x80 0x2 0x0 0x0 0x0 0x7ffd 0x7f00\n").as_deref(), Some("futex"));
        }
        assert_eq!(syscall_name(99999), "syscall_0x1869f");
        assert_eq!(syscall_of(b"").as_deref(), None);
    }

    #[test]
    fn wchan_lines() {
        assert_eq!(wchan_of(b"0").as_deref(), None);
        assert_eq!(wchan_of(b"pipe_read").as_deref(), Some("pipe_read"));
    }
}
