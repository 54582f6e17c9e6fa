//! The HTTP surface: routes, the envelope for every answer (including axum's own rejections,
//! unknown routes, timeouts and panics), CORS, request metrics. The REST routes are registered
//! with their OpenAPI operations ([`openapi`]), so the document lists exactly what is served.

pub mod auth;
pub mod extract;
pub mod health;
pub mod nodes;
pub mod oauth;
pub mod openapi;
pub mod page;
pub mod rate_limit;
pub mod users;

use std::time::{Duration, Instant};

use clap::Args;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use tower_http::{
    catch_panic::CatchPanicLayer, cors::CorsLayer, set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, envelope_errors, error_response},
    state::AppState,
};

/// Sizes, rates and timeouts of the HTTP API.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "MUTR_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Most nodes one `/api/v1/nodes/viz` answer carries (the newest first).
    #[arg(long, env = "MUTR_VIZ_MAX_NODES", default_value_t = 5000)]
    pub viz_max_nodes: u32,

    /// Largest `range` accepted by `/api/v1/nodes/viz`.
    #[arg(long, env = "MUTR_VIZ_MAX_RANGE", default_value_t = 100_000.0)]
    pub viz_max_range: f64,

    /// Writes per second that one user may sustain; more get 429.
    #[arg(long, env = "MUTR_WRITE_RATE_PER_SEC", default_value_t = 2)]
    pub write_rate_per_sec: u32,

    /// Writes one user may make in a burst above the sustained rate.
    #[arg(long, env = "MUTR_WRITE_BURST", default_value_t = 10)]
    pub write_burst: u32,

    /// Longest time one HTTP request may take before it is answered with 503.
    #[arg(long, env = "MUTR_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub request_timeout: Duration,

    /// Where the write budget every replica shares lives.
    #[command(flatten)]
    pub write_limit_redis: rate_limit::SharedLimitArgs,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            viz_max_nodes: 5000,
            viz_max_range: 100_000.0,
            write_rate_per_sec: 2,
            write_burst: 10,
            request_timeout: Duration::from_secs(30),
            write_limit_redis: rate_limit::SharedLimitArgs::default(),
        }
    }
}

/// The REST routes, each with the OpenAPI operation of its handler.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(auth::issue_guest))
        .routes(routes!(users::me))
        .routes(routes!(nodes::create))
        .routes(routes!(nodes::viz))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::serve))
        .merge(oauth::router())
}

/// The API's routes with every layer applied, ready to serve.
pub fn app(state: AppState) -> Router {
    let (rest, _) = documented_routes().split_for_parts();
    let api = rest.merge(page::router());
    let realtime = state
        .realtime
        .as_ref()
        .map(crate::realtime::Realtime::router);
    let app = with_layers(api, &state.limits, &state.cors_origins).with_state(state);
    // The push routes answer SockJS's own framing and CORS; they stay outside the envelope layers.
    match realtime {
        Some(push) => security_headers(push).merge(app),
        None => app,
    }
}

/// The policy of every answer that is not the page: an API answer or a script loads nothing and
/// is framed nowhere, whatever a browser makes of it.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// Headers for every answer: no MIME sniffing, no referrer sent on from here, and
/// [`API_CONTENT_SECURITY_POLICY`] unless the route set its own (the page does).
pub fn security_headers<S>(routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// Adds what every API route gets: the envelope for unknown routes, wrong methods, rejections,
/// timeouts and panics; the body limit; request metrics; CORS when configured; the
/// [`security_headers`].
pub fn with_layers<S>(routes: Router<S>, limits: &Limits, cors_origins: &[String]) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("handler panicked");
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            },
        ))
        .layer(middleware::from_fn(envelope_errors))
        .layer(middleware::from_fn(track_metrics));
    let routes = match cors(cors_origins) {
        Some(layer) => routes.layer(layer),
        None => routes,
    };
    security_headers(routes)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts requests by route and status and records their latency.
async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("mutr_http_requests_total", &labels).increment(1);
    metrics::histogram!("mutr_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// CORS for a browser client on another origin; none when no origin is configured.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(crate::auth::GUEST_TOKEN_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(600));
    if origins.contains(&"*") {
        return Some(layer.allow_origin(tower_http::cors::Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = o, "ignoring invalid CORS origin");
                None
            }
        })
        .collect();
    Some(layer.allow_origin(list))
}
