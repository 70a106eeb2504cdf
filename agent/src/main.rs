//! `osl-agent serve`: the in-pod agent.

use clap::{Parser, Subcommand, ValueEnum};
use osl_agent::cgroup::CgroupReader;
use osl_agent::proc::ProcReader;
use osl_agent::trend::FdSampler;
use osl_agent::watch::store::Store;
use osl_agent::watch::{Trends, WatchConfig, Watcher};
use osl_agent::{Agent, Roots, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(name = "osl-agent", version, about = "osl's in-pod agent: serves what the OS sees over gRPC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve osl.v1.Diagnostics, gRPC health and reflection.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on. The default is loopback: inside a pod only
    /// `kubectl port-forward` (and so RBAC) reaches it.
    #[arg(long, default_value = "127.0.0.1:7450", env = "OSL_LISTEN")]
    listen: SocketAddr,
    /// The procfs to read.
    #[arg(long, default_value = "/proc", env = "OSL_PROC_ROOT")]
    proc_root: PathBuf,
    /// A directory laid out like the node's /sys/fs/cgroup, tried before the
    /// agent's and the processes' own cgroup mounts.
    #[arg(long, env = "OSL_CGROUP_ROOT")]
    cgroup_root: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text", env = "OSL_LOG_FORMAT")]
    log_format: LogFormat,
    /// How often every process's open-fd count is sampled, for leak trends.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "OSL_FD_SAMPLE_INTERVAL")]
    fd_sample_interval: Duration,
    /// How much fd-count history is kept per process.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, env = "OSL_FD_HISTORY")]
    fd_history: Duration,
    /// Where pre-OOM reports and post-mortems are written (an emptyDir in a pod).
    #[arg(long, default_value = "/var/run/osl/reports", env = "OSL_REPORT_DIR")]
    report_dir: PathBuf,
    /// Keep at most this many reports…
    #[arg(long, default_value_t = 50, env = "OSL_MAX_REPORTS")]
    max_reports: usize,
    /// …and at most this many bytes of them (the oldest go first).
    #[arg(long, default_value_t = 64 << 20, env = "OSL_MAX_REPORT_BYTES")]
    max_report_bytes: u64,
    /// Do not watch containers for OOM.
    #[arg(long, env = "OSL_NO_WATCH")]
    no_watch: bool,
    /// Working set (% of the limit) at which a pre-OOM report is written.
    #[arg(long, default_value_t = 80.0, env = "OSL_PRE_OOM_WARN_PCT")]
    pre_oom_warn_pct: f64,
    /// A second report at this share, never held back by the cooldown.
    #[arg(long, default_value_t = 90.0, env = "OSL_PRE_OOM_CRITICAL_PCT")]
    pre_oom_critical_pct: f64,
    /// Report when, at the growth rate, the limit is nearer than this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "OSL_PRE_OOM_PREDICT")]
    pre_oom_predict: Duration,
    /// How often containers' memory is polled (v1 eventfds wake the watcher sooner).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration, env = "OSL_PRE_OOM_POLL")]
    pre_oom_poll: Duration,
    /// At most one pre-OOM report per container in this time.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "OSL_PRE_OOM_COOLDOWN")]
    pre_oom_cooldown: Duration,
    /// The PSI trigger registered on cgroup v2 memory.pressure ("some|full STALL_US WINDOW_US").
    #[arg(long, default_value = "some 200000 2000000", env = "OSL_PRE_OOM_PSI_TRIGGER")]
    pre_oom_psi_trigger: String,
    /// Post Kubernetes Events (PreOOM, OOMKilled) on the agent's pod: `auto` does
    /// when the pod is known (OSL_POD_NAME, OSL_POD_NAMESPACE, OSL_POD_UID from the
    /// downward API) and a client configuration is found (in-cluster, or kubeconfig).
    #[arg(long, value_enum, default_value = "auto", env = "OSL_EVENTS")]
    events: Events,
    /// Longest syscall profile a client may ask for.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "OSL_MAX_PROFILE_DURATION")]
    max_profile_duration: std::time::Duration,
    /// A file holding a bearer token every osl.v1 call must carry (e.g. a mounted
    /// Secret); for an agent listening beyond loopback.
    #[arg(long, env = "OSL_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Serve the pod's own processes too. By default a connection whose client
    /// socket is held by a process of the agent's PID namespace (another container
    /// of the pod, which shares its loopback) is refused: only callers from
    /// outside the pod (kubectl port-forward) may use the agent's privileges.
    #[arg(long, env = "OSL_ALLOW_POD_PEERS")]
    allow_pod_peers: bool,
    /// Also serve gRPC health (and nothing else) on this address, for kubelet
    /// probes, which connect to the pod IP.
    #[arg(long, env = "OSL_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// Syscall profiles running at once (each of a different process).
    #[arg(long, default_value_t = 4, env = "OSL_MAX_PROFILES")]
    max_profiles: usize,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Events {
    Auto,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    osl_agent::malloc::tune();
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = std::iter::successors(Some(&*e as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect();
            error!(error = chain.join(": "), "osl-agent stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        )
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("--token-file {} is empty", path.display()))
        .map(Some)?,
        None => None,
    };
    if !args.listen.ip().is_loopback() && token.is_none() {
        warn!(
            listen = %args.listen,
            "LISTENING BEYOND LOOPBACK WITHOUT A TOKEN: anyone who can reach this address can read every process \
             in this pod; set --token-file, or listen on 127.0.0.1 and use a port-forward"
        );
    }
    if args.allow_pod_peers {
        warn!("--allow-pod-peers: every process of the pod may use the agent's privileges");
    }
    let access = server::Access { token, allow_pod_peers: args.allow_pod_peers, proc_root: args.proc_root.clone() };
    raise_nofile();
    let roots = Roots { proc: args.proc_root, cgroup: args.cgroup_root };
    if args.fd_sample_interval.is_zero() {
        return Err("--fd-sample-interval must be more than 0".into());
    }
    let samples =
        (args.fd_history.as_millis() / args.fd_sample_interval.as_millis().max(1)).clamp(5, 10_000) as usize + 1;
    let sampler = FdSampler::new(args.fd_history, samples);
    let mut agent =
        Agent::new(&roots).with_fd_sampler(sampler).with_profile_limits(args.max_profile_duration, args.max_profiles);
    let stop_watch = Arc::new(AtomicBool::new(false));
    let store = if args.no_watch {
        info!("pre-OOM watcher off (--no-watch)");
        None
    } else {
        match Store::open(&args.report_dir, args.max_reports, args.max_report_bytes) {
            Ok(store) => Some(Arc::new(store)),
            Err(e) => {
                warn!(dir = %args.report_dir.display(), error = %e, "pre-OOM watcher off: cannot use the report directory (set --report-dir)");
                None
            }
        }
    };
    if let Some(store) = store {
        let cfg = WatchConfig {
            warn_pct: args.pre_oom_warn_pct,
            critical_pct: args.pre_oom_critical_pct,
            predict_within: args.pre_oom_predict,
            poll: args.pre_oom_poll,
            cooldown: args.pre_oom_cooldown,
            psi_trigger: args.pre_oom_psi_trigger.clone(),
            ..WatchConfig::default()
        };
        let cgroups = CgroupReader::new(&roots.proc, roots.cgroup.clone())?;
        let trends = Trends::default();
        let mut watcher =
            Watcher::new(ProcReader::new(&roots.proc), cgroups, store.clone(), cfg).with_trends(trends.clone());
        if let Some(notify) = event_poster(args.events).await {
            watcher = watcher.with_notify(notify);
        }
        lock_memory(agent.privileges());
        let stop = stop_watch.clone();
        std::thread::Builder::new().name("pre-oom".into()).spawn(move || watcher.run(stop))?;
        info!(dir = %args.report_dir.display(), "pre-OOM watcher on");
        agent = agent.with_reports(store).with_trends(trends);
    }
    let agent = Arc::new(agent);
    let p = agent.privileges();
    info!(level = ?p.level, limitations = p.limitations.len(), "privileges probed");
    for l in &p.limitations {
        info!(what = %l.field, why = %l.reason, "limitation");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    info!(listen = %listener.local_addr()?, "serving osl.v1.Diagnostics");
    if let Some(addr) = args.health_listen {
        let health = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        info!(listen = %health.local_addr()?, "serving grpc.health.v1 only");
        tokio::spawn(async move {
            if let Err(e) = server::serve_health(health, std::future::pending()).await {
                error!(error = %e, "the health listener stopped");
            }
        });
    }
    tokio::spawn(server::sample_fds_every(agent.clone(), args.fd_sample_interval));
    server::serve_with_access(listener, agent, access, shutdown_signal()).await?;
    stop_watch.store(true, Ordering::Relaxed);
    info!("stopped");
    Ok(())
}

/// Raises the agent's soft RLIMIT_NOFILE to its hard limit (as Go's runtime
/// does): diagnose's blocked-on sample holds a handle on each process sampled
/// (up to 4,096) and connections take one each, and a runtime's default soft
/// limit can be 1,024.
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(error = %e, "cannot raise the soft RLIMIT_NOFILE to the hard limit");
        }
    }
}

/// Keeps the agent's pages in RAM, so that a container near its limit, whose
/// pages the kernel is reclaiming, does not slow the report capture down with
/// page faults. ONFAULT: only pages the agent touches are locked, nothing is
/// faulted in ahead (thread stacks stay small).
///
/// Only where locking is free of limits (CAP_IPC_LOCK, or an unlimited
/// RLIMIT_MEMLOCK): under a finite limit MCL_FUTURE would make the agent's later
/// allocations fail instead.
fn lock_memory(privileges: &osl_agent::probe::Privileges) {
    use rustix::mm::{MlockAllFlags, mlockall};
    use rustix::process::{Resource, getrlimit};
    let unlimited = getrlimit(Resource::Memlock).current.is_none();
    if !unlimited && !osl_agent::decode::has_capability(privileges.capabilities, osl_agent::decode::CAP_IPC_LOCK) {
        info!("agent memory not locked: needs CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK");
        return;
    }
    match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
        Ok(()) => info!("agent memory locked (mlockall)"),
        Err(e) => info!(error = %e, "agent memory not locked"),
    }
}

/// The queue to the Event poster, or None with one log line saying why not.
async fn event_poster(events: Events) -> Option<osl_agent::kube_events::NoticeSender> {
    use osl_agent::kube_events::{PodRef, Poster, RateLimit, client};
    if events == Events::Off {
        info!("Kubernetes Events off (--events off)");
        return None;
    }
    let pod = match PodRef::from_env() {
        Ok(pod) => pod,
        Err(why) => {
            info!("Kubernetes Events off: {why}");
            return None;
        }
    };
    let client = match client().await {
        Ok(c) => c,
        Err(why) => {
            info!("Kubernetes Events off: {why}");
            return None;
        }
    };
    info!(pod = %pod.name, namespace = %pod.namespace, "Kubernetes Events on");
    let (tx, _task) = Poster::new(client, pod, RateLimit::default()).spawn(16);
    Some(tx)
}

/// SIGTERM (kubelet) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        warn!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OSL_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
