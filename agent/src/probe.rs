//! What the agent may do here, probed at start by *trying* it: bpf() with a tiny map
//! and a no-op raw-tracepoint program, the ptrace syscall, ptrace access to a sibling.
//! Capabilities alone do not answer it: a seccomp profile or an LSM may refuse what a
//! capability allows. Each limitation says its cause; every answer carries them.

use crate::decode::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, has_capability};
use crate::error::read_file;
use crate::model::Unavailable;
use crate::proc::parse::parse_status;
use crate::profile::ebpf::{self, Refused};
use nix::errno::Errno;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No ptrace access: only processes of the agent's own uid are fully visible.
    Basic,
    /// CAP_SYS_PTRACE, and ptrace access to siblings works: every process's fds, smaps, syscalls.
    Ptrace,
    /// Ptrace, and a BPF program attached to sys_enter for real: in-kernel syscall counting.
    Ebpf,
}

#[derive(Debug, Clone)]
pub struct Privileges {
    pub level: Level,
    pub capabilities: u64,
    /// Whether the ebpf backend can run here, or the measured reason it cannot.
    pub ebpf: Result<(), String>,
    pub limitations: Vec<Unavailable>,
}

impl Privileges {
    /// Why a ptrace attach may be refused, as the start-up trial found it.
    pub fn ptrace_refusal(&self) -> &str {
        match self.limitations.iter().find(|l| l.field == "ptrace") {
            Some(l) => &l.reason,
            None => {
                "the agent could trace its siblings at start: a seccomp or LSM policy may deny this process, \
                 or it is a kernel thread"
            }
        }
    }
}

/// A sibling ptrace-access trial: which pid, and the errno if refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sibling {
    pub pid: i32,
    pub errno: Option<i32>,
}

/// The live trials, behind a trait so that the cause analysis is testable.
pub trait Trials {
    fn bpf(&self) -> Result<(), Refused>;
    /// The ptrace syscall itself: Err(errno) when a seccomp filter answers it.
    fn ptrace_syscall(&self) -> Result<(), i32>;
    /// Ptrace-mode access (reading `/proc/PID/syscall`) to up to a few processes other than the agent.
    fn siblings(&self, proc_root: &Path) -> Vec<Sibling>;
}

/// This kernel, for real.
pub struct Kernel;

impl Trials for Kernel {
    fn bpf(&self) -> Result<(), Refused> {
        ebpf::try_attach()
    }

    fn ptrace_syscall(&self) -> Result<(), i32> {
        // PTRACE_GETEVENTMSG on ourselves, whom nobody traces: the kernel answers ESRCH;
        // anything else (EPERM, ENOSYS) came from a seccomp filter first.
        match nix::sys::ptrace::getevent(nix::unistd::Pid::this()) {
            Err(Errno::ESRCH) | Ok(_) => Ok(()),
            Err(e) => Err(e as i32),
        }
    }

    fn siblings(&self, proc_root: &Path) -> Vec<Sibling> {
        const TRIES: usize = 4;
        let own = std::process::id() as i32;
        let Ok(dir) = std::fs::read_dir(proc_root) else { return Vec::new() };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != own)
            .take(TRIES)
            .map(|pid| {
                // PTRACE_MODE_ATTACH_FSCREDS, as ptrace(2) attach and /proc/PID/fd are.
                let errno = std::fs::read(proc_root.join(pid.to_string()).join("syscall"))
                    .err()
                    .map(|e| e.raw_os_error().unwrap_or(libc::EIO));
                Sibling { pid, errno }
            })
            .filter(|s| s.errno != Some(libc::ENOENT)) // exited meanwhile
            .collect()
    }
}

/// Probes the agent's privileges: its own status through `<proc_root>/self`, the
/// sysctls under `<proc_root>/sys`, and the live trials.
pub fn probe(proc_root: &Path) -> Privileges {
    probe_with(proc_root, &Kernel)
}

