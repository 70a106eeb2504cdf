//! Who the kernel's OOM killer picks in a container at its limit: `oom_badness()` of
//! mm/oom_kill.c for a memory-cgroup OOM — RSS + swap entries + page tables, in
//! pages, plus `oom_score_adj` × (the cgroup's limit in pages) / 1000; a process with
//! adj -1000 is never picked. `/proc/PID/oom_score` is the same sum scaled against
//! the node's RAM and swap instead of the limit, so once an adj is set it can rank
//! a container's processes differently from the kill: it is reported, not ranked by.

use crate::error::read_file;
use crate::proc::parse::parse_status;
use std::path::Path;

const OOM_SCORE_ADJ_MIN: i64 = -1000;

/// What the kernel weighs for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomInputs {
    pub rss_bytes: u64,
    pub swap_bytes: u64,
    pub page_table_bytes: u64,
    pub oom_score_adj: i32,
    /// /proc/PID/oom_score, 0..=2000.
    pub oom_score: Option<u32>,
}

/// Reads a process's inputs (status, oom_score_adj and oom_score are world-readable).
pub fn read(proc_root: &Path, pid: i32) -> Option<OomInputs> {
    let dir = proc_root.join(pid.to_string());
    let status = parse_status(&read_file(dir.join("status")).ok()?).ok()?;
    let number = |name: &str| -> Option<i64> {
        let b = read_file(dir.join(name)).ok()?;
        std::str::from_utf8(&b).ok()?.trim().parse().ok()
    };
    let kb = |v: Option<u64>| v.unwrap_or(0).saturating_mul(1024);
    Some(OomInputs {
        rss_bytes: kb(status.vmrss),
        swap_bytes: kb(status.vmswap),
        page_table_bytes: kb(status.vmpte),
        oom_score_adj: i32::try_from(number("oom_score_adj")?).ok()?,
        oom_score: number("oom_score").and_then(|s| u32::try_from(s).ok()),
    })
}

/// The kernel's badness in a cgroup OOM with `limit_bytes`; None: never chosen.
pub fn badness(i: &OomInputs, limit_bytes: u64, page: u64) -> Option<i64> {
    let adj = i64::from(i.oom_score_adj);
    if adj <= OOM_SCORE_ADJ_MIN {
        return None;
    }
    let pages = |b: u64| i64::try_from(b / page.max(1)).unwrap_or(i64::MAX);
    let points = pages(i.rss_bytes).saturating_add(pages(i.swap_bytes)).saturating_add(pages(i.page_table_bytes));
    Some(points.saturating_add(adj.saturating_mul(pages(limit_bytes)) / 1000))
}

/// The pid the killer would pick among `candidates` now: the highest badness (the
/// kernel keeps the first of equals, in its task-list order, which /proc's pid order
/// approximates).
pub fn next(candidates: &[(i32, OomInputs)], limit_bytes: u64, page: u64) -> Option<i32> {
    let mut best: Option<(i64, i32)> = None;
    for &(pid, ref i) in candidates {
        if let Some(b) = badness(i, limit_bytes, page)
            && best.is_none_or(|(top, _)| b > top)
        {
            best = Some((b, pid));
        }
    }
    best.map(|(_, pid)| pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn inputs(rss_mib: u64, adj: i32) -> OomInputs {
        OomInputs { rss_bytes: rss_mib * MIB, swap_bytes: 0, page_table_bytes: 0, oom_score_adj: adj, oom_score: None }
    }

    #[test]
    fn the_biggest_is_picked_and_adj_weighs_against_the_limit() {
        let limit = 256 * MIB;
        assert_eq!(next(&[(1, inputs(50, 0)), (2, inputs(150, 0))], limit, 4096), Some(2));
        // +500 of 1000 is half the limit (128 MiB) here, not half the node's RAM.
        assert_eq!(next(&[(1, inputs(50, 500)), (2, inputs(150, 0))], limit, 4096), Some(1));
        assert_eq!(next(&[(1, inputs(10, 500)), (2, inputs(150, 0))], limit, 4096), Some(2));
        // -1000: never; equal badness: the first.
        assert_eq!(next(&[(1, inputs(50, -1000)), (2, inputs(1, 0))], limit, 4096), Some(2));
        assert_eq!(next(&[(1, inputs(5, 0)), (2, inputs(5, 0))], limit, 4096), Some(1));
        assert_eq!(next(&[(1, inputs(5, -1000))], limit, 4096), None);
    }

    #[test]
    fn reads_this_process() {
        let me = read(Path::new("/proc"), std::process::id() as i32).expect("own oom inputs");
        assert!(me.rss_bytes > 0 && me.oom_score.is_some(), "{me:?}");
    }
}
