//! MUTR API: HTTP endpoints, STOMP-over-SockJS push and the hand-off to the analysis pipeline.

#![forbid(unsafe_code)]

pub mod analysis;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod node_writer;
pub mod oauth;
pub mod realtime;
pub mod secret;
pub mod state;
pub mod telemetry;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::http::app;
use crate::{
    analysis::Pipeline,
    auth::cache::GuestCache,
    auth::jwt::{JwtError, JwtKeys},
    config::ServeArgs,
    events::{Broadcaster, SharedBroadcaster},
    http::rate_limit::WriteLimiter,
    node_writer::{NodeWriter, Sinks},
    secret::Secret,
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
    /// The analysis pipeline could not start.
    #[error("analysis pipeline could not start")]
    Analysis(#[from] analysis::StartError),
    /// The listener failed.
    #[error("HTTP server failed")]
    Io(#[from] std::io::Error),
}

/// How long a readiness probe waits for one dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis connection that connects lazily and reconnects by itself, with short timeouts so that
/// an unreachable Redis fails fast (everything that uses it has a fallback).
fn redis_connection(url: &Secret) -> Result<redis::aio::ConnectionManager, ServeError> {
    let client = redis::Client::open(url.expose()).map_err(ServeError::RedisUrl)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(PROBE_TIMEOUT))
        .set_response_timeout(Some(PROBE_TIMEOUT))
        .set_number_of_retries(1);
    redis::aio::ConnectionManager::new_lazy_with_config(client, config)
        .map_err(ServeError::RedisUrl)
}

/// Serves `args` on `listener` until `shutdown` is cancelled: the whole process of `mutr-api
/// serve`, as production runs it and the tests start it. Connects to PostgreSQL and Redis (lazily),
/// starts the live push, the analysis pipeline and the node writer, then serves HTTP. On
/// `shutdown`: readiness fails first, the pipeline drains while the server keeps answering for
/// the shutdown grace, live sessions close, then requests in flight get up to the drain timeout.
pub async fn serve(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let pool = db::pool(&args.database).map_err(ServeError::DatabaseUrl)?;
    let redis = redis_connection(&args.redis_url)?;
    // The push gets its own token: its sessions close at the right step of shutdown, and its Redis
    // bridge stops only after the last request (events published while draining still reach the
    // other replicas).
    let push_stop = CancellationToken::new();
    let push = realtime::Realtime::start(
        args.realtime
            .clone()
            .with_default_origins(&args.cors_origins),
        Some(args.redis_url.expose().to_owned()),
        push_stop.clone(),
    )
    .await?;
    let broadcaster: SharedBroadcaster = Arc::new(push.clone());
    let readiness = Readiness::default();
    let (pipeline, handoff) = Pipeline::start(
        &args.analysis,
        pool.clone(),
        redis.clone(),
        broadcaster.clone(),
        {
            let readiness = readiness.clone();
            move || readiness.mark_started()
        },
    )?;
    let node_writer = NodeWriter::start(
        db::writer_pool(
            &pool,
            u32::try_from(args.node_writer.node_batch_concurrency).unwrap_or(u32::MAX),
            args.database.db_ping_idle_after,
        ),
        Sinks {
            broadcaster,
            handoff: Arc::new(handoff),
        },
        &args.node_writer,
    );
    let jwt = JwtKeys::from_args(&args.auth)?.map(Arc::new);
    let sign_in = Arc::new(oauth::SignIn::new(
        &args.oauth,
        args.auth.jwt_secret.as_ref(),
        args.limits.request_timeout,
        pool.clone(),
        redis.clone(),
    )?);
    let write_limiter = Arc::new(WriteLimiter::shared(
        args.limits.write_rate_per_sec,
        args.limits.write_burst,
        redis.clone(),
        &args.limits.write_limit_redis,
    ));
    let state = AppState::new(state::Shared {
        db: pool,
        redis,
        jwt,
        limits: Arc::new(args.limits.clone()),
        write_limiter,
        node_writer,
        guest_cache: GuestCache::new(&args.guest_cache),
        ai_health: pipeline.ai_health(),
        realtime: Some(push),
        readiness,
        metrics: telemetry::prometheus(),
        cors_origins: args.cors_origins.clone().into(),
        probe_timeout: PROBE_TIMEOUT,
        sign_in,
    });
    let result = serve_state(&args, state, pipeline, listener, shutdown).await;
    push_stop.cancel();
    result
}

/// Serves prepared `state` on `listener`, with the pipeline's drain in the shutdown sequence.
async fn serve_state(
    args: &ServeArgs,
    state: AppState,
    pipeline: Pipeline,
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
    let drained = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            pipeline.drain(drain).await;
        }
    });
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
    // Whatever ended the server, the pipeline drains.
    shutdown.cancel();
    // The pipeline hands back what it still holds before the process exits.
    if let Err(e) = drained.await {
        tracing::error!(error = %e, "analysis drain did not finish");
    }
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
