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

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    agent: Arc<Agent>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<DiagnosticsServer<DiagnosticsService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(osl_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let diagnostics = DiagnosticsServer::new(DiagnosticsService::new(agent))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
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
