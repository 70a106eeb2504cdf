//! A backend's per-thread counts folded into the `strace -c` table: per
//! syscall over all threads (most time first), per thread, and per fd target
//! (what each fd was: a path, a TCP connection…), with latency histograms.

use super::counts::{Counts, FdName, Histogram, NO_FD, OVERFLOW_FD, SlowCall, SyscallCount};
use super::names;
use crate::model::FdKind;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    pub nr: u32,
    pub name: String,
    pub calls: u64,
    pub errors: u64,
    /// Errno names, most first.
    pub errnos: Vec<(String, u64)>,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Calls timed (fewer than `calls` when the backend sampled).
    pub timed: u64,
    pub hist: Histogram,
    /// The fd targets this syscall spent the most time on: (target, calls, ns).
    pub top_fds: Vec<(String, u64, u64)>,
}

impl Stat {
    pub fn percentile(&self, q: f64) -> u64 {
        self.hist.percentile(q, self.min_ns, self.max_ns)
    }
}

/// What one fd was and the time spent on it.
#[derive(Debug, Clone, PartialEq)]
pub struct FdStat {
    pub tgid: u32,
    pub fd: i32,
    pub epoch: u32,
    /// None: not known (closed before it was read, or the overflow row).
    pub kind: Option<FdKind>,
    pub target: String,
    /// (syscall, calls, ns), most time first.
    pub syscalls: Vec<(String, u64, u64)>,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub timed: u64,
    pub hist: Histogram,
}

