//! Syscall profiles, `strace -c` for a process or a container: two backends with
//! one result shape ([`counts::Counts`]), and the rules around them — one profile
//! per process at a time, a capped duration, a bounded number at once, and an
//! end (with every thread detached) whenever the client goes away.

pub mod counts;
pub mod ebpf;
pub mod findings;
pub mod names;
#[allow(unsafe_code)] // a signal handler to interrupt waitpid: see the module's doc
pub mod ptrace;
pub mod summary;
pub mod targets;

use crate::error::AgentError;
use crate::probe::Privileges;
use counts::{Counts, FdName};
use osl_proto::v1;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Ebpf,
    Ptrace,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ebpf => "ebpf",
            Backend::Ptrace => "ptrace",
        }
    }
}

/// The backend for a request and why: asked for, or the cheapest the agent may use.
/// What the start-up trial measured decides, not the capabilities: a seccomp profile
/// may refuse bpf() to an agent that holds CAP_BPF.
pub fn choose(asked: v1::ProfileBackend, privileges: &Privileges) -> Result<(Backend, String), AgentError> {
    match (asked, &privileges.ebpf) {
        (v1::ProfileBackend::Ebpf, Err(why)) => Err(AgentError::BackendUnavailable(format!(
            "the ebpf backend cannot run here: {why}; or use --backend ptrace"
        ))),
        (v1::ProfileBackend::Ebpf, Ok(())) => Ok((Backend::Ebpf, "asked for".into())),
        (v1::ProfileBackend::Ptrace, _) => Ok((Backend::Ptrace, "asked for".into())),
        (v1::ProfileBackend::Unspecified, Ok(())) => {
            Ok((Backend::Ebpf, "the agent may load BPF programs: counting in the kernel, no stops".into()))
        }
        (v1::ProfileBackend::Unspecified, Err(why)) => Ok((Backend::Ptrace, fallback_reason(why))),
    }
}

/// Why auto chose ptrace over ebpf.
pub fn fallback_reason(why: &str) -> String {
    format!("ebpf is unavailable ({why}): ptrace, which stops the target at every syscall")
}

/// What a finished profile hands to the conversion.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub counts: Counts,
    pub pids: Vec<i32>,
    pub elapsed: Duration,
    /// Why it ended early, if it did.
    pub partial: Option<String>,
    /// Why ebpf, chosen by default, could not attach and ptrace ran instead.
    pub fell_back: Option<String>,
}

/// What to profile, how, and how long.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pids: Vec<i32>,
    pub backend: Backend,
    pub duration: Duration,
    /// How often the tick callback gets a [`Progress`].
    pub tick_every: Duration,
    /// Whether ebpf failing to attach may fall back to ptrace (the backend was not asked for).
    pub fallback: bool,
    /// Where the targets' fds are read to name them (`/proc`).
    pub proc_root: PathBuf,
    /// The eBPF backend times one call in this many per thread (a power of two up to
    /// [`MAX_SAMPLE`]; 1: every call); ptrace times every call.
    pub time_one_in: u32,
    /// Why ptrace may be refused here (the start-up probe's words), for a refusal's message.
    pub ptrace_refused: String,
}

/// The sparsest timing a profile may ask for.
pub const MAX_SAMPLE: u32 = 64;

/// A tick: what has been counted so far.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed: Duration,
    pub calls: u64,
    pub errors: u64,
}

/// The profiles running in this agent.
#[derive(Debug)]
pub struct Profiles {
    running: Mutex<Running>,
    pub max_duration: Duration,
    pub max_concurrent: usize,
}

/// The processes being profiled, and how many profiles (one may cover many
/// processes: a container).
#[derive(Debug, Default)]
struct Running {
    pids: HashMap<i32, (Backend, Instant)>,
    profiles: usize,
}

/// How often a running profile looks at its client and its target.
pub const CHECK_EVERY: Duration = Duration::from_millis(50);

impl Profiles {
    pub fn new(max_duration: Duration, max_concurrent: usize) -> Self {
        Self { running: Mutex::new(Running::default()), max_duration, max_concurrent }
    }

