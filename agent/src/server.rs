//! The gRPC server: osl.v1.Diagnostics, grpc.health.v1 and reflection, with
//! graceful shutdown.

use crate::service::{Agent, DiagnosticsService};
use osl_proto::v1::diagnostics_server::DiagnosticsServer;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

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
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Checks `authorization: Bearer <token>` on every osl.v1 call when the agent has
/// a token (health and reflection stay open: kubelet probes, and nothing there
/// reads a process).
#[derive(Clone)]
pub struct BearerToken(Option<Arc<[u8]>>);

impl BearerToken {
    pub fn new(token: Option<String>) -> Self {
        Self(token.map(|t| Arc::from(t.trim().as_bytes())))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(want) = &self.0 else { return Ok(req) };
        let given =
            req.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), want) => Ok(req),
            Some(_) => Err(tonic::Status::unauthenticated("wrong bearer token")),
            None => Err(tonic::Status::unauthenticated("this agent needs a bearer token (authorization: Bearer …)")),
        }
    }
}

/// Comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    agent: Arc<Agent>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with_token(listener, agent, BearerToken::new(None), shutdown).await
}

/// [`serve`], with every osl.v1 call checked against `token`.
pub async fn serve_with_token(
    listener: TcpListener,
    agent: Arc<Agent>,
    token: BearerToken,
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
    let diagnostics = tonic::service::interceptor::InterceptedService::new(diagnostics, token);
    tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(diagnostics)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Feeds the agent's fd-count history every `interval`, until the process ends.
pub async fn sample_fds_every(agent: Arc<Agent>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let agent = agent.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || agent.sample_fds()).await {
            tracing::warn!(error = %e, "an fd sample failed");
        }
    }
}
