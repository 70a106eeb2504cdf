//! The collector: every visible process, grouped into containers, with findings.
//! A process that vanishes mid-scan is skipped (before its first read) or marked
//! (after); it never fails the whole snapshot.

use crate::cgroup::CgroupReader;
use crate::error::{AgentError, ReadError};
use crate::fds::{self, summary};
use crate::findings;
use crate::model::{Container, FdSummary, FdTable, Filter, Process, Snapshot, Unavailable};
use crate::net::NetnsCache;
use crate::proc::ProcReader;
use crate::trend::FdSampler;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The processes one answer reads; a pod never has this many, a fork bomb may.
pub const MAX_PROCESSES: usize = 4096;

/// Where the agent reads the OS from.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    /// A directory laid out like the host's /sys/fs/cgroup, tried before any mount.
    pub cgroup: Option<PathBuf>,
}

impl Default for Roots {
    fn default() -> Self {
        Self { proc: PathBuf::from("/proc"), cgroup: None }
    }
}

#[derive(Debug)]
pub struct Collector {
    procs: ProcReader,
    cgroups: Result<CgroupReader, ReadError>,
    max_processes: usize,
}

impl Collector {
    /// `has_sys_ptrace`: whether the reader holds CAP_SYS_PTRACE (it explains refusals).
    pub fn new(roots: &Roots, has_sys_ptrace: bool) -> Self {
        Self {
            procs: ProcReader::new(&roots.proc).with_denied_hint(crate::proc::denied_hint(has_sys_ptrace)),
            cgroups: CgroupReader::new(&roots.proc, roots.cgroup.clone()),
            max_processes: MAX_PROCESSES,
        }
    }

    /// Reads at most `n` processes an answer (default [`MAX_PROCESSES`]).
    pub fn with_max_processes(mut self, n: usize) -> Self {
        self.max_processes = n;
        self
    }

    pub fn proc_reader(&self) -> &ProcReader {
        &self.procs
    }