    /// Profiles the plan's pids for its duration, or until they all exit, or
    /// `tick` returns false (the client went away): `tick` gets a progress every
    /// `tick_every` and `None` in between, every [`CHECK_EVERY`]. `more_pids` is
    /// asked now and then for processes that joined (a container's new
    /// processes; ptrace follows forks by itself).
    pub fn run(
        &self,
        plan: Plan,
        alive: impl Fn(i32) -> bool,
        more_pids: impl Fn() -> Vec<i32>,
        mut tick: impl FnMut(Option<Progress>) -> bool,
    ) -> Result<Outcome, AgentError> {
        let Plan { pids, backend, duration, tick_every, fallback, proc_root, time_one_in, ptrace_refused } = plan;
        if duration > self.max_duration {
            return Err(AgentError::InvalidArgument(format!(
                "profiles are capped at {} s in this agent (--max-profile-duration); asked {} s",
                self.max_duration.as_secs_f64(),
                duration.as_secs_f64()
            )));
        }
        let _claim = self.claim(&pids, backend)?;
        let started = Instant::now();
        let (live, fell_back) = match Live::start(backend, &pids, time_one_in, &proc_root, &ptrace_refused) {
            Err(AgentError::BackendUnavailable(why)) if backend == Backend::Ebpf && fallback => {
                (Live::start(Backend::Ptrace, &pids, 1, &proc_root, &ptrace_refused)?, Some(why))
            }
            started => (started?, None),
        };
        let mut named = Named { live, proc_root, names: HashMap::new() };
        let mut traced = pids.clone();
        let mut next_tick = started + tick_every;
        let mut next_rescan = started + Duration::from_secs(1);
        let partial = loop {
            std::thread::sleep(CHECK_EVERY.min(duration.saturating_sub(started.elapsed())));
            let now = Instant::now();
            if now.duration_since(started) >= duration {
                break None;
            }
            named.poll();
            let live = &mut named.live;
            if live.all_exited(&traced, &alive) {
                break Some("the target exited before the end".to_string());
            }
            if now >= next_rescan {
                next_rescan = now + Duration::from_secs(1);
                let new: Vec<i32> = more_pids().into_iter().filter(|p| !traced.contains(p)).collect();
                if !new.is_empty() && live.add(&new, &named.proc_root).is_ok() {
                    traced.extend(new);
                }
            }
            let progress = (now >= next_tick).then(|| {
                next_tick = now + tick_every;
                let c = live.snapshot();
                Progress {
                    elapsed: now.duration_since(started),
                    calls: c.syscalls.iter().map(|s| s.calls).sum(),
                    errors: c.syscalls.iter().map(|s| s.errors).sum(),
                }
            });
            if !tick(progress) {
                break Some("the client went away".to_string());
            }
        };
        named.poll();
        let Named { live, names, .. } = named;
        let mut counts = live.finish()?;
        counts.names = names.into_values().collect();
        Ok(Outcome { counts, pids: traced, elapsed: started.elapsed(), partial, fell_back })
    }

    fn claim(&self, pids: &[i32], backend: Backend) -> Result<Claim<'_>, AgentError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((pid, (b, since))) = pids.iter().find_map(|p| running.pids.get(p).map(|r| (*p, *r))) {
            return Err(AgentError::ProfileBusy { pid, backend: b.name(), secs: since.elapsed().as_secs() });
        }
        if running.profiles >= self.max_concurrent {
            return Err(AgentError::TooManyProfiles { max: self.max_concurrent });
        }
        running.profiles += 1;
        let now = Instant::now();
        for &p in pids {
            running.pids.insert(p, (backend, now));
        }
        Ok(Claim { profiles: self, pids: pids.to_vec() })
    }
}

/// Releases the claimed pids on every path out of `run`, panics included.
struct Claim<'a> {
    profiles: &'a Profiles,
    pids: Vec<i32>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut running = self.profiles.running.lock().unwrap_or_else(|e| e.into_inner());
        running.profiles -= 1;
        for p in &self.pids {
            running.pids.remove(p);
        }
    }
}

/// A backend at work, and the names of the fds it has seen so far.
struct Named {
    live: Live,
    proc_root: PathBuf,
    names: HashMap<(u32, i32, u32), FdName>,
}

