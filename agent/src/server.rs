//! The gRPC server: osl.v1.Diagnostics, grpc.health.v1 and reflection, with
//! graceful shutdown, a bounded number of connections, and a gate on every
//! osl.v1 call (who is calling, and the bearer token when there is one).

use crate::peer::{self, Peer};
use crate::service::{Agent, DiagnosticsService};
use osl_proto::v1::diagnostics_server::DiagnosticsServer;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Largest request the agent accepts; requests are small (a filter).
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest response: a snapshot of thousands of processes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// The longest a request may take, streams included; a profile is capped below this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Connections open at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections of refused callers (the pod's own processes) kept open to be told
/// PERMISSION_DENIED; they give back their place among [`MAX_CONNECTIONS`], and
/// beyond these few are closed at once, so a neighbour cannot crowd out the
/// port-forwards.
const MAX_REFUSED_CONNECTIONS: usize = 4;
/// Calls in flight on one connection (HTTP/2 streams).
const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// A connection whose peer answers no HTTP/2 ping within this is closed.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the caller check may take (it reads every process's fd table).
const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may call osl.v1.
#[derive(Debug, Clone)]
pub struct Access {
    /// A bearer token every osl.v1 call must carry (for listeners beyond loopback).
    pub token: Option<String>,
    /// Serve processes of the agent's own PID namespace (the pod's containers).
    pub allow_pod_peers: bool,
    /// The procfs whose processes are the pod (where callers are looked up).
    pub proc_root: PathBuf,
}

impl Default for Access {
    fn default() -> Self {
        Self { token: None, allow_pod_peers: false, proc_root: PathBuf::from("/proc") }
    }
}

impl Access {
    /// Serves every caller that can connect (tests whose clients share the agent's PID namespace).
    pub fn open() -> Self {
        Self { allow_pod_peers: true, ..Self::default() }
    }
}

/// What the server knows about a connection, in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: Arc<Peer>,
}

/// The gate on every osl.v1 call: the caller must be outside the pod (unless
/// `allow_pod_peers`) and carry the token when there is one. Health and
/// reflection stay open: kubelet probes, and nothing there reads a process.
#[derive(Clone)]
struct Gate {
    token: Option<Arc<[u8]>>,
    allow_pod_peers: bool,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.allow_pod_peers {
            match req.extensions().get::<ConnInfo>() {
                Some(c) if c.peer.allowed() => {}
                Some(c) => return Err(tonic::Status::permission_denied(c.peer.refusal())),
                None => return Err(tonic::Status::permission_denied("the caller is unknown")),
            }
        }
        let Some(want) = &self.token else { return Ok(req) };
        let given =
            req.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), want) => Ok(req),
            Some(_) => Err(tonic::Status::unauthenticated("wrong bearer token")),
            None => Err(tonic::Status::unauthenticated("this agent needs a bearer token (authorization: Bearer …)")),
        }
    }
}

/// Comparison whose time depends on neither where the first difference is nor
/// the expected length (both sides are hashed to a fixed width first).
fn constant_time_eq(given: &[u8], want: &[u8]) -> bool {
    let (a, b) = (fixed_width(given), fixed_width(want));
    let same = a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    same & (given.len() == want.len())
}

/// A keyed 256-bit digest (four SipHash-1-3 lanes; not for storage, only so that
/// the comparison loop runs over the same number of bytes whatever the lengths).
fn fixed_width(b: &[u8]) -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    static KEYS: std::sync::OnceLock<[std::collections::hash_map::RandomState; 4]> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    let mut out = [0u8; 32];
    for (lane, key) in out.chunks_mut(8).zip(keys) {
        let mut h = key.build_hasher();
        h.write(b);
        lane.copy_from_slice(&h.finish().to_ne_bytes());
    }
    out
}

