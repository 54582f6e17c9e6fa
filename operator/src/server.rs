//! The operator's HTTP endpoint: `/healthz` and `/metrics` (Prometheus text).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Shared state of the endpoint.
#[derive(Clone, Debug)]
pub struct Health {
    /// Prometheus metrics to render.
    pub metrics: Metrics,
    /// False once the controller or the leader election loop has died.
    pub alive: Arc<AtomicBool>,
}

async fn healthz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "controller stopped\n")
    }
}

async fn metrics(
    State(health): State<Health>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        health.metrics.render(),
    )
}

/// The router: `GET /healthz`, `GET /metrics`.
pub fn app(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// Serves the router on `listener` until `shutdown` completes.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(health))
        .with_graceful_shutdown(shutdown)
        .await
}
