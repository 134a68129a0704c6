//! The HTTP side of telemetry on `--port`: `/metrics` (Prometheus text format), `/healthz`
//! (the process serves) and `/readyz` (the caches are synced, so decisions are made on a full
//! view of the cluster). hyper, HTTP/1.1, one task per connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Telemetry;

/// What `/readyz` answers; set once the controller's caches are synced.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Waiting for the leader election Lease: ready as a standby.
    follower: AtomicBool,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn set_follower(&self, follower: bool) {
        self.follower.store(follower, Ordering::Relaxed);
    }

    fn is_follower(&self) -> bool {
        self.follower.load(Ordering::Relaxed)
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Reconciles in flight with none finished for this long fail `/healthz`: longer than a
/// reconcile may run (it is cancelled at its deadline), with room for a loaded machine.
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(
    crate::controller::reconcile::RECONCILE_DEADLINE.as_secs() + 120,
);

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, health: Arc<Health>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics listener: {e}");
                continue;
            }
        };
        let (telemetry, health) = (telemetry.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &telemetry, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    telemetry: &Telemetry,
    health: &Health,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            telemetry.render(),
        ),
        "/healthz" => match telemetry.progress.stalled(STALL_LIMIT) {
            None => (StatusCode::OK, "text/plain", "OK".to_string()),
            Some(since) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!(
                    "wedged: reconciles in flight and none finished for {}s (each is \
                     cancelled after {}s)\n",
                    since.as_secs(),
                    crate::controller::reconcile::RECONCILE_DEADLINE.as_secs()
                ),
            ),
        },
        "/readyz" if health.is_follower() => (
            StatusCode::OK,
            "text/plain",
            "OK (follower: waiting for the leader election Lease)".to_string(),
        ),
        "/readyz" if health.is_ready() => (StatusCode::OK, "text/plain", "OK".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not synced yet\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
