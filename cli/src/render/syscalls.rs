//! `kubectl osl strace`: the `strace -c` table, per-thread tables, and the
//! profile as an OCI seccomp allow-list.

use super::tables::Grid;
use osl_proto::units::duration_ns;
use osl_proto::v1;

fn secs(nsec: u64) -> String {
    format!("{:.6}", nsec as f64 / 1e9)
}

fn usecs(nsec: u64) -> String {
    format!("{}", nsec / 1000)
}

/// A latency, or "-" when no call was timed (a sampled profile).
fn latency(ns: u64, timed: u64) -> String {
    if timed == 0 { "-".into() } else { duration_ns(ns) }
}

/// "tcp 10.0.0.5:5432 … 78%": an fd target and its share of a total.
fn shares(top: &[v1::TimeCount], total_nsec: u64, n: usize) -> String {
    let part = |t: &v1::TimeCount| {
        let pct = if total_nsec == 0 { 0.0 } else { t.total_nsec as f64 * 100.0 / total_nsec as f64 };
        format!("{} {pct:.0}%", t.name)
    };
    top.iter().take(n).map(part).collect::<Vec<_>>().join(", ")
}

/// strace -c's columns, plus percentiles and the largest call, the errnos behind the
/// errors, and the fds the time went to; `-o wide` adds the shortest call.
pub fn table(stats: &[v1::SyscallStat], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec!["% TIME", "SECONDS", "USECS/CALL", "P50", "P99", "MAX"];
    if wide {
        headers.push("MIN");
    }
    headers.extend(["CALLS", "ERRORS", "SYSCALL", "ERRNO", "TOP FDS"]);
    let right: Vec<usize> = (0..headers.len() - 3).collect();
    let mut t = Grid::new(headers, &right);
    for s in stats {
        let errnos: Vec<String> =
            s.errnos.iter().take(if wide { 8 } else { 2 }).map(|c| format!("{} {}", c.name, c.count)).collect();
        let mut row = vec![
            format!("{:.2}", s.time_pct),
            secs(s.total_nsec),
            usecs(s.total_nsec.checked_div(s.calls).unwrap_or(0)),
            latency(s.p50_nsec, s.timed),
            latency(s.p99_nsec, s.timed),
            latency(s.max_nsec, s.timed),
        ];
        if wide {
            row.push(latency(s.min_nsec, s.timed));
        }
        row.extend([
            s.calls.to_string(),
            if s.errors == 0 { String::new() } else { s.errors.to_string() },
            s.name.clone(),
            errnos.join(", "),
            shares(&s.top_fds, s.total_nsec, if wide { 3 } else { 2 }),
        ]);
        t.push(row);
    }
    t.render(width)
}

/// Time by fd target, most first: what each fd was and the time its syscalls took.
pub fn fd_table(fds: &[v1::FdStat], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec!["% WALL", "SECONDS", "CALLS", "ERRORS", "P50", "P99", "MAX", "PID", "FD", "SYSCALLS"];
    if wide {
        headers.insert(7, "MIN");
    }
    headers.push("TARGET");
    let right: Vec<usize> = (0..headers.len() - 2).collect();
    let mut t = Grid::new(headers, &right);
    for f in fds {
        let syscalls: Vec<String> = f.syscalls.iter().take(3).map(|c| format!("{} {}", c.name, c.calls)).collect();
        let mut row = vec![
            format!("{:.1}", f.wall_pct),
            secs(f.total_nsec),
            f.calls.to_string(),
            if f.errors == 0 { String::new() } else { f.errors.to_string() },
            latency(f.p50_nsec, f.timed),
            latency(f.p99_nsec, f.timed),
            latency(f.max_nsec, f.timed),
        ];
        if wide {
            row.push(latency(f.min_nsec, f.timed));
        }
        row.extend([f.pid.to_string(), f.fd.to_string(), syscalls.join(", "), f.target.clone()]);
        t.push(row);
    }
    t.render(width)
}