pub fn probe_with(proc_root: &Path, trials: &dyn Trials) -> Privileges {
    let mut limitations = Vec::new();
    let status_path = proc_root.join("self/status");
    let (capabilities, seccomp) = match read_file(&status_path).map(|b| parse_status(&b)) {
        Ok(Ok(s)) => (s.capeff, s.seccomp),
        Ok(Err(reason)) => {
            limitations.push(Unavailable {
                field: "capabilities".into(),
                reason: format!("cannot parse the agent's own status: {reason}"),
                path: Some(status_path),
            });
            (0, None)
        }
        Err(e) => {
            limitations.push(Unavailable::from_read("capabilities", &e));
            (0, None)
        }
    };
    let sysctl = |name: &str| -> Option<i64> {
        let b = read_file(proc_root.join("sys/kernel").join(name)).ok()?;
        std::str::from_utf8(&b).ok()?.trim().parse().ok()
    };
    let has = |cap| has_capability(capabilities, cap);
    let filtered = seccomp == Some(2);

    let ptrace = match ptrace_refusal(has(CAP_SYS_PTRACE), filtered, sysctl("yama/ptrace_scope"), trials, proc_root) {
        None => true,
        Some(reason) => {
            limitations.push(Unavailable::new("ptrace", reason));
            false
        }
    };
    if !ptrace {
        limitations.push(Unavailable::new(
            "other users' processes",
            "without ptrace access the agent cannot list the fds (kinds, sockets) or read smaps_rollup \
             (PSS/USS) of processes running as another user; their fd counts, limits and other fields are shown",
        ));
    }
    let ebpf = trials.bpf().map_err(|r| {
        let caps = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
        bpf_cause(&r, caps, filtered, sysctl("unprivileged_bpf_disabled"), &lsms())
    });
    if let Err(reason) = &ebpf {
        limitations.push(Unavailable::new("in-kernel syscall counting", reason.clone()));
    }
    let level = match (ptrace, ebpf.is_ok()) {
        (true, true) => Level::Ebpf,
        (true, false) => Level::Ptrace,
        _ => Level::Basic,
    };
    Privileges { level, capabilities, ebpf, limitations }
}

fn ptrace_refusal(
    cap: bool,
    filtered: bool,
    scope: Option<i64>,
    trials: &dyn Trials,
    proc_root: &Path,
) -> Option<String> {
    if !cap {
        let scope = scope.map(|s| format!(" (kernel.yama.ptrace_scope = {s})")).unwrap_or_default();
        return Some(format!("needs CAP_SYS_PTRACE{scope}"));
    }
    if let Err(errno) = trials.ptrace_syscall() {
        let by = if filtered { "the seccomp profile" } else { "the kernel" };
        return Some(format!("{by} refuses the ptrace syscall ({})", errno_name(errno)));
    }
    if scope == Some(3) {
        return Some("disabled on this node (kernel.yama.ptrace_scope = 3)".into());
    }
    let tried = trials.siblings(proc_root);
    // No sibling yet (the agent started first): the capability is all there is to go on.
    let refused = tried.iter().all(|s| s.errno.is_some());
    if tried.is_empty() || !refused {
        return None;
    }
    let pids: Vec<_> = tried.iter().map(|s| s.pid.to_string()).collect();
    let errno = tried[0].errno.unwrap_or(libc::EPERM);
    Some(format!(
        "ptrace access to pids {} refused ({}) although the agent has CAP_SYS_PTRACE: a security module ({}) denies it",
        pids.join(", "),
        errno_name(errno),
        lsms()
    ))
}

/// The measured causes of a failed bpf trial. Without the capabilities, that is the
/// cause to fix first; a seccomp filter that answered is named as well, since
/// adding the capabilities alone would not help.
fn bpf_cause(r: &Refused, caps: bool, filtered: bool, unprivileged_disabled: Option<i64>, lsms: &str) -> String {
    let what = format!("{} failed ({})", r.step, errno_name(r.errno));
    let seccomp = "the container's seccomp profile refuses bpf() (RuntimeDefault allows it only with \
                   CAP_SYS_ADMIN): install the chart's Localhost profile osl-ebpf.json (charts/osl/README.md)";
    let mut causes = Vec::new();
    if !caps {
        let unpriv =
            unprivileged_disabled.map(|v| format!(", kernel.unprivileged_bpf_disabled = {v}")).unwrap_or_default();
        causes.push(format!("needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN){unpriv}"));
    }
    match (r.reaches_kernel, filtered) {
        (false, true) => causes.push(seccomp.to_string()),
        (false, false) => causes.push("this kernel has no bpf() syscall".into()),
        (true, _) if caps && matches!(r.errno, libc::EPERM | libc::EACCES) => causes.push(format!(
            "refused although the agent has CAP_BPF and CAP_PERFMON and seccomp lets bpf() through: \
             a security module ({lsms}) denies it"
        )),
        (true, _) if caps => causes.push("the kernel refused the program".into()),
        (true, _) => {}
    }
    format!("{what}: {}", causes.join("; and "))
}

