//! The state every handler shares: database pool, Redis, keys, limits, the node writer, readiness.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    analysis::ai::AiHealth,
    auth::{cache::GuestCache, jwt::JwtKeys},
    http::{Limits, rate_limit::WriteLimiter},
    node_writer::NodeWriter,
    realtime::Realtime,
};

/// Whether this process should receive new traffic: not until it has started (the AI server of
/// its colour answered `SERVING` once), and no longer once it drains.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Marks the process as started: `/readyz` passes from now on, until it drains.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// Whether start-up is over.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Marks the process as draining: `/readyz` fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Shared by every handler. Cloning it is one reference count: axum clones the state for every
/// extractor and middleware that takes it, several times per request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of a server serving `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// PostgreSQL.
    pub db: PgPool,
    /// Redis, for readiness (reconnects by itself).
    pub redis: redis::aio::ConnectionManager,
    /// Member token verification; none when no key is configured.
    pub jwt: Option<Arc<JwtKeys>>,
    /// Sizes and rates.
    pub limits: Arc<Limits>,
    /// Per-user write rate.
    pub write_limiter: Arc<WriteLimiter>,
    /// Stores new nodes in groups, then announces and hands them off.
    pub node_writer: NodeWriter,
    /// Guests recently found by token, for writes.
    pub guest_cache: GuestCache,
    /// The AI server's health, as the analysis pipeline last saw it.
    pub ai_health: watch::Receiver<AiHealth>,
    /// Live push (`/ws-mutr`); none in a process that serves HTTP only.
    pub realtime: Option<Realtime>,
    /// Started, draining or neither.
    pub readiness: Readiness,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Origins allowed by CORS (empty: same origin only).
    pub cors_origins: Arc<[String]>,
    /// Member sign-in with Google and Kakao.
    pub sign_in: Arc<crate::oauth::SignIn>,
    /// Longest wait of a readiness probe on one dependency.
    pub probe_timeout: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .field("jwt", &self.jwt)
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}
