//! MUTR API: HTTP endpoints, STOMP-over-SockJS push and the hand-off to the analysis pipeline.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod node_writer;
pub mod oauth;
pub mod realtime;
pub mod state;
pub mod telemetry;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::http::app;
use crate::{
    auth::cache::GuestCache,
    auth::jwt::{JwtError, JwtKeys},
    config::ServeArgs,
    events::{Broadcaster, NoPipeline, SharedHandoff},
    http::rate_limit::WriteLimiter,
    node_writer::{NodeWriter, Sinks},
    state::{AppState, Readiness},
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database URL is malformed.
    #[error("invalid DATABASE_URL")]
    DatabaseUrl(#[source] sqlx::Error),
    /// The Redis URL is malformed.
    #[error("invalid REDIS_URL")]
    RedisUrl(#[source] redis::RedisError),
    /// The member token key is unusable.
    #[error("invalid member token key")]
    Jwt(#[from] JwtError),
    /// The live push could not start.
    #[error("live push could not start")]
    Realtime(#[from] realtime::RealtimeError),
    /// The sign-in configuration is unusable.
    #[error("invalid sign-in configuration")]
    SignIn(#[from] oauth::ConfigError),
    /// The listener failed.
    #[error("HTTP server failed")]
    Io(#[from] std::io::Error),
}

/// Builds the shared state for `args` over `pool`, handing committed nodes to `handoff`. Starts
/// the node writer, so it must be called on a Tokio runtime.
pub fn build_state(
    args: &ServeArgs,
    pool: PgPool,
    handoff: SharedHandoff,
    broadcaster: Arc<dyn Broadcaster>,
) -> Result<AppState, ServeError> {
    let client = redis::Client::open(args.redis_url.expose()).map_err(ServeError::RedisUrl)?;
    let probe_timeout = Duration::from_secs(2);
    let redis_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(probe_timeout))
        .set_response_timeout(Some(probe_timeout))
        .set_number_of_retries(1);
    let redis = redis::aio::ConnectionManager::new_lazy_with_config(client, redis_config)
        .map_err(ServeError::RedisUrl)?;
    let jwt = JwtKeys::from_args(&args.auth)?.map(Arc::new);
    let sign_in = Arc::new(oauth::SignIn::new(
        &args.oauth,
        args.auth.jwt_secret.as_ref(),
        args.limits.request_timeout,
        pool.clone(),
        redis.clone(),
    )?);
    let node_writer = NodeWriter::start(
        pool.clone(),
        Sinks {
            broadcaster: broadcaster.clone(),
            handoff: handoff.clone(),
        },
        &args.node_writer,
    );
    Ok(AppState {
        db: pool,
        redis,
        jwt,
        limits: Arc::new(args.limits.clone()),
        write_limiter: Arc::new(WriteLimiter::new(
            args.limits.write_rate_per_sec,
            args.limits.write_burst,
        )),
        node_writer,
        guest_cache: GuestCache::new(&args.guest_cache),
        handoff,
        broadcaster,
        realtime: None,
        readiness: Readiness::default(),
        metrics: telemetry::prometheus(),
        cors_origins: args.cors_origins.clone().into(),
        probe_timeout,
        sign_in,
    })
}

/// Serves `args` on `listener` until `shutdown` is cancelled: connects to PostgreSQL (lazily) and
/// Redis, starts the live push, then runs [`serve_state`].
pub async fn serve(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let pool = db::pool(&args.database).map_err(ServeError::DatabaseUrl)?;
    // The push gets its own token: serve_state closes its sessions at the right step of shutdown,
    // and its Redis bridge stops only after the last request.
    let push_stop = CancellationToken::new();
    let push = realtime::Realtime::start(
        args.realtime.clone(),
        Some(args.redis_url.expose().to_owned()),
        push_stop.clone(),
    )
    .await?;
    let state =
        build_state(&args, pool, Arc::new(NoPipeline), Arc::new(push.clone()))?.with_realtime(push);
    let result = serve_state(&args, state, listener, shutdown).await;
    push_stop.cancel();
    result
}

/// Serves prepared `state` on `listener`. On `shutdown`: readiness fails first, the server keeps
/// answering for the shutdown grace so load balancers notice, live sessions are closed, then
/// requests in flight get up to the drain timeout before the server returns.
pub async fn serve_state(
    args: &ServeArgs,
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let readiness = state.readiness.clone();
    let push = state.realtime.clone();
    let shrink = tokio::spawn(shrink_rate_limiter(
        state.write_limiter.clone(),
        shutdown.clone(),
    ));
    let router = app(state);
    let stop_http = CancellationToken::new();
    let grace = args.shutdown_grace;
    let drain = args.drain_timeout;
    let sequence = {
        let stop_http = stop_http.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!(grace = ?grace, "shutdown: readiness now fails");
            readiness.start_draining();
            tokio::time::sleep(grace).await;
            if let Some(push) = push {
                tracing::info!(
                    sessions = push.session_count(),
                    "shutdown: closing live sessions"
                );
                push.close_all();
                if tokio::time::timeout(drain, push.closed()).await.is_err() {
                    tracing::warn!("shutdown: live sessions still open after the drain timeout");
                }
            }
            tracing::info!("shutdown: closing connections");
            stop_http.cancel();
        }
    };
    tokio::spawn(sequence);
    tracing::info!(addr = %listener.local_addr()?, "serving HTTP");
    let server =
        axum::serve(listener, router).with_graceful_shutdown(stop_http.clone().cancelled_owned());
    let result = tokio::select! {
        result = server.into_future() => result,
        () = async { stop_http.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(timeout = ?drain, "shutdown: drain timeout reached with connections open");
            Ok(())
        }
    };
    shrink.abort();
    tracing::info!("shutdown: done");
    Ok(result?)
}

async fn shrink_rate_limiter(limiter: Arc<WriteLimiter>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(WriteLimiter::SHRINK_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => limiter.shrink(),
            () = shutdown.cancelled() => return,
        }
    }
}

impl Broadcaster for realtime::Realtime {
    fn publish(&self, destination: &'static str, body: String) -> BoxFuture<'_, ()> {
        Box::pin(realtime::Realtime::publish(self, destination, body))
    }
}

/// A broadcaster for a process without live push: logs what would have been sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOnlyBroadcaster;

impl Broadcaster for LogOnlyBroadcaster {
    fn publish(&self, destination: &'static str, body: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tracing::debug!(
                destination,
                bytes = body.len(),
                "no live push in this process"
            );
        })
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}