impl FdStat {
    pub fn percentile(&self, q: f64) -> u64 {
        self.hist.percentile(q, self.min_ns, self.max_ns)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadStat {
    pub tid: u32,
    pub tgid: u32,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub syscalls: Vec<Stat>,
    /// By fd target, most time first.
    pub fds: Vec<FdStat>,
}

/// A slow call with what its fd was.
#[derive(Debug, Clone, PartialEq)]
pub struct Slow {
    pub call: SlowCall,
    pub syscall: String,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub syscalls: Vec<Stat>,
    pub threads: Vec<ThreadStat>,
    /// By fd target over all threads, most time first.
    pub fds: Vec<FdStat>,
    pub slowest: Vec<Slow>,
    pub slowest_missed: u64,
    /// One call in this many was timed (1: every call).
    pub time_one_in: u32,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub lost: u64,
    pub detail_lost: u64,
}

impl Summary {
    pub fn get(&self, name: &str) -> Option<&Stat> {
        self.syscalls.iter().find(|s| s.name == name)
    }
}

/// How many fd targets a syscall's line names.
const TOP_FDS: usize = 3;

type FdKey = (u32, i32, u32);

pub fn summarize(c: &Counts, slowest: usize) -> Summary {
    let names: HashMap<FdKey, &FdName> = c.names.iter().map(|n| ((n.tgid, n.fd, n.epoch), n)).collect();
    let label = |k: FdKey| -> (Option<FdKind>, String) {
        match names.get(&k) {
            _ if k.1 == OVERFLOW_FD => (None, "other fds (counted once the agent's kernel map was full)".into()),
            Some(n) if n.kind.is_some() => (n.kind, n.target.clone()),
            // Several fds may have closed unread: the number tells them apart.
            Some(n) => (None, format!("fd {} {}", k.1, n.target)),
            None => (None, format!("fd {} (not read)", k.1)),
        }
    };
    let mut errnos: BTreeMap<u32, BTreeMap<u32, u64>> = BTreeMap::new();
    for e in &c.errnos {
        *errnos.entry(e.nr).or_default().entry(e.errno).or_default() += e.count;
    }
    let live: Vec<&SyscallCount> = c.syscalls.iter().filter(|s| s.calls > 0).collect();
    let mut by_nr: BTreeMap<u32, Stat> = BTreeMap::new();
    let mut by_tid: BTreeMap<u32, (u32, BTreeMap<u32, Stat>)> = BTreeMap::new();
    // The entries with an fd, grouped once by syscall and by thread.
    let (mut fd_entries_of_nr, mut fd_entries_of_tid): (HashMap<u32, Vec<&SyscallCount>>, HashMap<u32, Vec<_>>) =
        Default::default();
    for s in &live {
        add(by_nr.entry(s.nr).or_default(), s);
        let thread = by_tid.entry(s.tid).or_insert_with(|| (s.tgid, BTreeMap::new()));
        add(thread.1.entry(s.nr).or_default(), s);
        if s.fd != NO_FD {
            fd_entries_of_nr.entry(s.nr).or_default().push(*s);
            fd_entries_of_tid.entry(s.tid).or_default().push(*s);
        }
    }
    let fd_entries: Vec<&SyscallCount> = live.iter().copied().filter(|s| s.fd != NO_FD).collect();
    let on_fds = |entries: &[&SyscallCount]| -> Vec<FdStat> {
        let mut m: BTreeMap<FdKey, FdStat> = BTreeMap::new();
        for s in entries {
            let key = (s.tgid, s.fd, s.epoch);
            let f = m.entry(key).or_insert_with(|| {
                let (kind, target) = label(key);
                FdStat {
                    tgid: s.tgid,
                    fd: s.fd,
                    epoch: s.epoch,
                    kind,
                    target,
                    syscalls: Vec::new(),
                    calls: 0,
                    errors: 0,
                    total_ns: 0,
                    min_ns: u64::MAX,
                    max_ns: 0,
                    timed: 0,
                    hist: Histogram::default(),
                }
            });
            f.timed += s.timed;
            f.calls += s.calls;
            f.errors += s.errors;
            f.total_ns += s.total_ns;
            if s.timed > 0 {
                f.min_ns = f.min_ns.min(s.min_ns);
                f.max_ns = f.max_ns.max(s.max_ns);
            }
            f.hist.add(&s.hist);
            let name = names::syscall(s.nr);
            match f.syscalls.iter_mut().find(|(n, ..)| *n == name) {
                Some(row) => (row.1, row.2) = (row.1 + s.calls, row.2 + s.total_ns),
                None => f.syscalls.push((name, s.calls, s.total_ns)),
            }
        }
        let mut v: Vec<FdStat> = m.into_values().collect();
        for f in &mut v {
            if f.min_ns == u64::MAX {
                f.min_ns = 0; // nothing timed
            }
            f.syscalls.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)));
        }
        v.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(b.calls.cmp(&a.calls)).then(a.fd.cmp(&b.fd)));
        v
    };
    let table = |m: BTreeMap<u32, Stat>, with_detail: bool| -> Vec<Stat> {
        let mut v: Vec<Stat> = m
            .into_iter()
            .map(|(nr, mut s)| {
                s.nr = nr;
                s.name = names::syscall(nr);
                if with_detail {
                    if let Some(e) = errnos.get(&nr) {
                        s.errnos = e.iter().map(|(&errno, &n)| (names::errno(errno), n)).collect();
                        s.errnos.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    }
                    let entries = fd_entries_of_nr.get(&nr).map_or(&[][..], Vec::as_slice);
                    let mut top: Vec<(String, u64, u64)> =
                        on_fds(entries).into_iter().map(|f| (f.target, f.calls, f.total_ns)).collect();
                    top.truncate(TOP_FDS);
                    s.top_fds = top;
                }
                s
            })
            .collect();
        v.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(b.calls.cmp(&a.calls)).then_with(|| a.name.cmp(&b.name)));
        v
    };
    let syscalls = table(by_nr, true);
    let threads = by_tid
        .into_iter()
        .map(|(tid, (tgid, m))| {
            let syscalls = table(m, false);
            ThreadStat {
                tid,
                tgid,
                calls: syscalls.iter().map(|s| s.calls).sum(),
                errors: syscalls.iter().map(|s| s.errors).sum(),
                total_ns: syscalls.iter().map(|s| s.total_ns).sum(),
                syscalls,
                fds: on_fds(fd_entries_of_tid.get(&tid).map_or(&[][..], Vec::as_slice)),
            }
        })
        .collect();
    let slowest = c
        .slowest
        .iter()
        .take(slowest)
        .map(|call| Slow {
            call: call.clone(),
            syscall: names::syscall(call.nr),
            target: (call.fd != NO_FD).then(|| label((call.tgid, call.fd, call.epoch)).1),
        })
        .collect();
    Summary {
        calls: syscalls.iter().map(|s| s.calls).sum(),
        errors: syscalls.iter().map(|s| s.errors).sum(),
        total_ns: syscalls.iter().map(|s| s.total_ns).sum(),
        fds: on_fds(&fd_entries),
        syscalls,
        threads,
        slowest,
        slowest_missed: c.slowest_missed,
        time_one_in: c.time_one_in.max(1),
        lost: c.lost,
        detail_lost: c.detail_lost,
    }
}

fn add(into: &mut Stat, s: &SyscallCount) {
    if s.timed > 0 {
        into.min_ns = if into.timed == 0 { s.min_ns } else { into.min_ns.min(s.min_ns) };
        into.max_ns = into.max_ns.max(s.max_ns);
    }
    into.timed += s.timed;
    into.calls += s.calls;
    into.errors += s.errors;
    into.total_ns += s.total_ns;
    into.hist.add(&s.hist);
}