/// The slowest calls, slowest first, with when they started.
pub fn slowest(calls: &[v1::SlowCall], width: Option<u16>) -> String {
    let mut t = Grid::new(vec!["AT", "DURATION", "PID", "TID", "SYSCALL", "RESULT", "FD", "TARGET"], &[0, 1, 2, 3, 6]);
    for c in calls {
        let result = if c.errno.is_empty() { c.result.to_string() } else { format!("-1 {}", c.errno) };
        let fd = if c.fd < 0 { String::new() } else { c.fd.to_string() };
        t.push(vec![
            format!("+{:.3}s", c.offset_nsec as f64 / 1e9),
            duration_ns(c.duration_nsec),
            c.pid.to_string(),
            c.tid.to_string(),
            c.syscall.clone(),
            result,
            fd,
            c.target.clone(),
        ]);
    }
    t.render(width)
}

/// A latency histogram as bcc's funclatency draws it: one row per log2 bucket
/// from the first used to the last, with a bar scaled to the largest.
pub fn histogram(buckets: &[u64]) -> String {
    const BAR: usize = 40;
    let first = buckets.iter().position(|&n| n > 0).unwrap_or(buckets.len());
    let most = buckets.iter().copied().max().unwrap_or(0).max(1);
    let mut out = String::new();
    for (i, &n) in buckets.iter().enumerate().skip(first) {
        let low = if i == 0 { 0 } else { 1u64 << i };
        let bar = (n as f64 * BAR as f64 / most as f64).ceil() as usize;
        out.push_str(&format!(
            "  {:>8} -> {:<8} : {n:<10} |{:<BAR$}|\n",
            duration_ns(low),
            duration_ns((1u64 << (i + 1)) - 1),
            "*".repeat(bar)
        ));
    }
    out
}

/// The first lines: what was profiled, how, for how long, and the totals.
pub fn header(p: &v1::SyscallProfile) -> String {
    let backend = osl_proto::enum_names::profile_backend::name_of(p.backend);
    let pids: Vec<String> = p.pids.iter().map(ToString::to_string).collect();
    let mut out = format!(
        "pid {} · backend {backend} ({}) · {:.1} s · {} calls ({:.0}/s), {} errors\n",
        pids.join(","),
        p.backend_reason,
        p.duration_msec as f64 / 1000.0,
        p.calls,
        p.calls_per_sec,
        p.errors
    );
    if p.partial {
        out.push_str(&format!("PARTIAL: {}\n", p.partial_reason));
    }
    if p.lost_detail > 0 {
        out.push_str(&format!(
            "{} errnos or fd closes were not recorded (a kernel map was full): errno counts and fd names may be short\n",
            p.lost_detail
        ));
    }
    if p.lost_events > 0 {
        out.push_str(&format!("{} syscalls were not counted (a kernel map was full)\n", p.lost_events));
    }
    out.push_str(
        "Times are wall-clock from syscall entry to exit, time blocked included (as strace -c -w); P50 and P99 are \
         the upper bounds of log2 buckets.\n",
    );
    if p.time_one_in > 1 {
        out.push_str(&format!(
            "Sampled: 1 call in {} of each thread was timed; counts are exact, times are scaled, latencies are the timed calls' (--sample 1 times every call).\n",
            p.time_one_in
        ));
    }
    out.push('\n');
    out
}

