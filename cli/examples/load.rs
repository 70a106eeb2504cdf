//! A load driver for a running agent: `--clients` concurrent clients each make
//! `--calls` Diagnose calls, one after the other, and the latency of every call
//! is kept. Prints one JSON object on stdout (latencies in milliseconds):
//!
//! ```sh
//! cargo run --release -p osl-cli --example load -- --agent 127.0.0.1:7450 --clients 50 --calls 2000
//! ```
//!
//! Each client opens its own channel (one HTTP/2 connection), as each
//! `kubectl osl` run does, so the agent accepts, serves and closes `--clients`
//! connections in parallel; `--shared-channel` multiplexes every client over one
//! connection instead (HTTP/2 streams, as one long-lived program would).
//! `bench/load.py` starts the agent, runs this and watches the agent's memory.

use clap::Parser;
use osl_proto::v1::DiagnoseRequest;
use osl_proto::v1::diagnostics_client::DiagnosticsClient;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(about = "Drive an osl agent with concurrent Diagnose calls and print latencies as JSON")]
struct Args {
    /// The agent, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7450")]
    agent: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Diagnose calls per client, made one after the other.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// One connection for every client instead of one each.
    #[arg(long)]
    shared_channel: bool,
    /// Also sample what each process is blocked in for this long, per call, as
    /// `kubectl osl diagnose` does (0: a plain snapshot).
    #[arg(long, default_value_t = 0)]
    blocked_sample_msec: u32,
    /// A call slower than this counts as an error.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Responses list every process of the machine: allow as much as the CLI does.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Error messages kept for the report (the count is always exact).
const ERROR_SAMPLES: usize = 5;

#[derive(Default)]
struct ClientResult {
    latencies_usec: Vec<u64>,
    errors: u64,
    /// Error text (gRPC code and message) -> how many times.
    error_kinds: BTreeMap<String, u64>,
    /// Processes in the last answer, to show what a call carried.
    processes: usize,
}

impl ClientResult {
    fn error(&mut self, what: String) {
        self.errors += 1;
        *self.error_kinds.entry(what).or_default() += 1;
    }
}

async fn connect(addr: &str, timeout: Duration) -> Result<Channel, String> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    Endpoint::from_shared(uri)
        .map_err(|e| format!("--agent {addr:?}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

async fn client(
    channel: Channel,
    calls: usize,
    request: DiagnoseRequest,
    start: std::sync::Arc<tokio::sync::Barrier>,
) -> ClientResult {
    let mut client = DiagnosticsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut result = ClientResult { latencies_usec: Vec::with_capacity(calls), ..ClientResult::default() };
    start.wait().await;
    for _ in 0..calls {
        let t = Instant::now();
        match client.diagnose(request.clone()).await {
            Ok(response) => {
                result.latencies_usec.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                result.processes = response.into_inner().processes.len();
            }
            Err(status) => result.error(format!("{:?}: {}", status.code(), status.message())),
        }
    }
    result
}

/// Nearest-rank percentile of sorted values, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.clients == 0 {
        eprintln!("--clients must be at least 1");
        return ExitCode::from(2);
    }
    let shared = if args.shared_channel {
        match connect(&args.agent, args.timeout).await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(4);
            }
        }
    } else {
        None
    };
    let request = DiagnoseRequest { blocked_sample_msec: args.blocked_sample_msec, ..DiagnoseRequest::default() };
    // Every connection is made before the clock starts, and the clients start together.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let mut tasks = Vec::with_capacity(args.clients);
    let mut connect_errors = ClientResult::default();
    for _ in 0..args.clients {
        let channel = match &shared {
            Some(c) => c.clone(),
            None => match connect(&args.agent, args.timeout).await {
                Ok(c) => c,
                Err(e) => {
                    // This client's calls all fail; the others still run.
                    for _ in 0..args.calls {
                        connect_errors.error(e.clone());
                    }
                    let start = start.clone();
                    tasks.push(tokio::spawn(async move {
                        start.wait().await;
                        ClientResult::default()
                    }));
                    continue;
                }
            },
        };
        tasks.push(tokio::spawn(client(channel, args.calls, request.clone(), start.clone())));
    }
    start.wait().await;
    let began = Instant::now();
    let mut all = connect_errors;
    for task in tasks {
        match task.await {
            Ok(r) => {
                all.latencies_usec.extend(r.latencies_usec);
                all.errors += r.errors;
                for (k, n) in r.error_kinds {
                    *all.error_kinds.entry(k).or_default() += n;
                }
                all.processes = all.processes.max(r.processes);
            }
            Err(e) => all.error(format!("a client task failed: {e}")),
        }
    }
    let wall = began.elapsed().as_secs_f64();
    let mut lat = all.latencies_usec;
    lat.sort_unstable();
    let ok = lat.len() as u64;
    let mean_ms = if lat.is_empty() { None } else { Some(lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0) };
    let error_samples: Vec<serde_json::Value> = all
        .error_kinds
        .iter()
        .take(ERROR_SAMPLES)
        .map(|(what, n)| serde_json::json!({ "error": what, "count": n }))
        .collect();
    let report = serde_json::json!({
        "agent": args.agent,
        "clients": args.clients,
        "calls_per_client": args.calls,
        "channel": if args.shared_channel { "shared" } else { "per-client" },
        "blocked_sample_msec": args.blocked_sample_msec,
        "total_calls": ok + all.errors,
        "ok": ok,
        "errors": all.errors,
        "error_samples": error_samples,
        "wall_secs": wall,
        "calls_per_sec": ok as f64 / wall.max(f64::EPSILON),
        "p50_ms": percentile_ms(&lat, 50.0),
        "p90_ms": percentile_ms(&lat, 90.0),
        "p99_ms": percentile_ms(&lat, 99.0),
        "max_ms": lat.last().map(|&v| v as f64 / 1000.0),
        "mean_ms": mean_ms,
        "processes_per_answer": all.processes,
    });
    println!("{report}");
    if all.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
