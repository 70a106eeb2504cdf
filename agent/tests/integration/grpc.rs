//! The gRPC server on an ephemeral loopback port: the service, health,
//! reflection, and status codes for bad requests.

use osl_agent::{Agent, Roots, server};
use osl_proto::v1;
use osl_proto::v1::diagnostics_client::DiagnosticsClient;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Code;

struct Running {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let agent = Arc::new(Agent::new(&Roots::default()));
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        server::serve(listener, agent, async { rx.await.ok().unwrap_or(()) }).await.unwrap();
    });
    Running { addr, stop: Some(tx), task }
}

#[tokio::test]
async fn serves_diagnostics_with_status_codes_for_bad_requests() {
    let srv = start().await;
    let mut client = DiagnosticsClient::connect(srv.addr.clone()).await.unwrap();
    let me = std::process::id() as i32;

    let resp =
        client.get_process(v1::GetProcessRequest { pid: me, start_time_ticks: None }).await.unwrap().into_inner();
    let p = resp.process.unwrap();
    assert_eq!(p.pid, me);
    let agent = resp.agent.unwrap();
    assert!(agent.rss_bytes.unwrap() > 0);
    assert_ne!(agent.level, v1::PrivilegeLevel::Unspecified as i32);

    let status = client.get_process(v1::GetProcessRequest { pid: i32::MAX, start_time_ticks: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), format!("process {} not found", i32::MAX));

    let reused = v1::GetProcessRequest { pid: me, start_time_ticks: Some(p.start_time_ticks + 1) };
    assert_eq!(client.get_process(reused).await.unwrap_err().code(), Code::NotFound);

    let bad =
        v1::DiagnoseRequest { filter: Some(v1::Filter { pids: vec![-3], ..Default::default() }), ..Default::default() };
    assert_eq!(client.diagnose(bad).await.unwrap_err().code(), Code::InvalidArgument);

    let diag = client.diagnose(v1::DiagnoseRequest::default()).await.unwrap().into_inner();
    assert!(diag.processes.iter().any(|p| p.pid == me));
    assert!(!diag.containers.is_empty());

    let listed = client.list_processes(v1::ListProcessesRequest::default()).await.unwrap().into_inner();
    assert!(listed.processes.len() > 1);

    stop(srv).await;
}

#[tokio::test]
async fn serves_health_and_reflection() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let srv = start().await;
    let channel = tonic::transport::Endpoint::from_shared(srv.addr.clone()).unwrap().connect().await.unwrap();

    let mut health = HealthClient::new(channel.clone());
    let check = HealthCheckRequest { service: osl_proto::DIAGNOSTICS_SERVICE.into() };
    let status = health.check(check).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"osl.v1.Diagnostics"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    stop(srv).await;
}

async fn stop(mut srv: Running) {
    srv.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), srv.task).await.expect("graceful shutdown").unwrap();
}

/// Identical Diagnose calls in flight share one snapshot (single-flight), so N
/// clients asking at once cost one snapshot, not N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_diagnose_calls_share_one_snapshot() {
    let srv = start().await;
    let sleeper = Sleeper::new();
    let req = v1::DiagnoseRequest {
        filter: Some(v1::Filter { pids: vec![sleeper.pid()], ..Default::default() }),
        blocked_sample_msec: 400,
    };
    let calls = (0..8).map(|_| {
        let (addr, req) = (srv.addr.clone(), req.clone());
        tokio::spawn(async move {
            let mut client = DiagnosticsClient::connect(addr).await.unwrap();
            client.diagnose(req).await.unwrap().into_inner()
        })
    });
    let mut taken = std::collections::BTreeSet::new();
    for c in calls.collect::<Vec<_>>() {
        let r = c.await.unwrap();
        // A snapshot is known by when it started and how long it took (in µs):
        // separate snapshots do not share both.
        taken.insert((r.taken_at_unix_ms, r.capture_usec));
    }
    // Eight calls at once: one snapshot (two if a client connected late).
    assert!(taken.len() <= 2, "snapshots (started, took µs): {taken:?}");
    stop(srv).await;
}

/// A client that gives up (its deadline) does not free its reader's turn while
/// the read goes on: the next request waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_does_not_free_the_readers_turn() {
    let srv = start().await;
    let sleeper = Sleeper::new();
    let mut client = DiagnosticsClient::connect(srv.addr.clone()).await.unwrap();
    for ms in 0..osl_agent::service::CONCURRENT_READS as u32 {
        // Distinct requests (no sharing), each 1.5 s long, abandoned after 100 ms.
        let mut req = tonic::Request::new(v1::DiagnoseRequest {
            filter: Some(v1::Filter { pids: vec![sleeper.pid()], ..Default::default() }),
            blocked_sample_msec: 1500 + ms,
        });
        req.set_timeout(std::time::Duration::from_millis(100));
        let err = client.diagnose(req).await.unwrap_err();
        assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err}");
    }
    let started = std::time::Instant::now();
    client.list_processes(v1::ListProcessesRequest::default()).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(900), "served after {waited:?}: the turns were freed");
    stop(srv).await;
}

/// A process to sample (the agent does not sample itself); killed on drop.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn new() -> Self {
        Self(std::process::Command::new("sleep").arg("60").spawn().unwrap())
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The probes listener (--health-listen, on the pod IP) serves health and
/// nothing that reads a process.
#[tokio::test]
async fn the_health_listener_serves_health_only() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(server::serve_health(listener, std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(addr).unwrap().connect().await.unwrap();
    let check = HealthCheckRequest { service: osl_proto::DIAGNOSTICS_SERVICE.into() };
    let status = HealthClient::new(channel.clone()).check(check).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let err = DiagnosticsClient::new(channel).diagnose(v1::DiagnoseRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    task.abort();
}

/// The agent raises its soft RLIMIT_NOFILE to the hard limit: the blocked-on
/// sample holds a handle on each process, and a runtime's default can be 1,024.
#[test]
fn the_agent_raises_its_soft_fd_limit() {
    let limits = |pid: u32| -> (String, String) {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default().to_string();
        let mut f = line.split_whitespace().skip(3);
        (f.next().unwrap_or_default().to_string(), f.next().unwrap_or_default().to_string())
    };
    use std::io::BufRead;
    let mut agent = std::process::Command::new("bash")
        .args(["-c", "ulimit -Sn 512 && exec \"$0\" serve --listen 127.0.0.1:0 --no-watch --events off"])
        .arg(env!("CARGO_BIN_EXE_osl-agent"))
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The limit is raised before the listener is bound: read it once serving.
    let log = std::io::BufReader::new(agent.stderr.take().unwrap());
    let serving = log.lines().map_while(Result::ok).any(|l| l.contains("serving osl.v1.Diagnostics"));
    let (soft, hard) = limits(agent.id());
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(serving, "the agent did not start");
    assert_ne!(hard, "512", "the test needs a hard limit above 512");
    assert_eq!(soft, hard, "soft limit {soft}, hard {hard}");
}
