//! Prometheus metrics, and the plain-HTTP side port that serves them with `/healthz` and
//! `/readyz`. Metric names are listed once here so that dashboards have one place to look.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Requests by gRPC status code (`code`).
pub const REQUESTS: &str = "mutr_ai_requests_total";
/// Request latency in seconds, by gRPC status code.
pub const REQUEST_SECONDS: &str = "mutr_ai_request_duration_seconds";
/// Requests admitted and not finished (running or waiting).
pub const IN_FLIGHT: &str = "mutr_ai_requests_in_flight";
/// Jobs waiting for a sequence, by worker (`generate`, `embed`).
pub const QUEUE_DEPTH: &str = "mutr_ai_queue_depth";
/// Sequences being decoded, by worker.
pub const ACTIVE_SEQUENCES: &str = "mutr_ai_active_sequences";
/// Sequences in each decode, by worker and phase (`prefill`: prompt chunks or texts to embed;
/// `decode`: one token per sequence).
pub const BATCH_SEQUENCES: &str = "mutr_ai_batch_sequences";
/// Tokens in each decode, by worker and phase.
pub const BATCH_TOKENS: &str = "mutr_ai_batch_tokens";
/// Tokens generated for topics.
pub const GENERATED_TOKENS: &str = "mutr_ai_generated_tokens_total";
/// Sequences ended, by worker and outcome (`done`, `cancelled`, `deadline`, `error`).
pub const SEQUENCES_ENDED: &str = "mutr_ai_sequences_ended_total";
/// Sequences started, by generative context (`context`, from 0; see `--gen-contexts`).
pub const CONTEXT_SEQUENCES: &str = "mutr_ai_context_sequences_total";
/// Tokens the generative sequences fed, by phase (`prompt`: prompt tokens after the shared
/// start that was copied, not decoded; `step`: one per decode step of a sequence). Over requests:
/// the work one request costs.
pub const SEQUENCE_TOKENS: &str = "mutr_ai_sequence_tokens_total";
/// Tokens of the shared start of each kind of prompt (`kind`: `topic`, `emotion`), decoded once
/// per context and copied into each sequence of that kind.
pub const SHARED_PROMPT_TOKENS: &str = "mutr_ai_shared_prompt_tokens";
/// Throw-away tokens decoded to keep a decode step's shape (gaps between sequence ids, the
/// neighbour of a lone sequence): work that serves no request.
pub const FILLER_TOKENS: &str = "mutr_ai_filler_tokens_total";
/// The generative layout (always 1): labels `contexts`, `threads_per_context`,
/// `sequences_per_context` (the busiest context's), `embed_threads` and `chosen_by` (`auto` or
/// `flags`).
pub const LAYOUT: &str = "mutr_ai_layout_info";
/// Result cache lookups that hit.
pub const CACHE_HITS: &str = "mutr_ai_cache_hits_total";
/// Result cache lookups that missed.
pub const CACHE_MISSES: &str = "mutr_ai_cache_misses_total";
/// Result cache operations that failed (Redis down, slow, or a bad entry), by operation.
pub const CACHE_ERRORS: &str = "mutr_ai_cache_errors_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let sizes = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SEQUENCES.into()), &sizes)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_TOKENS.into()), &sizes))
                .expect("bucket lists are non-empty constants");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (a test harness): render ours without installing.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

pub(crate) fn queue_depth(worker: &'static str, n: usize) {
    metrics::gauge!(QUEUE_DEPTH, "worker" => worker).set(n as f64);
}

pub(crate) fn active_sequences(worker: &'static str, n: usize) {
    metrics::gauge!(ACTIVE_SEQUENCES, "worker" => worker).set(n as f64);
}

pub(crate) fn batch(worker: &'static str, phase: &'static str, sequences: usize, tokens: i32) {
    metrics::histogram!(BATCH_SEQUENCES, "worker" => worker, "phase" => phase)
        .record(sequences as f64);
    metrics::histogram!(BATCH_TOKENS, "worker" => worker, "phase" => phase)
        .record(f64::from(tokens));
}

pub(crate) fn context_sequence(context: usize) {
    metrics::counter!(CONTEXT_SEQUENCES, "context" => context.to_string()).increment(1);
}

pub(crate) fn sequence_tokens(phase: &'static str, n: usize) {
    metrics::counter!(SEQUENCE_TOKENS, "phase" => phase).increment(n as u64);
}

pub(crate) fn shared_prompt(kind: usize, tokens: usize) {
    let kind = if kind == 0 { "topic" } else { "emotion" };
    metrics::gauge!(SHARED_PROMPT_TOKENS, "kind" => kind).set(tokens as f64);
}

pub(crate) fn filler_tokens(n: usize) {
    metrics::counter!(FILLER_TOKENS).increment(n as u64);
}

pub(crate) fn layout(layout: &crate::llm::Layout, embed_threads: i32) {
    metrics::gauge!(
        LAYOUT,
        "contexts" => layout.contexts().to_string(),
        "threads_per_context" => layout.threads.to_string(),
        "sequences_per_context" => layout.most_sequences().to_string(),
        "embed_threads" => embed_threads.to_string(),
        "chosen_by" => layout.chosen_by,
    )
    .set(1.0);
}

pub(crate) fn generated_tokens(n: u64) {
    metrics::counter!(GENERATED_TOKENS).increment(n);
}

pub(crate) fn sequence_ended(worker: &'static str, outcome: &'static str) {
    metrics::counter!(SEQUENCES_ENDED, "worker" => worker, "outcome" => outcome).increment(1);
}

pub(crate) fn request(code: tonic::Code, elapsed: Duration) {
    let code = format!("{code:?}");
    metrics::counter!(REQUESTS, "code" => code.clone()).increment(1);
    metrics::histogram!(REQUEST_SECONDS, "code" => code).record(elapsed.as_secs_f64());
}

#[derive(Clone)]
struct HttpState {
    handle: PrometheusHandle,
    ready: watch::Receiver<bool>,
}

/// The side port's routes: `/metrics`, `/healthz` (the process answers), `/readyz` (200 only while
/// the gRPC health status is `SERVING`).
pub fn router(handle: PrometheusHandle, ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { s.handle.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move {
                if *s.ready.borrow() {
                    (StatusCode::OK, "serving")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not serving")
                }
            }),
        )
        .with_state(HttpState { handle, ready })
}

/// Binds the side port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub(crate) fn in_flight(n: usize) {
    metrics::gauge!(IN_FLIGHT).set(n as f64);
}
