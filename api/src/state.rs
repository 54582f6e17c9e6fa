//! The state every handler shares: database pool, Redis, keys, limits and the post-commit sinks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::{
    auth::{cache::GuestCache, jwt::JwtKeys},
    config::Limits,
    events::{SharedBroadcaster, SharedHandoff},
    http::rate_limit::WriteLimiter,
    node_writer::NodeWriter,
    realtime::Realtime,
};

/// Whether this process should receive new traffic; flips to draining once on shutdown.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Marks the process as draining: `/readyz` fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
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
    /// Where committed nodes go for analysis.
    pub handoff: SharedHandoff,
    /// Where committed nodes are announced to live clients.
    pub broadcaster: SharedBroadcaster,
    /// Live push (`/ws-mutr`); none in a process that serves HTTP only.
    pub realtime: Option<Realtime>,
    /// Draining or not.
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

impl AppState {
    /// Serves live push from `realtime` too: its routes are merged into the app and its sessions
    /// are closed on shutdown.
    #[must_use]
    pub fn with_realtime(mut self, realtime: Realtime) -> Self {
        self.realtime = Some(realtime);
        self
    }
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
