//! `/healthz` (the process answers), `/readyz` (started and not draining; dependencies reported),
//! `/metrics`.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    error::{ApiOk, Envelope, ErrorEnvelope, error_response},
    http::openapi::Unavailable,
    state::AppState,
};

/// The body of a passing liveness probe.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// The body of a passing readiness probe: this pod can serve, and how its shared dependencies
/// answer. An outage of PostgreSQL or Redis shows here, in the logs and in metrics, but does not
/// fail readiness: it would take every replica out of the Service at once, while the pod still
/// serves what it can (reads and the live push without PostgreSQL; everything but cross-replica
/// fan-out without Redis) and answers the rest with the envelope's 503.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ok`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    /// `ok` or `unreachable`.
    #[schema(value_type = String, example = "ok")]
    pub database: &'static str,
    /// `ok` or `unreachable`.
    #[schema(value_type = String, example = "ok")]
    pub redis: &'static str,
    /// The AI server of this colour: `serving`, `not serving`, `unreachable`.
    #[schema(value_type = String, example = "serving")]
    pub ai: &'static str,
    /// The live push's link to the other replicas: `connected`, `disconnected` (events reach
    /// this replica's clients only), or `off` (no live push in this process).
    #[schema(value_type = String, example = "connected")]
    pub push: &'static str,
}

/// Alive: answers while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process answers", body = Envelope<Probe>),
        (status = 503, response = Unavailable),
    )
)]
pub async fn healthz() -> ApiOk<Probe> {
    ApiOk(Probe { status: "ok" })
}

/// Ready: started (the AI server of this colour answered `SERVING` once) and not draining. The
/// body reports PostgreSQL, Redis and the AI server as they answer now.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    summary = "Readiness",
    description = "200 once this pod has started (the AI server of its colour answered `SERVING` \
                   once) and while it is not draining; the body reports the shared dependencies, \
                   whose outage does not fail readiness. 503 `starting: ...` until the AI server \
                   answered, 503 `draining` during shutdown.",
    responses(
        (status = 200, description = "Ready; the dependencies as they answer now", body = Envelope<Ready>),
        (status = 503, description = "Starting, draining, or the probe timed out", body = ErrorEnvelope),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_draining() {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !state.readiness.is_started() {
        let ai = state.ai_health.borrow().as_str();
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("starting: waiting for the AI server to answer SERVING (it is {ai})"),
        );
    }
    let db = tokio::time::timeout(
        state.probe_timeout,
        sqlx::query("SELECT 1").execute(&state.db),
    );
    let mut redis = state.redis.clone();
    let ping = redis::cmd("PING");
    let redis = tokio::time::timeout(state.probe_timeout, ping.query_async::<String>(&mut redis));
    let (db, redis) = tokio::join!(db, redis);
    let database = if matches!(db, Ok(Ok(_))) {
        "ok"
    } else {
        tracing::warn!(result = ?db.map(|r| r.map(|_| ())), "readiness: database unreachable");
        "unreachable"
    };
    let redis = if matches!(redis, Ok(Ok(_))) {
        "ok"
    } else {
        tracing::warn!(result = ?redis, "readiness: redis unreachable");
        "unreachable"
    };
    for (dependency, state) in [("database", database), ("redis", redis)] {
        metrics::gauge!("mutr_dependency_up", "dependency" => dependency).set(if state == "ok" {
            1.0
        } else {
            0.0
        });
    }
    let ai = state.ai_health.borrow().as_str();
    let push = match state.realtime.as_ref().and_then(|r| r.redis_connected()) {
        Some(true) => "connected",
        Some(false) => "disconnected",
        None => "off",
    };
    ApiOk(Ready {
        status: "ok",
        database,
        redis,
        ai,
        push,
    })
    .into_response()
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 503, response = Unavailable),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
