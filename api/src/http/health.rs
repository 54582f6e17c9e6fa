//! `/healthz` (the process answers), `/readyz` (dependencies reachable, not draining), `/metrics`.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    error::{ApiOk, error_response},
    state::AppState,
};

/// The body of a passing probe.
#[derive(Debug, Serialize)]
pub struct Probe {
    /// `ok`.
    pub status: &'static str,
}

/// Alive: answers while the process runs.
pub async fn healthz() -> ApiOk<Probe> {
    ApiOk(Probe { status: "ok" })
}

/// Ready: not draining, PostgreSQL and Redis answer within the probe timeout.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_draining() {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let db = tokio::time::timeout(
        state.probe_timeout,
        sqlx::query("SELECT 1").execute(&state.db),
    );
    let mut redis = state.redis.clone();
    let ping = redis::cmd("PING");
    let redis = tokio::time::timeout(state.probe_timeout, ping.query_async::<String>(&mut redis));
    let (db, redis) = tokio::join!(db, redis);
    if !matches!(db, Ok(Ok(_))) {
        tracing::warn!(result = ?db.map(|r| r.map(|_| ())), "readiness: database unreachable");
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "database unreachable");
    }
    if !matches!(redis, Ok(Ok(_))) {
        tracing::warn!(result = ?redis, "readiness: redis unreachable");
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "redis unreachable");
    }
    ApiOk(Probe { status: "ok" }).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
