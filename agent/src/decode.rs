//! Names for the bit masks in /proc/PID/status: signal sets and capability sets.

/// Signal names for a mask where bit n-1 stands for signal n, as `kill -l` names
/// them on x86_64 and aarch64 (glibc reserves 32 and 33; SIGRTMIN is 34).
pub fn signal_names(mask: u64) -> Vec<String> {
    (1..=64u32).filter(|n| mask & (1u64 << (n - 1)) != 0).map(signal_name).collect()
}

pub fn signal_name(n: u32) -> String {
    const STANDARD: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match n {
        1..=31 => STANDARD[n as usize - 1].to_string(),
        34 => "SIGRTMIN".to_string(),
        35..=49 => format!("SIGRTMIN+{}", n - 34),
        50..=63 => format!("SIGRTMAX-{}", 64 - n),
        64 => "SIGRTMAX".to_string(),
        _ => format!("SIG{n}"),
    }
}

/// Capability names (linux/capability.h) for a capability mask.
pub fn capability_names(mask: u64) -> Vec<String> {
    const NAMES: [&str; 41] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    (0..64u32)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| NAMES.get(bit as usize).map_or_else(|| format!("CAP_{bit}"), |n| n.to_string()))
        .collect()
}

pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub fn has_capability(mask: u64, cap: u32) -> bool {
    mask & (1u64 << cap) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_masks_decode_like_kill_l() {
        // SigCgt of a typical Go program and of bash, as /proc shows them.
        assert_eq!(signal_names(0x0000_0000_0001_4002), ["SIGINT", "SIGTERM", "SIGCHLD"]);
        assert_eq!(signal_names(1 << 33), ["SIGRTMIN"]);
        assert_eq!(signal_names(1 << 34 | 1 << 63), ["SIGRTMIN+1", "SIGRTMAX"]);
        assert_eq!(signal_names(1 << 49), ["SIGRTMAX-14"]);
        assert_eq!(signal_names(1 << 31), ["SIG32"]);
        assert!(signal_names(0).is_empty());
    }

    #[test]
    fn capability_masks_decode() {
        // CapEff of a default Docker container.
        let names = capability_names(0x0000_0000_a804_25fb);
        assert_eq!(
            names,
            [
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_KILL",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_RAW",
                "CAP_SYS_CHROOT",
                "CAP_MKNOD",
                "CAP_AUDIT_WRITE",
                "CAP_SETFCAP"
            ]
        );
        assert_eq!(capability_names(1 << 39 | 1 << 38), ["CAP_PERFMON", "CAP_BPF"]);
        assert_eq!(capability_names(1 << 45), ["CAP_45"]);
        assert!(has_capability(0x80000, CAP_SYS_PTRACE));
    }
}