/// Serves every caller that can connect, until `shutdown` completes (for tests
/// and embedding, whose clients share the agent's PID namespace).
pub async fn serve(
    listener: TcpListener,
    agent: Arc<Agent>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with_access(listener, agent, Access::open(), shutdown).await
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve_with_access(
    listener: TcpListener,
    agent: Arc<Agent>,
    access: Access,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<DiagnosticsServer<DiagnosticsService>>().await;
    // v1 and v1alpha: grpcio-reflection (Python) and older grpcurl/grpcui speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(osl_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let diagnostics = DiagnosticsServer::new(DiagnosticsService::new(agent))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let gate = Gate {
        token: access.token.as_deref().map(|t| Arc::from(t.trim().as_bytes())),
        allow_pod_peers: access.allow_pod_peers,
    };
    let diagnostics = tonic::service::interceptor::InterceptedService::new(diagnostics, gate);
    let incoming = accept(listener, (!access.allow_pod_peers).then_some(access.proc_root));
    tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE))
        .layer(crate::answers::AnswersLayer::new(crate::answers::CONCURRENT_ANSWERS))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(diagnostics)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Serves only grpc.health.v1 (for kubelet probes on the pod IP): nothing on this
/// listener reads a process.
pub async fn serve_health(listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<DiagnosticsServer<DiagnosticsService>>().await;
    tonic::transport::Server::builder()
        .max_concurrent_streams(4)
        .timeout(Duration::from_secs(10))
        .add_service(health_service)
        .serve_with_incoming_shutdown(accept(listener, None), shutdown)
        .await?;
    Ok(())
}

/// Accepts at most [`MAX_CONNECTIONS`] at once; with `check_in`, looks each
/// caller up among the processes under it (on the blocking pool, one task a
/// connection, so a slow check holds up no other connection).
fn accept(listener: TcpListener, check_in: Option<PathBuf>) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(8);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refused_slots = Arc::new(Semaphore::new(MAX_REFUSED_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (stream, remote) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: wait instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (tx, check_in, refused_slots) = (tx.clone(), check_in.clone(), refused_slots.clone());
            tokio::spawn(async move {
                let peer = match (check_in, stream.local_addr()) {
                    (None, _) => Peer::Outside,
                    (Some(root), Ok(local)) => check(root, local, remote).await,
                    (Some(_), Err(e)) => Peer::Unknown { why: format!("the connection's address: {e}") },
                };
                let mut slot = slot;
                if !peer.allowed() {
                    warn!(%remote, peer = ?peer, "osl.v1 refused on this connection: {}", peer.refusal());
                    match refused_slots.try_acquire_owned() {
                        Ok(refused) => slot = refused,
                        Err(_) => return, // closed: enough refused callers are being told why
                    }
                }
                let info = ConnInfo { peer: Arc::new(peer) };
                let _ = tx.send(Ok(Conn { io: stream, info, _slot: slot })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn check(root: PathBuf, local: SocketAddr, remote: SocketAddr) -> Peer {
    let lookup = tokio::task::spawn_blocking(move || peer::identify(&root, local, remote));
    match tokio::time::timeout(PEER_CHECK_TIMEOUT, lookup).await {
        Ok(Ok(peer)) => {
            if peer == Peer::Outside {
                tracing::debug!(%remote, "a connection from outside the pod");
            }
            peer
        }
        Ok(Err(e)) => Peer::Unknown { why: format!("the check failed: {e}") },
        Err(_) => Peer::Unknown { why: format!("the check took over {PEER_CHECK_TIMEOUT:?}") },
    }
}

/// An accepted connection, holding its slot until it closes.
struct Conn {
    io: TcpStream,
    info: ConnInfo,
    _slot: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Feeds the agent's fd-count history every `interval`, until the process ends.
pub async fn sample_fds_every(agent: Arc<Agent>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let agent = agent.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || agent.sample_fds()).await {
            warn!(error = %e, "an fd sample failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret!", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"S3cret", b"s3cret"));
    }
}
