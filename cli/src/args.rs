//! Command-line flags, kubectl style.

use crate::error::CliError;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The agent's image `attach` adds (the chart's, at this version).
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/osl-dev/osl-agent:", env!("CARGO_PKG_VERSION"));

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  a finding at or above --fail-on
  2  usage: bad flags or arguments
  3  not found: no such process, container or target
  4  cannot connect to the agent, or it went away mid-call
  5  permission denied
  6  the agent answered with an error";

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-osl",
    bin_name = "kubectl osl",
    version,
    about = "Ask a pod's operating system what is wrong: processes, memory against the cgroup limit, file descriptors",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub output: Output,
    /// Tables also list kernel threads ([kworker/…]: a host has a hundred, a pod none).
    #[arg(long, global = true)]
    pub all: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Connection {
    /// The agent's address, HOST:PORT (e.g. after `kubectl port-forward pod/x 7450`).
    #[arg(long, global = true, env = "OSL_AGENT", conflicts_with = "local")]
    pub agent: Option<String>,
    /// A file holding the bearer token for an agent that asks for one (the
    /// agent's --token-file); else the OSL_TOKEN environment variable. Never on
    /// the command line, where ps shows it to everyone.
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The token from OSL_TOKEN. `--token` is only here to be refused (see
    /// [`parse`]): ps shows argv to every user of the machine.
    #[arg(long = "token", env = "OSL_TOKEN", hide = true, hide_env_values = true, global = true, num_args = 0..=1)]
    pub token_env: Option<String>,
    /// Read this machine's processes in-process: no agent, no cluster (Linux only).
    #[arg(long, global = true)]
    pub local: bool,
    /// How long to wait for the agent to connect and to answer.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// With --local: the procfs to read.
    #[arg(long, global = true, default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
    /// With --local: a directory laid out like /sys/fs/cgroup, tried first.
    #[arg(long, global = true, hide = true)]
    pub cgroup_root: Option<PathBuf>,
}

const TOKEN_ON_ARGV: &str = "--token takes the token on the command line, where ps shows it to every user: \
     put it in a file and give --token-file PATH, or set OSL_TOKEN";

/// The command line, parsed; clap's own errors exit 2 with its message.
pub fn parse() -> Result<Cli, CliError> {
    let matches = Cli::command().get_matches();
    if matches.value_source("token_env") == Some(ValueSource::CommandLine) {
        return Err(CliError::Usage(TOKEN_ON_ARGV.into()));
    }
    Cli::from_arg_matches(&matches).map_err(|e| e.exit())
}

impl Connection {
    /// The bearer token to send: --token-file's content (trimmed, as the agent
    /// trims its own), else OSL_TOKEN; none when neither is given.
    pub fn token(&self) -> Result<Option<String>, CliError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read --token-file {}: {e}", path.display())))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(CliError::Usage(format!("--token-file {} is empty", path.display())));
            }
            return Ok(Some(token.to_string()));
        }
        match self.token_env.as_deref().map(str::trim) {
            Some("") => Err(CliError::Usage("OSL_TOKEN is set but empty".into())),
            token => Ok(token.map(str::to_string)),
        }
    }
}

/// Which cluster and namespace, as kubectl takes them.
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// The namespace (default: the context's, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// With -l: pods of every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Pods by label selector (e.g. app=web), instead of a target.
    #[arg(short = 'l', long, global = true)]
    pub selector: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
    /// strace only: the syscalls seen as an OCI seccomp profile (an allow-list).
    Seccomp,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Findings first, then containers (memory and CPU against their limits) and processes.
    Diagnose(DiagnoseArgs),
    /// Processes: state, threads, RSS/PSS/USS, fds against RLIMIT_NOFILE, container.
    Ps(Selection),
    /// Memory: each container's working set against its limit with the memory.stat
    /// breakdown and PSI, and each process's RSS, PSS, USS, anon, file, shmem.
    Mem(DiagnoseArgs),
    /// One process's file descriptors, like lsof: kind, target, sockets with their
    /// TCP state and endpoints; -o wide adds flags, offsets and fdinfo detail.
    Fds(FdsArgs),
    /// Pre-OOM reports and post-mortems the agent wrote, newest first; with an id,
    /// one report in full.
    Reports(ReportsArgs),
    /// What each thread of a process is waiting in right now, sampled from /proc
    /// (no stops, near-zero cost): running, or which syscall and kernel function.
    Blocked(BlockedArgs),
    /// strace -c for a process (--pid, its threads and children) or a container:
    /// calls, errors (and which errnos), time per syscall. In the kernel (ebpf,
    /// no stops) when the agent may, else with ptrace (stops at every syscall).
    Strace(StraceArgs),
    /// Add the agent to a running pod as an ephemeral container (no restart),
    /// sharing the PID namespace of one of its containers; reuses an agent that
    /// is already there (ephemeral containers cannot be removed).
    Attach(AttachArgs),
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// pod/NAME or NAME (or a workload with one running pod).
    pub target: String,
    /// The container whose processes the agent sees (default: the pod's first).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// The agent's image.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// What the agent may do: basic (no capabilities), ptrace (+SYS_PTRACE,
    /// DAC_READ_SEARCH: every process's fds and smaps, ptrace profiles), ebpf
    /// (+BPF, PERFMON: in-kernel syscall counting).
    #[arg(long, value_enum, default_value = "ptrace")]
    pub level: Level,
    /// How long to wait for the agent's container to start.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Level {
    Basic,
    Ptrace,
    Ebpf,
}

