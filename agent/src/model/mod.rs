//! The agent's domain model: what the readers produce and the findings consume.
//! Every value that may fail to be read is an `Option`, and the reason it is
//! missing sits in `unavailable`. Kernel text is kept as bytes (lossless);
//! `convert` escapes it for the wire.

mod fds;

pub use fds::*;
use std::path::PathBuf;

/// Why a value is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub field: String,
    pub reason: String,
    pub path: Option<PathBuf>,
}

impl Unavailable {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into(), path: None }
    }

    pub fn from_read(field: impl Into<String>, err: &crate::error::ReadError) -> Self {
        Self { field: field.into(), reason: err.reason(), path: Some(err.path().to_path_buf()) }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Process {
    pub pid: i32,
    pub start_time_ticks: u64,
    pub start_time_unix_ms: Option<i64>,
    pub ppid: i32,
    pub comm: Vec<u8>,
    pub cmdline: Vec<Vec<u8>>,
    pub cmdline_redacted: bool,
    /// Longer than [`crate::proc::MAX_CMDLINE_BYTES`]: the tail is cut.
    pub cmdline_truncated: bool,
    /// The one-letter state of /proc/PID/stat (R, S, D, Z, T, t, X, I, P, W).
    pub state: char,
    pub kernel_thread: bool,
    pub ids: Option<Ids>,
    pub cpu: ProcessCpu,
    pub memory: ProcessMemory,
    pub fds: FdUsage,
    pub signals: Option<Signals>,
    pub capabilities: Option<u64>,
    pub tracer_pid: Option<i32>,
    pub cgroups: Vec<CgroupMembership>,
    /// The container id in the container cgroup's path (see [`Process::container_id`]).
    pub container_id: Option<String>,
    pub exited_mid_read: bool,
    pub unavailable: Vec<Unavailable>,
    /// Read by Diagnose and ListFds only (it reads every fd).
    pub fd_summary: Option<FdSummary>,
    pub fd_trend: Option<FdTrend>,
}

impl Process {
    /// The cgroup path that identifies the process's container: the v2 path on a
    /// pure v2 host, the memory controller's path on v1 and hybrid hosts.
    pub fn container_cgroup(&self) -> Option<&CgroupMembership> {
        self.cgroups
            .iter()
            .find(|c| c.controllers.iter().any(|n| n == "memory"))
            .or_else(|| self.cgroups.iter().find(|c| c.hierarchy == 0))
    }

    /// The container id in the process's cgroup path, if it has one (the reader
    /// parses it from [`Process::container_cgroup`]).
    pub fn container_id(&self) -> Option<String> {
        self.container_id.clone()
    }

    /// A zombie, not a live process whose main thread exited (also state Z, but
    /// with threads left).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' && self.cpu.threads.is_none_or(|t| t <= 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessCpu {
    pub utime_usec: Option<u64>,
    pub stime_usec: Option<u64>,
    pub threads: Option<u32>,
    pub voluntary_ctxt_switches: Option<u64>,
    pub nonvoluntary_ctxt_switches: Option<u64>,
    pub minor_faults: Option<u64>,
    pub major_faults: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub vm_size_bytes: Option<u64>,
    pub vm_rss_bytes: Option<u64>,
    pub rss_anon_bytes: Option<u64>,
    pub rss_file_bytes: Option<u64>,
    pub rss_shmem_bytes: Option<u64>,
    pub vm_hwm_bytes: Option<u64>,
    pub vm_swap_bytes: Option<u64>,
    pub pss_bytes: Option<u64>,
    pub pss_anon_bytes: Option<u64>,
    pub pss_file_bytes: Option<u64>,
    pub pss_shmem_bytes: Option<u64>,
    pub uss_bytes: Option<u64>,
    pub swap_pss_bytes: Option<u64>,
}

/// A resource limit: `None` inside means unlimited (RLIM_INFINITY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdUsage {
    pub open: Option<u64>,
    pub limit: Option<Rlimit>,
}

/// Raw signal masks from /proc/PID/status (bit n-1 is signal n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    pub pending: u64,
    pub blocked: u64,
    pub ignored: u64,
    pub caught: u64,
}

