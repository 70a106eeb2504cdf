//! What the agent may do here: its capabilities and the kernel's ptrace, perf and
//! bpf settings, probed at start. Every answer carries the result.

use crate::decode::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, has_capability};
use crate::error::read_file;
use crate::model::Unavailable;
use crate::proc::parse::parse_status;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No extra capability: only processes of the agent's own uid are fully visible.
    Basic,
    /// CAP_SYS_PTRACE: every process's fds, smaps and syscalls.
    Ptrace,
    /// CAP_SYS_PTRACE + CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN): in-kernel syscall counting.
    Ebpf,
}

#[derive(Debug, Clone)]
pub struct Privileges {
    pub level: Level,
    pub capabilities: u64,
    pub limitations: Vec<Unavailable>,
}

/// Probes the agent's own privileges through `<proc_root>/self` and `<proc_root>/sys`.
pub fn probe(proc_root: &Path) -> Privileges {
    let mut limitations = Vec::new();
    let status_path = proc_root.join("self/status");
    let capabilities = match read_file(&status_path).map(|b| parse_status(&b)) {
        Ok(Ok(s)) => s.capeff,
        Ok(Err(reason)) => {
            limitations.push(Unavailable {
                field: "capabilities".into(),
                reason: format!("cannot parse the agent's own status: {reason}"),
                path: Some(status_path),
            });
            0
        }
        Err(e) => {
            limitations.push(Unavailable::from_read("capabilities", &e));
            0
        }
    };
    let has = |cap| has_capability(capabilities, cap);
    let ptrace = has(CAP_SYS_PTRACE);
    let bpf = (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN);
    let level = match (ptrace, bpf) {
        (true, true) => Level::Ebpf,
        (true, false) => Level::Ptrace,
        _ => Level::Basic,
    };
    if !ptrace {
        limitations.push(Unavailable::new(
            "other users' processes",
            "without CAP_SYS_PTRACE the agent cannot list the fds (kinds, sockets) or read smaps_rollup \
             (PSS/USS) of processes running as another user; their fd counts, limits and other fields are shown",
        ));
    }
    if !bpf {
        limitations
            .push(Unavailable::new("in-kernel syscall counting", "needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"));
    }
    let sysctl = |name: &str| -> Option<i64> {
        let b = read_file(proc_root.join("sys/kernel").join(name)).ok()?;
        std::str::from_utf8(&b).ok()?.trim().parse().ok()
    };
    match sysctl("yama/ptrace_scope") {
        Some(3) => limitations.push(Unavailable::new("ptrace", "disabled on this node (kernel.yama.ptrace_scope = 3)")),
        Some(2) if !ptrace => {
            limitations.push(Unavailable::new("ptrace", "needs CAP_SYS_PTRACE (kernel.yama.ptrace_scope = 2)"))
        }
        _ => {}
    }
    if let Some(paranoid) = sysctl("perf_event_paranoid").filter(|&p| p > 2)
        && !bpf
    {
        limitations.push(Unavailable::new(
            "perf events",
            format!("kernel.perf_event_paranoid = {paranoid}: perf events need CAP_PERFMON"),
        ));
    }
    Privileges { level, capabilities, limitations }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(cap_eff: &str, ptrace_scope: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        let status = format!(
            "Name:\tosl-agent\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\nNgid:\t0\nPid:\t7\nPPid:\t1\nTracerPid:\t0\n\
             Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\nThreads:\t1\nSigQ:\t0/1\nSigPnd:\t0\nShdPnd:\t0\n\
             SigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\nCapInh:\t0\nCapPrm:\t{cap_eff}\nCapEff:\t{cap_eff}\nCapBnd:\t{cap_eff}\n"
        );
        std::fs::write(dir.path().join("self/status"), status).unwrap();
        if let Some(scope) = ptrace_scope {
            std::fs::create_dir_all(dir.path().join("sys/kernel/yama")).unwrap();
            std::fs::write(dir.path().join("sys/kernel/yama/ptrace_scope"), scope).unwrap();
        }
        dir
    }

    #[test]
    fn levels_follow_capabilities() {
        assert_eq!(probe(fake_proc("0000000000000000", None).path()).level, Level::Basic);
        assert_eq!(probe(fake_proc("0000000000080000", None).path()).level, Level::Ptrace);
        assert_eq!(probe(fake_proc("000000c000080000", None).path()).level, Level::Ebpf);
        assert_eq!(probe(fake_proc("000001ffffffffff", None).path()).level, Level::Ebpf);
    }

    #[test]
    fn limitations_say_why() {
        let basic = probe(fake_proc("0000000000000000", Some("3\n")).path());
        let fields: Vec<_> = basic.limitations.iter().map(|l| l.field.as_str()).collect();
        assert_eq!(fields, ["other users' processes", "in-kernel syscall counting", "ptrace"]);
        assert!(basic.limitations[2].reason.contains("ptrace_scope = 3"));
        let full = probe(fake_proc("000001ffffffffff", Some("1\n")).path());
        assert!(full.limitations.is_empty(), "{:?}", full.limitations);
    }

    #[test]
    fn unreadable_status_is_a_limitation_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path());
        assert_eq!(p.level, Level::Basic);
        assert_eq!(p.limitations[0].field, "capabilities");
    }
}