#[derive(Debug, Args)]
pub struct StraceArgs {
    /// What to diagnose: pod/NAME, NAME, deployment/NAME, statefulset/NAME, daemonset/NAME,
    /// replicaset/NAME or job/NAME (or -l SELECTOR); not with --agent or --local.
    pub target: Option<String>,
    /// The process.
    #[arg(long, required_unless_present = "container", conflicts_with = "container")]
    pub pid: Option<i32>,
    /// Every process of the container with this id (prefix).
    #[arg(long, short = 'c')]
    pub container: Option<String>,
    /// How long to count (the agent caps it; 60s by default).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// A table per thread too.
    #[arg(long)]
    pub threads: bool,
    /// auto: ebpf when the agent may load BPF programs, else ptrace.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: ProfileBackend,
    /// The table: by syscall (strace -c, with the fds each spent its time on), or
    /// by fd (what each fd is: a path, a TCP connection…, and the time on it).
    #[arg(long, value_enum, default_value = "syscall")]
    pub by: ProfileBy,
    /// With the ebpf backend, time one call in N of each thread (a power of two up to
    /// 64): counts stay exact, times are scaled, and reading the clock twice a call
    /// (the largest cost of timing) is saved on the rest. Default: 8 with --by
    /// syscall, 1 (every call) with --by fd.
    #[arg(long, value_name = "N")]
    pub sample: Option<u32>,
    /// How many of the slowest calls to list (at most 100).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub slowest: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileBy {
    Syscall,
    Fd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileBackend {
    Auto,
    Ebpf,
    Ptrace,
}

#[derive(Debug, Args)]
pub struct BlockedArgs {
    /// What to diagnose: pod/NAME, NAME, deployment/NAME, statefulset/NAME, daemonset/NAME,
    /// replicaset/NAME or job/NAME (or -l SELECTOR); not with --agent or --local.
    pub target: Option<String>,
    #[arg(long)]
    pub pid: i32,
    /// How long to sample (at most 60s).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Samples a second (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
}

#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// `[pod/NAME] [ID]`: the pod (with --agent or --local
    /// there is none) and a report id from the list.
    #[arg(num_args = 0..=2, value_name = "TARGET|ID")]
    pub args: Vec<String>,
}

impl ReportsArgs {
    /// (target, id). With an agent address a single argument is the id.
    pub fn split(&self, have_agent: bool) -> (Option<&String>, Option<&String>) {
        match self.args.as_slice() {
            [one] if have_agent => (None, Some(one)),
            [one] => (Some(one), None),
            [target, id] => (Some(target), Some(id)),
            _ => (None, None),
        }
    }
}

#[derive(Debug, Args)]
pub struct FdsArgs {
    /// What to diagnose: pod/NAME, NAME, deployment/NAME, statefulset/NAME, daemonset/NAME,
    /// replicaset/NAME or job/NAME (or -l SELECTOR); not with --agent or --local.
    pub target: Option<String>,
    /// The process.
    #[arg(long)]
    pub pid: i32,
    /// Only fds of this kind: file, directory, char_device, block_device, pipe, fifo, socket,
    /// eventfd, epoll, timerfd, signalfd, inotify, fanotify, memfd, pidfd, io_uring, anon_inode.
    #[arg(long, value_delimiter = ',', value_parser = parse_fd_kind)]
    pub kind: Vec<i32>,
    /// Only sockets in this TCP state: established, listen, close_wait, time_wait, syn_sent…
    #[arg(long, value_delimiter = ',', value_parser = parse_tcp_state)]
    pub state: Vec<i32>,
}

fn enum_value(value: &str, prefix: &str, from: impl Fn(&str) -> Option<i32>, what: &str) -> Result<i32, String> {
    let name = format!("{prefix}{}", value.trim().to_ascii_uppercase().replace('-', "_"));
    from(&name).filter(|&v| v != 0).ok_or_else(|| format!("unknown {what} {value:?}"))
}

fn parse_fd_kind(value: &str) -> Result<i32, String> {
    use osl_proto::v1::FdKind;
    enum_value(value, "FD_KIND_", |n| FdKind::from_str_name(n).map(|k| k as i32), "fd kind")
}

fn parse_tcp_state(value: &str) -> Result<i32, String> {
    use osl_proto::v1::TcpState;
    enum_value(value, "TCP_STATE_", |n| TcpState::from_str_name(n).map(|k| k as i32), "TCP state")
}

#[derive(Debug, Args)]
pub struct Selection {
    /// What to diagnose: pod/NAME, NAME, deployment/NAME, statefulset/NAME, daemonset/NAME,
    /// replicaset/NAME or job/NAME (or -l SELECTOR); not with --agent or --local.
    pub target: Option<String>,
    /// Only these processes (repeat or comma-separate).
    #[arg(long = "pid", value_delimiter = ',')]
    pub pids: Vec<i32>,
    /// Only processes of this container: its name (with a pod target), or its id or a prefix of it.
    #[arg(long)]
    pub container: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// A pod without an agent gets one attached (see `attach`; level ptrace).
    #[arg(long)]
    pub attach: bool,
    /// Also sample for this long what each process's threads are blocked in
    /// (100 Hz from /proc, no stops; 0s: not; at most 5s).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub blocked: Duration,
    /// Exit 1 if there is a finding at or above this severity.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Warn,
    Critical,
}