/// One line of /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMembership {
    /// 0 for the v2 hierarchy.
    pub hierarchy: u32,
    /// v1 controllers (`memory`, `cpu`, `cpuacct`, `name=systemd`…); empty for v2.
    pub controllers: Vec<String>,
    /// Relative to the reader's cgroup namespace; may start with `/..` for a
    /// process outside it.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// How the agent reached a cgroup's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupRoute {
    /// Through the agent's own cgroup mount.
    AgentMount,
    /// Through /proc/PID/root of a process in the cgroup (its mount namespace).
    ProcessRoot,
    /// Through the cgroup root the agent was configured with.
    ConfiguredRoot,
}

impl CgroupRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentMount => "agent-mount",
            Self::ProcessRoot => "process-root",
            Self::ConfiguredRoot => "configured-root",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLocation {
    pub version: CgroupVersion,
    pub path: String,
    pub dir: PathBuf,
    /// The directory of the mount `dir` was found under: ancestors up to here are visible.
    pub mount_dir: PathBuf,
    pub route: CgroupRoute,
}

#[derive(Debug, Clone, Default)]
pub struct Container {
    /// The cgroup path that groups these processes (see [`Process::container_cgroup`]).
    pub cgroup_path: String,
    pub id: Option<String>,
    pub pod_uid: Option<String>,
    pub pids: Vec<i32>,
    pub memory: Option<CgroupMemory>,
    pub cpu: Option<CgroupCpu>,
    pub unavailable: Vec<Unavailable>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CgroupMemory {
    pub location: CgroupLocation,
    pub usage_bytes: Option<u64>,
    /// `Some(None)`: unlimited; `None`: could not be read.
    pub limit_bytes: Option<Option<u64>>,
    pub working_set_bytes: Option<u64>,
    pub inactive_file_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    pub kernel_bytes: Option<u64>,
    pub slab_bytes: Option<u64>,
    pub sock_bytes: Option<u64>,
    pub mapped_file_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    pub high_events: Option<u64>,
    pub max_events: Option<u64>,
    pub oom_events: Option<u64>,
    pub oom_kill_events: Option<u64>,
    pub failcnt: Option<u64>,
    pub under_oom: Option<bool>,
    pub pressure: Option<Pressure>,
}

impl CgroupMemory {
    /// Nothing read yet, at this location.
    pub fn at(location: CgroupLocation) -> Self {
        Self {
            location,
            usage_bytes: None,
            limit_bytes: None,
            working_set_bytes: None,
            inactive_file_bytes: None,
            anon_bytes: None,
            file_bytes: None,
            shmem_bytes: None,
            kernel_bytes: None,
            slab_bytes: None,
            sock_bytes: None,
            mapped_file_bytes: None,
            peak_bytes: None,
            high_events: None,
            max_events: None,
            oom_events: None,
            oom_kill_events: None,
            failcnt: None,
            under_oom: None,
            pressure: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CgroupCpu {
    pub location: CgroupLocation,
    /// `Some(None)`: no quota; `None`: could not be read.
    pub quota_usec: Option<Option<u64>>,
    pub period_usec: Option<u64>,
    pub usage_usec: Option<u64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_usec: Option<u64>,
    pub pressure: Option<Pressure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressureSource {
    /// The cgroup's own `memory.pressure` / `cpu.pressure`.
    Cgroup,
    /// `/proc/pressure/*`: the whole machine, when the cgroup has no PSI file.
    System,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pressure {
    pub source: PressureSource,
    pub path: PathBuf,
    pub some: Option<PressureLine>,
    pub full: Option<PressureLine>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressureLine {
    pub avg10_pct: f64,
    pub avg60_pct: f64,
    pub avg300_pct: f64,
    pub total_usec: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warn,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub subject: String,
    pub pid: Option<i32>,
    pub container_id: Option<String>,
    pub message: String,
    pub evidence: Vec<(&'static str, String)>,
    pub next_step: String,
}

/// Which processes a request covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<i32>,
    pub container_id: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.container_id.is_none()
    }
}

/// Everything one diagnose call saw.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub taken_at_unix_ms: i64,
    pub capture_usec: u64,
    pub processes: Vec<Process>,
    pub containers: Vec<Container>,
    pub findings: Vec<Finding>,
    pub unavailable: Vec<Unavailable>,
    pub fd_totals: FdSummary,
}
