//! `kubectl osl strace`: the `strace -c` table, per-thread tables, and the
//! profile as an OCI seccomp allow-list.

use super::tables::Grid;
use osl_proto::v1;

fn secs(nsec: u64) -> String {
    format!("{:.6}", nsec as f64 / 1e9)
}

fn usecs(nsec: u64) -> String {
    format!("{}", nsec / 1000)
}

/// strace -c's columns, plus min/max and the errnos behind the errors.
pub fn table(stats: &[v1::SyscallStat], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec!["% TIME", "SECONDS", "USECS/CALL", "CALLS", "ERRORS", "SYSCALL"];
    if wide {
        headers.extend(["MIN USECS", "MAX USECS"]);
    }
    headers.push("ERRNO");
    let right: &[usize] = if wide { &[0, 1, 2, 3, 4, 6, 7] } else { &[0, 1, 2, 3, 4] };
    let mut t = Grid::new(headers, right);
    for s in stats {
        let errnos: Vec<String> =
            s.errnos.iter().take(if wide { 8 } else { 2 }).map(|c| format!("{} {}", c.name, c.count)).collect();
        let mut row = vec![
            format!("{:.2}", s.time_pct),
            secs(s.total_nsec),
            usecs(s.total_nsec.checked_div(s.calls).unwrap_or(0)),
            s.calls.to_string(),
            if s.errors == 0 { String::new() } else { s.errors.to_string() },
            s.name.clone(),
        ];
        if wide {
            row.extend([usecs(s.min_nsec), usecs(s.max_nsec)]);
        }
        row.push(errnos.join(", "));
        t.push(row);
    }
    t.render(width)
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
    if p.lost_events > 0 {
        out.push_str(&format!("{} syscalls were not counted (a kernel map was full)\n", p.lost_events));
    }
    out.push_str("Times are wall-clock from syscall entry to exit, time blocked included (as strace -c -w).\n\n");
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
                "CALLS",
                "ERRORS",
                "SYSCALL",
                "ERRNO"
            ]),
            "{t}"
        );
        assert!(
            lines[1].split_whitespace().eq(["12.50", "0.025000", "5", "5000", "5000", "openat", "ENOENT", "5000"]),
            "{t}"
        );
    }
}
