//! What a syscall profile backend hands back: the same shape from ptrace and eBPF.
//! Times are wall-clock between syscall entry and exit (strace -w semantics).

/// One thread's aggregate for one syscall number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyscallCount {
    pub tgid: u32,
    pub tid: u32,
    pub nr: u32,
    pub calls: u64,
    /// Returns in -4095..=-1, as strace counts errors.
    pub errors: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
}

/// How often one syscall failed with one errno (summed over threads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrnoCount {
    pub nr: u32,
    pub errno: u32,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub syscalls: Vec<SyscallCount>,
    pub errnos: Vec<ErrnoCount>,
    /// Events seen but not counted (e.g. a kernel map was full); 0 when exact.
    pub lost: u64,
}