/// The syscalls seen, as an OCI runtime seccomp profile that allows exactly
/// them (and fails anything else with EPERM), as Inspektor Gadget's
/// `advise seccomp-profile` does. A start for a profile, not a finished one: a
/// short profile misses syscalls a process makes only at start, on errors or
/// once a day.
pub fn seccomp(p: &v1::SyscallProfile) -> serde_json::Value {
    let mut names: Vec<&str> =
        p.syscalls.iter().filter(|s| !s.name.starts_with("syscall_0x")).map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let arch = match p.arch.as_str() {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec![],
    };
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": arch,
        "syscalls": [{ "names": names, "action": "SCMP_ACT_ALLOW" }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seccomp_profile_allows_what_was_seen_and_nothing_else() {
        let stat = |name: &str| v1::SyscallStat { name: name.into(), calls: 1, ..Default::default() };
        let p = v1::SyscallProfile {
            arch: "x86_64".into(),
            syscalls: vec![stat("read"), stat("futex"), stat("syscall_0x1ff"), stat("read")],
            ..Default::default()
        };
        let s = seccomp(&p);
        assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(s["syscalls"][0]["names"], serde_json::json!(["futex", "read"]));
        assert_eq!(s["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
        assert_eq!(s["architectures"][0], "SCMP_ARCH_X86_64");
    }

    #[test]
    fn the_table_has_straces_columns() {
        let s = v1::SyscallStat {
            name: "openat".into(),
            calls: 5000,
            errors: 5000,
            errnos: vec![v1::Count { name: "ENOENT".into(), count: 5000 }],
            total_nsec: 25_000_000,
            time_pct: 12.5,
            p50_nsec: 4095,
            timed: 5000,
            p99_nsec: 8191,
            max_nsec: 40_000,
            ..Default::default()
        };
        let t = table(&[s], false, None);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].split_whitespace().eq([
                "%",
                "TIME",
                "SECONDS",
                "USECS/CALL",
                "P50",
                "P99",
                "MAX",
                "CALLS",
                "ERRORS",
                "SYSCALL",
                "ERRNO",
                "TOP",
                "FDS"
            ]),
            "{t}"
        );
        assert!(
            lines[1].split_whitespace().eq([
                "12.50", "0.025000", "5", "4", "µs", "8", "µs", "40", "µs", "5000", "5000", "openat", "ENOENT", "5000"
            ]),
            "{t}"
        );
    }

    #[test]
    fn fds_name_their_target_and_histograms_draw_bars() {
        let read = v1::SyscallStat {
            name: "read".into(),
            calls: 3,
            total_nsec: 60_000_000,
            top_fds: vec![
                v1::TimeCount {
                    name: "tcp 1.2.3.4:5 -> 6.7.8.9:10 (ESTABLISHED)".into(),
                    calls: 1,
                    total_nsec: 45_000_000,
                },
                v1::TimeCount { name: "pipe:[7]".into(), calls: 2, total_nsec: 15_000_000 },
            ],
            ..Default::default()
        };
        let t = table(&[read], false, None);
        assert!(
            t.lines().nth(1).unwrap().ends_with("tcp 1.2.3.4:5 -> 6.7.8.9:10 (ESTABLISHED) 75%, pipe:[7] 25%"),
            "{t}"
        );
        let f = v1::FdStat {
            pid: 9,
            fd: 4,
            target: "/var/log/x".into(),
            syscalls: vec![v1::TimeCount { name: "write".into(), calls: 7, total_nsec: 1 }],
            calls: 7,
            total_nsec: 2_500_000_000,
            wall_pct: 50.0,
            ..Default::default()
        };
        let t = fd_table(&[f], false, None);
        assert!(
            t.lines().nth(1).unwrap().split_whitespace().eq([
                "50.0",
                "2.500000",
                "7",
                "-",
                "-",
                "-",
                "9",
                "4",
                "write",
                "7",
                "/var/log/x"
            ]),
            "{t}"
        );
        let h = histogram(&[0, 0, 4, 8, 0, 1]);
        let rows: Vec<&str> = h.lines().collect();
        assert_eq!(rows.len(), 4, "{h}");
        assert_eq!(rows[0], format!("      4 ns -> 7 ns     : 4          |{:<40}|", "*".repeat(20)));
        assert!(rows[1].contains(&"*".repeat(40)) && rows[3].starts_with("     32 ns -> 63 ns"), "{h}");
    }
}