fn errno_name(errno: i32) -> String {
    let e = Errno::from_raw(errno);
    format!("{e:?}: {}", e.desc())
}

/// The active LSMs, as far as the agent can see them.
fn lsms() -> String {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(s) if !s.trim().is_empty() => format!("active: {}", s.trim()),
        _ => "securityfs is not mounted here, so which one is unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        bpf: Result<(), Refused>,
        ptrace: Result<(), i32>,
        siblings: Vec<Sibling>,
    }

    impl Fake {
        fn allowing() -> Self {
            Fake { bpf: Ok(()), ptrace: Ok(()), siblings: vec![Sibling { pid: 1, errno: None }] }
        }
    }

    impl Trials for Fake {
        fn bpf(&self) -> Result<(), Refused> {
            self.bpf.clone()
        }
        fn ptrace_syscall(&self) -> Result<(), i32> {
            self.ptrace
        }
        fn siblings(&self, _: &Path) -> Vec<Sibling> {
            self.siblings.clone()
        }
    }

    fn fake_proc(cap_eff: &str, seccomp: u8, ptrace_scope: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        let status = format!(
            "Name:\tosl-agent\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\nNgid:\t0\nPid:\t7\nPPid:\t1\nTracerPid:\t0\n\
             Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\nThreads:\t1\nSigQ:\t0/1\nSigPnd:\t0\nShdPnd:\t0\n\
             SigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\nCapInh:\t0\nCapPrm:\t{cap_eff}\nCapEff:\t{cap_eff}\nCapBnd:\t{cap_eff}\n\
             NoNewPrivs:\t1\nSeccomp:\t{seccomp}\n"
        );
        std::fs::write(dir.path().join("self/status"), status).unwrap();
        if let Some(scope) = ptrace_scope {
            std::fs::create_dir_all(dir.path().join("sys/kernel/yama")).unwrap();
            std::fs::write(dir.path().join("sys/kernel/yama/ptrace_scope"), scope).unwrap();
        }
        dir
    }

    const NONE: &str = "0000000000000000";
    const PTRACE: &str = "0000000000080000";
    const EBPF: &str = "000000c000080000";

    fn refused(errno: i32, reaches_kernel: bool) -> Result<(), Refused> {
        Err(Refused { step: "creating a BPF map", errno, reaches_kernel })
    }

    #[test]
    fn levels_follow_what_the_trials_measure() {
        let level = |caps, fake: Fake| probe_with(fake_proc(caps, 2, None).path(), &fake).level;
        assert_eq!(level(NONE, Fake { bpf: refused(libc::EPERM, true), ..Fake::allowing() }), Level::Basic);
        assert_eq!(level(PTRACE, Fake { bpf: refused(libc::EPERM, true), ..Fake::allowing() }), Level::Ptrace);
        assert_eq!(level(EBPF, Fake::allowing()), Level::Ebpf);
        // The capabilities are there, the seccomp profile is not: ptrace, not ebpf.
        assert_eq!(level(EBPF, Fake { bpf: refused(libc::EPERM, false), ..Fake::allowing() }), Level::Ptrace);
        // CAP_SYS_PTRACE, but the ptrace syscall is filtered: basic.
        assert_eq!(level(EBPF, Fake { ptrace: Err(libc::EPERM), ..Fake::allowing() }), Level::Basic);
    }

    #[test]
    fn a_seccomp_refusal_names_seccomp_and_the_chart_profile() {
        let p =
            probe_with(fake_proc(EBPF, 2, None).path(), &Fake { bpf: refused(libc::EPERM, false), ..Fake::allowing() });
        let why = p.ebpf.unwrap_err();
        assert!(why.contains("seccomp profile refuses bpf()") && why.contains("osl-ebpf.json"), "{why}");
        assert!(why.starts_with("creating a BPF map failed (EPERM: Operation not permitted)"), "{why}");
        assert_eq!(p.limitations.len(), 1, "{:?}", p.limitations);
    }

    #[test]
    fn causes_are_told_apart() {
        let r = |errno, reaches| Refused { step: "loading a BPF program", errno, reaches_kernel: reaches };
        assert!(bpf_cause(&r(libc::EPERM, true), false, true, Some(2), "x").contains("needs CAP_BPF and CAP_PERFMON"));
        assert!(bpf_cause(&r(libc::EPERM, true), false, true, Some(2), "x").contains("unprivileged_bpf_disabled = 2"));
        assert!(
            bpf_cause(&r(libc::EPERM, true), true, true, None, "active: bpf").contains("security module (active: bpf)")
        );
        assert!(bpf_cause(&r(libc::ENOSYS, false), true, false, None, "").contains("no bpf() syscall"));
        assert!(bpf_cause(&r(libc::EINVAL, true), true, false, None, "").contains("kernel refused"));
    }

    #[test]
    fn ptrace_limitations_say_why() {
        let basic = probe_with(fake_proc(NONE, 0, Some("3\n")).path(), &Fake::allowing());
        let fields: Vec<_> = basic.limitations.iter().map(|l| l.field.as_str()).collect();
        assert_eq!(fields, ["ptrace", "other users' processes"]);
        assert!(basic.limitations[0].reason.contains("needs CAP_SYS_PTRACE (kernel.yama.ptrace_scope = 3)"));

        let scope3 = probe_with(fake_proc(PTRACE, 0, Some("3\n")).path(), &Fake::allowing());
        assert!(scope3.limitations[0].reason.contains("ptrace_scope = 3"), "{:?}", scope3.limitations);

        let filtered =
            probe_with(fake_proc(PTRACE, 2, None).path(), &Fake { ptrace: Err(libc::EPERM), ..Fake::allowing() });
        assert!(filtered.limitations[0].reason.contains("seccomp profile refuses the ptrace syscall (EPERM"));

        let lsm = Fake {
            siblings: vec![
                Sibling { pid: 1, errno: Some(libc::EACCES) },
                Sibling { pid: 9, errno: Some(libc::EACCES) },
            ],
            ..Fake::allowing()
        };
        let denied = probe_with(fake_proc(PTRACE, 0, None).path(), &lsm);
        assert_eq!(denied.level, Level::Basic);
        assert!(denied.limitations[0].reason.contains("pids 1, 9 refused (EACCES"), "{:?}", denied.limitations);

        let one_ok = Fake {
            siblings: vec![Sibling { pid: 1, errno: Some(libc::EACCES) }, Sibling { pid: 9, errno: None }],
            ..Fake::allowing()
        };
        assert_eq!(probe_with(fake_proc(PTRACE, 0, None).path(), &one_ok).level, Level::Ebpf);
        let alone = Fake { siblings: vec![], ..Fake::allowing() };
        assert_eq!(probe_with(fake_proc(PTRACE, 0, None).path(), &alone).level, Level::Ebpf);
    }

    #[test]
    fn everything_allowed_has_no_limitations() {
        let full = probe_with(fake_proc("000001ffffffffff", 2, Some("1\n")).path(), &Fake::allowing());
        assert!(full.limitations.is_empty(), "{:?}", full.limitations);
        assert_eq!(full.level, Level::Ebpf);
    }

    #[test]
    fn unreadable_status_is_a_limitation_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe_with(dir.path(), &Fake::allowing());
        assert_eq!(p.level, Level::Basic);
        assert_eq!(p.limitations[0].field, "capabilities");
    }

    /// The real trials on this machine: as root outside any filter, everything works —
    /// except access to a process holding capabilities the tester lacks (this VM's
    /// pid 1 has CAP_SYS_RESOURCE, which root here has not): EPERM, as ptrace(2) says.
    #[test]
    fn the_live_trials_succeed_as_root() {
        if !crate::testing::privileged("the_live_trials_succeed_as_root", "the live privilege trials") {
            return;
        }
        assert_eq!(Kernel.bpf(), Ok(()));
        assert_eq!(Kernel.ptrace_syscall(), Ok(()));
        let siblings = Kernel.siblings(Path::new("/proc"));
        assert!(siblings.iter().any(|s| s.errno.is_none()), "{siblings:?}");
        assert!(siblings.iter().all(|s| s.errno.is_none() || s.errno == Some(libc::EPERM)), "{siblings:?}");
        assert_eq!(probe(Path::new("/proc")).level, Level::Ebpf);
    }
}
