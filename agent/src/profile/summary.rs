//! A backend's per-thread counts folded into the `strace -c` table: per
//! syscall over all threads (most time first), and per thread.

use super::counts::Counts;
use super::names;
use std::collections::BTreeMap;

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
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadStat {
    pub tid: u32,
    pub tgid: u32,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub syscalls: Vec<Stat>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub syscalls: Vec<Stat>,
    pub threads: Vec<ThreadStat>,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub lost: u64,
}

impl Summary {
    pub fn get(&self, name: &str) -> Option<&Stat> {
        self.syscalls.iter().find(|s| s.name == name)
    }
}

pub fn summarize(c: &Counts) -> Summary {
    let mut errnos: BTreeMap<u32, BTreeMap<u32, u64>> = BTreeMap::new();
    for e in &c.errnos {
        *errnos.entry(e.nr).or_default().entry(e.errno).or_default() += e.count;
    }
    let mut by_nr: BTreeMap<u32, Stat> = BTreeMap::new();
    let mut by_tid: BTreeMap<u32, (u32, BTreeMap<u32, Stat>)> = BTreeMap::new();
    for s in c.syscalls.iter().filter(|s| s.calls > 0) {
        add(by_nr.entry(s.nr).or_default(), s);
        let thread = by_tid.entry(s.tid).or_insert_with(|| (s.tgid, BTreeMap::new()));
        add(thread.1.entry(s.nr).or_default(), s);
    }
    let table = |m: BTreeMap<u32, Stat>, with_errnos: bool| -> Vec<Stat> {
        let mut v: Vec<Stat> = m
            .into_iter()
            .map(|(nr, mut s)| {
                s.nr = nr;
                s.name = names::syscall(nr);
                if with_errnos && let Some(e) = errnos.get(&nr) {
                    s.errnos = e.iter().map(|(&errno, &n)| (names::errno(errno), n)).collect();
                    s.errnos.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
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
            }
        })
        .collect();
    Summary {
        calls: syscalls.iter().map(|s| s.calls).sum(),
        errors: syscalls.iter().map(|s| s.errors).sum(),
        total_ns: syscalls.iter().map(|s| s.total_ns).sum(),
        syscalls,
        threads,
        lost: c.lost,
    }
}

fn add(into: &mut Stat, s: &super::counts::SyscallCount) {
    into.min_ns = if into.calls == 0 { s.min_ns } else { into.min_ns.min(s.min_ns) };
    into.max_ns = into.max_ns.max(s.max_ns);
    into.calls += s.calls;
    into.errors += s.errors;
    into.total_ns += s.total_ns;
}

#[cfg(test)]
mod tests {
    use super::super::counts::{ErrnoCount, SyscallCount};
    use super::*;

    #[test]
    fn threads_fold_into_one_table_most_time_first() {
        let c = Counts {
            syscalls: vec![
                SyscallCount { tgid: 7, tid: 7, nr: 257, calls: 3, errors: 3, total_ns: 30, min_ns: 5, max_ns: 15 },
                SyscallCount { tgid: 7, tid: 8, nr: 257, calls: 2, errors: 1, total_ns: 20, min_ns: 2, max_ns: 18 },
                SyscallCount { tgid: 7, tid: 8, nr: 110, calls: 9, errors: 0, total_ns: 90, min_ns: 10, max_ns: 10 },
            ],
            errnos: vec![ErrnoCount { nr: 257, errno: 2, count: 3 }, ErrnoCount { nr: 257, errno: 13, count: 1 }],
            lost: 0,
        };
        let s = summarize(&c);
        assert_eq!((s.calls, s.errors, s.total_ns), (14, 4, 140));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(s.syscalls.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["getppid", "openat"]);
        let open = &s.syscalls[1];
        assert_eq!((open.calls, open.errors, open.total_ns, open.min_ns, open.max_ns), (5, 4, 50, 2, 18));
        assert_eq!(open.errnos, [("ENOENT".to_string(), 3), ("EACCES".to_string(), 1)]);
        assert_eq!(s.threads.iter().map(|t| (t.tid, t.calls)).collect::<Vec<_>>(), [(7, 3), (8, 11)]);
    }
}