impl Named {
    /// Takes the eBPF backend's slow calls, and names the fds seen since the last
    /// call while they are (most likely) still open. A name read after the fd was closed again is the next file's: the
    /// epoch tells, and such an fd stays unnamed.
    fn poll(&mut self) {
        if let Live::Ebpf(c) = &self.live {
            // A failed read leaves the threshold where it was: the next poll tries again.
            let _ = c.drain_slow();
        }
        // A name is read once: a later syscall on the same fd (a new entry) says nothing new.
        let mut fresh = self.live.take_fresh();
        fresh.retain(|k| !self.names.contains_key(k));
        fresh.sort_unstable();
        fresh.dedup();
        if fresh.is_empty() {
            return;
        }
        for mut name in targets::resolve(&self.proc_root, &fresh) {
            if self.live.epoch(name.tgid, name.fd) != name.epoch {
                name.kind = None;
                name.target = targets::CLOSED.to_string();
            }
            self.names.insert((name.tgid, name.fd, name.epoch), name);
        }
    }
}

/// A backend at work.
enum Live {
    Ebpf(Box<ebpf::Counter>),
    /// One tracer per process asked for (each follows its threads and forks).
    Ptrace(Vec<ptrace::Session>),
}

impl Live {
    fn start(
        backend: Backend,
        pids: &[i32],
        time_one_in: u32,
        proc_root: &Path,
        ptrace_refused: &str,
    ) -> Result<Self, AgentError> {
        match backend {
            Backend::Ebpf => {
                let ns = ebpf::pidns_of_self().map_err(|e| AgentError::Profile(format!("own pid namespace: {e}")))?;
                let tgids: Vec<u32> = pids.iter().map(|&p| p as u32).collect();
                ebpf::Counter::attach(ns, &tgids, time_one_in).map(|c| Live::Ebpf(Box::new(c))).map_err(ebpf_error)
            }
            Backend::Ptrace => {
                let mut sessions = Vec::with_capacity(pids.len());
                for &pid in pids {
                    match ptrace::start(pid, proc_root) {
                        Ok(s) => sessions.push(s),
                        // A container's process that exited meanwhile is not an error.
                        Err(ptrace::PtraceError::Gone { .. }) if pids.len() > 1 => {}
                        // Dropping the sessions started so far detaches them.
                        Err(e) => return Err(ptrace_error(e, ptrace_refused)),
                    }
                }
                Ok(Live::Ptrace(sessions))
            }
        }
    }

    fn add(&mut self, pids: &[i32], proc_root: &Path) -> Result<(), AgentError> {
        match self {
            Live::Ebpf(c) => c.add_tgids(&pids.iter().map(|&p| p as u32).collect::<Vec<_>>()).map_err(ebpf_error),
            Live::Ptrace(sessions) => {
                for &pid in pids {
                    if let Ok(s) = ptrace::start(pid, proc_root) {
                        sessions.push(s);
                    }
                }
                Ok(())
            }
        }
    }

    fn take_fresh(&mut self) -> Vec<(u32, i32, u32)> {
        match self {
            Live::Ebpf(c) => c.take_fresh(),
            Live::Ptrace(sessions) => sessions.iter().flat_map(|s| s.take_fresh()).collect(),
        }
    }

    fn epoch(&self, tgid: u32, fd: i32) -> u32 {
        match self {
            Live::Ebpf(c) => c.epoch(tgid, fd),
            Live::Ptrace(sessions) => sessions.iter().map(|s| s.epoch(tgid, fd)).max().unwrap_or(0),
        }
    }

    fn snapshot(&self) -> Counts {
        match self {
            Live::Ebpf(c) => c.read().unwrap_or_default(),
            Live::Ptrace(sessions) => merge(sessions.iter().map(|s| s.snapshot())),
        }
    }

    fn all_exited(&self, pids: &[i32], alive: &impl Fn(i32) -> bool) -> bool {
        match self {
            Live::Ebpf(_) => !pids.iter().any(|&p| alive(p)),
            Live::Ptrace(sessions) => sessions.iter().all(|s| s.target_exited()),
        }
    }