    /// The processes the filter selects. A filter naming pids none of which exist is
    /// an error; pids that exist are returned even if others named do not.
    pub fn processes(&self, filter: &Filter) -> Result<(Vec<Process>, Vec<Unavailable>), AgentError> {
        let mut unavailable = Vec::new();
        let pids = if filter.pids.is_empty() { self.procs.pids()? } else { filter.pids.clone() };
        let mut pids = pids;
        pids.sort_unstable();
        pids.dedup();
        if pids.len() > self.max_processes {
            unavailable.push(Unavailable::new(
                "processes",
                format!("truncated: the first {} of {} processes (by pid) are read", self.max_processes, pids.len()),
            ));
            pids.truncate(self.max_processes);
        }
        let mut processes = Vec::with_capacity(pids.len());
        let mut first_error = None;
        for (pid, result) in self.procs.read_many(&pids) {
            match result {
                Ok(p) => processes.push(p),
                // Gone before its first read: it exited, or never was (a pid asked for).
                Err(ReadError::Gone { .. }) if filter.pids.is_empty() => {}
                Err(ReadError::Gone { .. }) => {
                    unavailable.push(Unavailable::new(format!("pid {pid}"), "no such process"));
                }
                Err(e) => {
                    unavailable.push(Unavailable::from_read(format!("pid {pid}"), &e));
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(want) = &filter.container_id {
            processes.retain(|p| p.container_id().is_some_and(|id| id.starts_with(want.as_str())));
            if processes.is_empty() {
                return Err(AgentError::NothingMatches { filter: format!("container id {want}") });
            }
        }
        if processes.is_empty() && !filter.pids.is_empty() {
            // Nothing read: say why, the first real error before "not found".
            return Err(match first_error {
                Some(e) => e.into(),
                None => AgentError::ProcessNotFound { pid: filter.pids[0] },
            });
        }
        Ok((processes, unavailable))
    }

    /// One process; with `start_time_ticks`, only if it is still that process.
    pub fn process(&self, pid: i32, start_time_ticks: Option<u64>) -> Result<Process, AgentError> {
        if pid <= 0 {
            return Err(AgentError::InvalidArgument(format!("pid {pid} is not a process id")));
        }
        let p = self.procs.read(pid).map_err(|e| match e {
            ReadError::Gone { .. } => AgentError::ProcessNotFound { pid },
            e => e.into(),
        })?;
        match start_time_ticks {
            Some(expected) if expected != p.start_time_ticks => {
                Err(AgentError::ProcessReused { pid, expected, found: p.start_time_ticks })
            }
            _ => Ok(p),
        }
    }

    /// Containers of these processes: one per cgroup, read once.
    pub fn containers(&self, processes: &[Process]) -> (Vec<Container>, Vec<Unavailable>) {
        let reader = match &self.cgroups {
            Ok(r) => r,
            Err(e) => return (Vec::new(), vec![Unavailable::from_read("containers", e)]),
        };
        let mut groups: BTreeMap<&str, Vec<&Process>> = BTreeMap::new();
        for p in processes.iter().filter(|p| !p.kernel_thread) {
            if let Some(m) = p.container_cgroup() {
                groups.entry(m.path.as_str()).or_default().push(p);
            }
        }
        let containers = groups
            .into_values()
            .map(|members| {
                let first = members[0];
                let mut c = reader.read_container(first.pid, &first.cgroups);
                c.pids = members.iter().map(|p| p.pid).collect();
                c
            })
            .collect();
        (containers, Vec::new())
    }

    /// The fd table of a process that was just read, sockets resolved through the
    /// cache of its network namespace; its summary and trend are set on `p`.
    pub fn fd_table(
        &self,
        p: &mut Process,
        netns: &NetnsCache,
        sampler: Option<&FdSampler>,
        detail: fds::Detail,
    ) -> Option<FdTable> {
        if p.kernel_thread || p.is_zombie() || p.exited_mid_read {
            return None;
        }
        let dir = self.procs.root().join(p.pid.to_string());
        match fds::read_table_with(&dir, Some(p.start_time_ticks), || netns.tables_for(&dir), detail) {
            Ok(table) => {
                let soft = p.fds.limit.and_then(|l| l.soft);
                p.fd_summary = Some(summary::summarize(&table, soft));
                p.fd_trend = sampler.and_then(|s| s.trend(p.pid, p.start_time_ticks, soft));
                p.unavailable.extend(table.unavailable.iter().cloned());
                Some(table)
            }
            Err(e) if e.is_gone() => {
                p.exited_mid_read = true;
                p.unavailable.push(Unavailable::new("fds", "the process exited while it was being read"));
                None
            }
            Err(e) => {
                p.unavailable.push(fds::unavailable(&e, self.procs.denied_hint()));
                None
            }
        }
    }

    /// Every process's fd summary, on several threads.
    fn read_fd_tables(&self, processes: &mut [Process], netns: &NetnsCache, sampler: Option<&FdSampler>) {
        crate::par::for_each_mut(processes, 16, |p| drop(self.fd_table(p, netns, sampler, fds::Detail::summary())));
    }

    /// One process and its fd table (`None` with the reason in `unavailable` when
    /// the table cannot be read).
    pub fn process_fds(
        &self,
        pid: i32,
        start_time_ticks: Option<u64>,
        sampler: Option<&FdSampler>,
        detail: fds::Detail,
    ) -> Result<(Process, Option<FdTable>), AgentError> {
        let mut p = self.process(pid, start_time_ticks)?;
        let table = self.fd_table(&mut p, &NetnsCache::default(), sampler, detail);
        Ok((p, table))
    }

    pub fn snapshot(&self, filter: &Filter, sampler: Option<&FdSampler>) -> Result<Snapshot, AgentError> {
        let started = Instant::now();
        let taken_at_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
        let (mut processes, mut unavailable) = self.processes(filter)?;
        let netns = NetnsCache::default();
        self.read_fd_tables(&mut processes, &netns, sampler);
        let mut fd_totals = FdSummary::default();
        for s in processes.iter().filter_map(|p| p.fd_summary.as_ref()) {
            summary::add(&mut fd_totals, s);
        }
        let (containers, more) = self.containers(&processes);
        unavailable.extend(more);
        if filter.is_empty() && processes.iter().all(|p| p.pid == std::process::id() as i32) {
            unavailable.push(Unavailable::new(
                "other processes",
                "the agent sees no process but itself: run it in the pod's PID namespace \
                 (shareProcessNamespace: true, or `kubectl osl attach`)",
            ));
        }
        let findings = findings::evaluate(&processes, &containers);
        Ok(Snapshot {
            taken_at_unix_ms,
            capture_usec: started.elapsed().as_micros() as u64,
            processes,
            containers,
            findings,
            unavailable,
            fd_totals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_holds_at_most_the_cap_of_processes_and_says_so() {
        let c = Collector::new(&Roots::default(), true).with_max_processes(3);
        let (procs, unavailable) = c.processes(&Filter::default()).unwrap();
        assert!(procs.len() <= 3, "{}", procs.len());
        let cut = unavailable.iter().find(|u| u.field == "processes").expect("marked");
        assert!(cut.reason.starts_with("truncated: the first 3 of"), "{}", cut.reason);
    }
}
