//! The HTTP side of telemetry on `--port`: `/metrics` (Prometheus text format), `/healthz`
//! (the process serves) and `/readyz` (the caches are synced, so decisions are made on a full
//! view of the cluster). axum routes, on the server the load tester shares
//! (`crate::http_server`: HTTP/1.1, a header read timeout, failed accepts backed off).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode, header};
use axum::routing::{MethodRouter, any};
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
    let timeout = crate::http_server::HEADER_READ_TIMEOUT;
    crate::http_server::serve(listener, router(telemetry, health), timeout, "metrics").await;
}

/// What axum routed a request to.
#[derive(Clone, Copy)]
enum Route {
    Metrics,
    Healthz,
    Readyz,
    Unknown,
}

/// Every method is answered alike, as before the routes were axum's (a probe's HEAD, say).
fn router(telemetry: Arc<Telemetry>, health: Arc<Health>) -> Router {
    type Shared = (Arc<Telemetry>, Arc<Health>);
    let to = |route| -> MethodRouter<Shared> {
        any(
            move |State((telemetry, health)): State<Shared>| async move {
                respond(route, &telemetry, &health)
            },
        )
    };
    Router::new()
        .route("/metrics", to(Route::Metrics))
        .route("/healthz", to(Route::Healthz))
        .route("/readyz", to(Route::Readyz))
        .fallback(to(Route::Unknown))
        .with_state((telemetry, health))
}

fn respond(route: Route, telemetry: &Telemetry, health: &Health) -> Response<Body> {
    let (status, content_type, body) = match route {
        Route::Metrics => (
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            telemetry.render(),
        ),
        Route::Healthz => match telemetry.progress.stalled(STALL_LIMIT) {
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
        Route::Readyz if health.is_follower() => (
            StatusCode::OK,
            "text/plain",
            "OK (follower: waiting for the leader election Lease)".to_string(),
        ),
        Route::Readyz if health.is_ready() => (StatusCode::OK, "text/plain", "OK".to_string()),
        Route::Readyz => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not synced yet\n".to_string(),
        ),
        Route::Unknown => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn each_route_answers_and_any_other_path_is_not_found() {
        let health = Arc::new(Health::default());
        health.set_ready();
        let router = router(Arc::new(Telemetry::new()), health);
        for (path, status) in [
            ("/metrics", 200),
            ("/healthz", 200),
            ("/readyz", 200),
            ("/", 404),
            ("/metrics/", 404),
            ("/nope", 404),
        ] {
            let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{path}");
        }
    }
}
