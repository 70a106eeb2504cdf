//! Bounds the osl.v1 answers alive at once. An answer exists twice while it goes
//! out (the message, then its encoding, held until the client has read it): with
//! fifty clients, or slow ones, the agent's memory would follow their number. A
//! turn is taken before the handler runs and given back when the response body is
//! dropped (sent, or the stream reset). Profiles stream for up to a minute and
//! are bounded by their own limit, so they take no turn.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// osl.v1 answers being built or sent at once.
pub const CONCURRENT_ANSWERS: usize = 8;

#[derive(Clone)]
pub struct AnswersLayer {
    turns: Arc<Semaphore>,
}

impl AnswersLayer {
    pub fn new(concurrent: usize) -> Self {
        Self { turns: Arc::new(Semaphore::new(concurrent.max(1))) }
    }
}

impl<S> tower_layer::Layer<S> for AnswersLayer {
    type Service = Answers<S>;
    fn layer(&self, inner: S) -> Answers<S> {
        Answers { inner, turns: self.turns.clone() }
    }
}

#[derive(Clone)]
pub struct Answers<S> {
    inner: S,
    turns: Arc<Semaphore>,
}

fn bounded(path: &str) -> bool {
    path.starts_with("/osl.v1.Diagnostics/") && !path.ends_with("/ProfileSyscalls")
}

impl<S, B> tower_service::Service<http::Request<B>> for Answers<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The service that was polled ready handles this request; a clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let turns = bounded(req.uri().path()).then(|| self.turns.clone());
        Box::pin(async move {
            let turn = match turns {
                Some(t) => t.acquire_owned().await.ok(),
                None => None,
            };
            let resp = inner.call(req).await?;
            Ok(match turn {
                Some(turn) => resp.map(|body| tonic::body::Body::new(Held { body, _turn: turn })),
                None => resp,
            })
        })
    }
}

/// A response body that gives its turn back when dropped.
struct Held {
    body: tonic::body::Body,
    _turn: OwnedSemaphorePermit,
}

impl Body for Held {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn profiles_and_health_take_no_turn() {
        assert!(super::bounded("/osl.v1.Diagnostics/Diagnose"));
        assert!(!super::bounded("/osl.v1.Diagnostics/ProfileSyscalls"));
        assert!(!super::bounded("/grpc.health.v1.Health/Check"));
    }
}
