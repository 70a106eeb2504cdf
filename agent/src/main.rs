//! `osl-agent serve`: the in-pod agent.

use clap::{Parser, Subcommand, ValueEnum};
use osl_agent::trend::FdSampler;
use osl_agent::{Agent, Roots, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
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
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
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
    if !args.listen.ip().is_loopback() {
        warn!(
            listen = %args.listen,
            "listening on a non-loopback address: anyone who can reach it can read every process in this pod"
        );
    }
    let roots = Roots { proc: args.proc_root, cgroup: args.cgroup_root };
    if args.fd_sample_interval.is_zero() {
        return Err("--fd-sample-interval must be more than 0".into());
    }
    let samples = (args.fd_history.as_millis() / args.fd_sample_interval.as_millis()).clamp(5, 10_000) as usize + 1;
    let sampler = FdSampler::new(args.fd_history, samples);
    let agent = Arc::new(Agent::new(&roots).with_fd_sampler(sampler));
    let p = agent.privileges();
    info!(level = ?p.level, limitations = p.limitations.len(), "privileges probed");
    for l in &p.limitations {
        info!(what = %l.field, why = %l.reason, "limitation");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    info!(listen = %listener.local_addr()?, "serving osl.v1.Diagnostics");
    tokio::spawn(server::sample_fds_every(agent.clone(), args.fd_sample_interval));
    server::serve(listener, agent, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
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