    fn finish(self) -> Result<Counts, AgentError> {
        match self {
            Live::Ebpf(c) => c.read().map_err(ebpf_error), // dropping it detaches
            Live::Ptrace(sessions) => {
                let mut all = Vec::with_capacity(sessions.len());
                let mut first_error = None;
                for s in sessions {
                    match s.stop() {
                        Ok(o) => all.push(o.counts),
                        Err(e) => first_error = first_error.or(Some(e)),
                    }
                }
                match first_error {
                    Some(e) if all.is_empty() => Err(ptrace_error(e, "")),
                    _ => Ok(merge(all.into_iter())),
                }
            }
        }
    }
}

fn merge(parts: impl Iterator<Item = Counts>) -> Counts {
    let mut out = Counts::default();
    let mut slowest = counts::Slowest::new(counts::SLOWEST_KEPT);
    for c in parts {
        out.syscalls.extend(c.syscalls);
        out.errnos.extend(c.errnos);
        out.lost += c.lost;
        out.detail_lost += c.detail_lost;
        out.slowest_missed += c.slowest_missed;
        out.time_one_in = out.time_one_in.max(c.time_one_in);
        c.slowest.into_iter().for_each(|call| slowest.offer(call));
    }
    out.slowest = slowest.to_vec();
    out
}

fn ebpf_error(e: ebpf::BpfError) -> AgentError {
    match e {
        ebpf::BpfError::PermissionDenied(why) => AgentError::BackendUnavailable(why),
        e => AgentError::Profile(e.to_string()),
    }
}

/// `refused`: why ptrace may be refused here (the start-up probe's words), added to a refusal.
fn ptrace_error(e: ptrace::PtraceError, refused: &str) -> AgentError {
    match e {
        ptrace::PtraceError::AlreadyTraced { pid, tracer_pid } => AgentError::AlreadyTraced { pid, tracer_pid },
        ptrace::PtraceError::Gone { pid } => AgentError::ProcessNotFound { pid },
        e @ ptrace::PtraceError::PermissionDenied { .. } if refused.is_empty() => {
            AgentError::BackendUnavailable(e.to_string())
        }
        e @ ptrace::PtraceError::PermissionDenied { .. } => AgentError::BackendUnavailable(format!("{e}; {refused}")),
        e => AgentError::Profile(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Level;

    #[test]
    fn the_measured_trial_decides_the_backend() {
        let refused = Privileges {
            level: Level::Ptrace,
            capabilities: u64::MAX,
            ebpf: Err("creating a BPF map failed (EPERM): seccomp".into()),
            limitations: vec![],
        };
        let (b, why) = choose(v1::ProfileBackend::Unspecified, &refused).unwrap();
        assert_eq!(
            (b, why.as_str()),
            (
                Backend::Ptrace,
                "ebpf is unavailable (creating a BPF map failed (EPERM): seccomp): ptrace, which stops the target at every syscall"
            )
        );
        let Err(AgentError::BackendUnavailable(e)) = choose(v1::ProfileBackend::Ebpf, &refused) else { panic!() };
        assert!(e.contains("seccomp"), "{e}");
        let allowed = Privileges { ebpf: Ok(()), level: Level::Ebpf, ..refused };
        assert_eq!(choose(v1::ProfileBackend::Unspecified, &allowed).unwrap().0, Backend::Ebpf);
        assert_eq!(choose(v1::ProfileBackend::Ptrace, &allowed).unwrap().0, Backend::Ptrace);
    }

    #[test]
    fn claims_are_one_per_process_and_bounded_in_number() {
        let p = Profiles::new(Duration::from_secs(60), 2);
        let a = p.claim(&[10, 11], Backend::Ebpf).unwrap();
        assert!(matches!(
            p.claim(&[11], Backend::Ptrace),
            Err(AgentError::ProfileBusy { pid: 11, backend: "ebpf", .. })
        ));
        // A container with no process yet is still a profile.
        let b = p.claim(&[], Backend::Ptrace).unwrap();
        assert!(matches!(p.claim(&[12], Backend::Ptrace), Err(AgentError::TooManyProfiles { max: 2 })));
        drop(a);
        let c = p.claim(&[11], Backend::Ptrace).unwrap();
        drop((b, c));
        assert_eq!(p.running.lock().unwrap().profiles, 0);
        assert!(p.running.lock().unwrap().pids.is_empty());
    }
}