#[cfg(test)]
mod tests {
    use super::super::counts::{ErrnoCount, SyscallCount, bucket};
    use super::*;

    fn count(tid: u32, nr: u32, fd: i32, calls: u64, errors: u64, ns: &[u64]) -> SyscallCount {
        let mut c = SyscallCount { tgid: 7, tid, nr, fd, ..Default::default() };
        for &n in ns {
            c.record(0, n);
        }
        // Only the totals of `calls` and `errors` matter where `ns` is shorter.
        c.calls = calls;
        c.errors = errors;
        c
    }

    #[test]
    fn threads_fold_into_one_table_most_time_first() {
        let c = Counts {
            syscalls: vec![
                count(7, 257, NO_FD, 3, 3, &[5, 10, 15]),
                count(8, 257, NO_FD, 2, 1, &[2, 18]),
                count(8, 110, NO_FD, 9, 0, &[10; 9]),
            ],
            errnos: vec![ErrnoCount { nr: 257, errno: 2, count: 3 }, ErrnoCount { nr: 257, errno: 13, count: 1 }],
            ..Default::default()
        };
        let s = summarize(&c, 10);
        assert_eq!((s.calls, s.errors, s.total_ns), (14, 4, 140));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(s.syscalls.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["getppid", "openat"]);
        let open = &s.syscalls[1];
        assert_eq!((open.calls, open.errors, open.total_ns, open.min_ns, open.max_ns), (5, 4, 50, 2, 18));
        assert_eq!(open.errnos, [("ENOENT".to_string(), 3), ("EACCES".to_string(), 1)]);
        assert_eq!(s.threads.iter().map(|t| (t.tid, t.calls)).collect::<Vec<_>>(), [(7, 3), (8, 11)]);
        assert!(s.fds.is_empty() && open.top_fds.is_empty());
    }

    #[test]
    fn time_by_fd_names_each_target_and_reused_numbers_apart() {
        let mut reused = count(7, 0, 3, 2, 0, &[100, 300]);
        reused.epoch = 1;
        let c = Counts {
            syscalls: vec![
                count(7, 0, 3, 4, 0, &[10, 10, 10, 10]), // read on fd 3, the first file
                reused,                                  // read on fd 3 after a close: another file
                count(8, 1, 4, 1, 0, &[1000]),           // write on the socket
                count(7, 1, 4, 1, 0, &[50]),
                count(7, 0, 9, 1, 0, &[5]), // a read on an fd closed before it was named
            ],
            names: vec![
                FdName { tgid: 7, fd: 3, epoch: 0, kind: Some(FdKind::File), target: "/a".into() },
                FdName { tgid: 7, fd: 3, epoch: 1, kind: Some(FdKind::File), target: "/b".into() },
                FdName { tgid: 7, fd: 4, epoch: 0, kind: Some(FdKind::Socket), target: "tcp x -> y".into() },
                FdName { tgid: 7, fd: 9, epoch: 0, kind: None, target: crate::profile::targets::CLOSED.into() },
            ],
            ..Default::default()
        };
        let s = summarize(&c, 10);
        let fds: Vec<(&str, u64, u64)> = s.fds.iter().map(|f| (f.target.as_str(), f.calls, f.total_ns)).collect();
        let closed = format!("fd 9 {}", crate::profile::targets::CLOSED);
        assert_eq!(fds, [("tcp x -> y", 2, 1050), ("/b", 2, 400), ("/a", 4, 40), (closed.as_str(), 1, 5)]);
        assert_eq!(s.fds[3].kind, None);
        assert_eq!(s.fds[0].syscalls.len(), 1);
        #[cfg(target_arch = "x86_64")]
        {
            let read = s.get("read").unwrap();
            let top = [("/b".to_string(), 2, 400), ("/a".to_string(), 4, 40), (closed.clone(), 1, 5)];
            assert_eq!(read.top_fds, top);
        }
        assert_eq!(s.threads[1].fds.iter().map(|f| f.total_ns).collect::<Vec<_>>(), [1000]);
    }

    #[test]
    fn percentiles_are_bucket_bounds_within_min_and_max() {
        let mut hist = Histogram::default();
        hist.0[bucket(1_000)] = 98; // ~1 µs
        hist.0[bucket(2_000_000)] = 2; // ~2 ms
        assert_eq!(hist.percentile(0.5, 900, 2_100_000), 1023);
        assert_eq!(hist.percentile(0.99, 900, 2_100_000), 2_097_151);
        assert_eq!(hist.percentile(1.0, 900, 2_000_000), 2_000_000);
        assert_eq!(Histogram::default().percentile(0.5, 0, 0), 0);
        assert_eq!(hist.used().len(), bucket(2_000_000) + 1);
    }
}
