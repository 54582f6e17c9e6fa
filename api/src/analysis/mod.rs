//! The analysis pipeline: everything between "node committed" and "analysis stored"
//! (DESIGN.md, "The analysis pipeline", steps 2-7).
//!
//! PostgreSQL is the source of truth; Redis only makes ordering fast. A node's way through:
//!
//! 1. The node writer hands the committed node over ([`crate::events::AnalysisHandoff`]); a node
//!    that is not handed over (queue full, pod gone) stays `PENDING` for the sweeper.
//! 2. [`dispatcher`] orders it after its parent ([`coordinator`]: atomic Lua scripts) and queues it
//!    once ready.
//! 3. A worker claims it ([`claims`]: a conditional `UPDATE` with owner, lease and a fencing token,
//!    which checks again that the parent ended and that this colour may claim), calls the AI server
//!    of its colour ([`ai`]) with retries ([`policy`]), stores the result fenced on its token,
//!    broadcasts the node, and releases the children waiting for it.
//! 4. [`recovery`] picks up what was left behind (expired leases, `PENDING` nodes nobody holds,
//!    claims of a colour that is gone), and [`colors`] decides which colour claims at all.
//!
//! Invariants, checked under faults by the tests (`api/tests/pipeline*.rs`): no node is analysed
//! before its parent ended; every node ends `COMPLETED` or `FAILED`; none is completed twice;
//! after a switchover nothing of the old colour is left `PROCESSING`.

pub mod ai;
pub mod claims;
pub mod colors;
pub mod coordinator;
pub mod dispatcher;
pub mod policy;
pub mod recovery;

use std::{sync::Arc, time::Duration};

use clap::Args;
use serde::Serialize;
use sqlx::PgPool;
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use self::{
    ai::{AiClient, AiHealth},
    claims::Owner,
    coordinator::Coordinator,
    dispatcher::{Dispatcher, Parts, Settings},
    policy::RetryPolicy,
};
use crate::{
    db::DatabaseArgs,
    events::{ChannelHandoff, SharedBroadcaster, handoff_channel},
};

/// Options of the analysis pipeline (flattened into `mutr-api serve`).
#[derive(Debug, Clone, Args)]
pub struct AnalysisArgs {
    /// The AI server of this pod's colour.
    #[arg(long, env = "MUTR_AI_URL", default_value = "http://127.0.0.1:50051")]
    pub ai_url: String,

    /// This pod's colour, recorded as claim owner. Only the active colour claims analysis work.
    #[arg(long, env = "MUTR_COLOR", default_value = "blue", value_parser = parse_color)]
    pub color: String,

    /// This pod's name, recorded as claim owner (default: the host name).
    #[arg(long, env = "MUTR_POD_NAME", default_value_t = default_pod_name())]
    pub pod_name: String,

    /// AI calls in flight from this pod. Size it to the AI server's `--parallel` times its
    /// replicas, divided by the API replicas of the colour. Twice as many claims are worked at
    /// once, so that claiming and storing overlap the calls.
    #[arg(long, env = "MUTR_ANALYSIS_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub analysis_concurrency: u32,

    /// Deadline of one AI call.
    #[arg(long, env = "MUTR_ANALYSIS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub analysis_timeout: Duration,

    /// AI calls per claim before a transient failure (UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// DEADLINE_EXCEEDED) ends it; other failures end it at once.
    #[arg(long, env = "MUTR_ANALYSIS_MAX_TRIES", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub analysis_max_tries: u32,

    /// Wait before the second AI call of a claim; doubles per call, with jitter.
    #[arg(long, env = "MUTR_ANALYSIS_BACKOFF", value_parser = humantime::parse_duration, default_value = "200ms")]
    pub analysis_backoff: Duration,

    /// Longest wait between two AI calls of a claim.
    #[arg(long, env = "MUTR_ANALYSIS_BACKOFF_MAX", value_parser = humantime::parse_duration, default_value = "5s")]
    pub analysis_backoff_max: Duration,

    /// Claims of one node after which it is stored `FAILED` (claims end without a result when the
    /// AI server is down, or the pod that held it died).
    #[arg(long, env = "MUTR_ANALYSIS_MAX_CLAIMS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub analysis_max_claims: u32,

    /// How long a claim lasts without renewal; renewed every third of it while the analysis runs.
    /// A pod that dies leaves its claims to others after this long.
    #[arg(long, env = "MUTR_ANALYSIS_LEASE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub analysis_lease: Duration,

    /// Interval of the sweeper, which claims nodes nobody holds.
    #[arg(long, env = "MUTR_ANALYSIS_SWEEP_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub analysis_sweep_interval: Duration,

    /// Ready nodes a sweep claims ahead of free workers (their leases are renewed while they wait
    /// here), so a recovery hands out its work at once. Other replicas take what is left.
    #[arg(long, env = "MUTR_ANALYSIS_PREFETCH", default_value_t = 256)]
    pub analysis_prefetch: usize,

    /// Committed nodes waiting to be ordered, and ready nodes waiting for a worker; beyond it,
    /// nodes stay `PENDING` for the sweeper.
    #[arg(long, env = "MUTR_ANALYSIS_QUEUE", default_value_t = 10_000)]
    pub analysis_queue: usize,

    /// Prefix of the pipeline's Redis keys (put a hash tag in it on a Redis Cluster).
    #[arg(
        long,
        env = "MUTR_ANALYSIS_REDIS_PREFIX",
        default_value = "mutr:analysis:"
    )]
    pub analysis_redis_prefix: String,

    /// Lifetime of the pipeline's Redis keys; what expires is found again in PostgreSQL.
    #[arg(long, env = "MUTR_ANALYSIS_REDIS_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub analysis_redis_ttl: Duration,

    /// How often the active colour is read again when no notification came.
    #[arg(long, env = "MUTR_COLOR_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub color_poll_interval: Duration,

    /// How often the AI server's health is asked once it is SERVING (faster until it is).
    #[arg(long, env = "MUTR_AI_HEALTH_INTERVAL", value_parser = humantime::parse_duration, default_value = "2s")]
    pub ai_health_interval: Duration,

    /// How often the COMPLETED and FAILED node counts of `/metrics` are refreshed (they count the
    /// whole table).
    #[arg(long, env = "MUTR_ANALYSIS_STATS_INTERVAL", value_parser = humantime::parse_duration, default_value = "60s")]
    pub analysis_stats_interval: Duration,
}

fn parse_color(s: &str) -> Result<String, String> {
    if policy::valid_color(s) {
        Ok(s.to_owned())
    } else {
        Err("a colour is 1-63 lowercase letters, digits and '-', starting with a letter".to_owned())
    }
}

/// The host name, or `mutr-api` when it cannot be read.
fn default_pod_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mutr-api".to_owned())
}

/// Options of `mutr-api recover`.
#[derive(Debug, Clone, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The colour whose claims go back to `PENDING` (its pods must be gone).
    #[arg(long, value_parser = parse_color)]
    pub from_color: String,

    /// Recover even when the colour is the active one (only when its pods are known to be gone).
    #[arg(long)]
    pub force: bool,

    /// Where the summary line is also written, when writable (Kubernetes reads it as the
    /// container's termination message).
    #[arg(
        long,
        env = "MUTR_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    pub termination_log: std::path::PathBuf,
}

/// Options of `mutr-api activate`.
#[derive(Debug, Clone, Args)]
pub struct ActivateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The colour whose pods claim analysis work from now on.
    #[arg(long, value_parser = parse_color)]
    pub color: String,

    /// Where the summary line is also written, when writable.
    #[arg(
        long,
        env = "MUTR_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    pub termination_log: std::path::PathBuf,
}

/// The summary line of `mutr-api activate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivateSummary {
    /// The colour now active.
    pub active_color: String,
    /// The colour active before, if any.
    pub previous_color: Option<String>,
}

/// Writes `line` to the termination log when it can; a missing or read-only path is not an error
/// (outside Kubernetes there is none).
pub fn write_termination_log(path: &std::path::Path, line: &str) {
    if let Err(e) = std::fs::write(path, line) {
        tracing::debug!(path = %path.display(), error = %e, "no termination log written");
    }
}

/// The running pipeline of a `serve` process.
pub struct Pipeline {
    dispatcher: Arc<Dispatcher>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
    ai_health: watch::Receiver<AiHealth>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// The pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The AI server URL is unusable.
    #[error(transparent)]
    AiUrl(#[from] ai::InvalidUrl),
}

impl Pipeline {
    /// Starts the pipeline on the current runtime: the AI health watch, the colour follower, the
    /// intake, the workers, the lease renewal and the sweeper. `started` is called once the AI
    /// server answered `SERVING` for the first time (readiness), just before start-up recovery.
    /// Returns the hand-off the node writer feeds.
    pub fn start(
        args: &AnalysisArgs,
        pool: PgPool,
        redis: redis::aio::ConnectionManager,
        broadcaster: SharedBroadcaster,
        started: impl Fn() + Send + 'static,
    ) -> Result<(Self, ChannelHandoff), StartError> {
        let ai = AiClient::new(&args.ai_url, args.analysis_timeout)?;
        let (health_tx, ai_health) = watch::channel(AiHealth::Unknown);
        let health_tx = Arc::new(health_tx);
        let (claiming_tx, claiming) = watch::channel(true);
        let wake = Arc::new(Notify::new());
        let settings = Settings {
            owner: Owner {
                pod: args.pod_name.clone(),
                color: args.color.clone(),
            },
            concurrency: args.analysis_concurrency as usize,
            lease: args.analysis_lease.max(Duration::from_millis(300)),
            retry: RetryPolicy {
                max_tries: args.analysis_max_tries,
                base: args.analysis_backoff,
                max: args.analysis_backoff_max,
            },
            max_claims: args.analysis_max_claims,
            ordering_concurrency: 16,
            prefetch: args.analysis_prefetch.min(args.analysis_queue),
        };
        let renewals = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(args.analysis_lease / 3)
            .connect_lazy_with((*pool.connect_options()).clone());
        let (dispatcher, jobs) = Dispatcher::new(
            Parts {
                pool: pool.clone(),
                renewals,
                coordinator: Coordinator::new(
                    redis,
                    args.analysis_redis_prefix.clone(),
                    args.analysis_redis_ttl,
                ),
                ai: ai.clone(),
                broadcaster,
                settings,
                claiming,
                ai_health: health_tx.clone(),
                wake: wake.clone(),
            },
            args.analysis_queue,
        );
        let (handoff, events) = handoff_channel(args.analysis_queue);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(ai::watch_health(
            ai,
            args.ai_health_interval,
            health_tx,
            stop.clone(),
        ));
        tasks.spawn(colors::follow(
            pool,
            args.color.clone(),
            args.color_poll_interval,
            claiming_tx,
            wake,
            stop.clone(),
        ));
        tasks.spawn(dispatcher::intake(dispatcher.clone(), events));
        tasks.spawn(dispatcher::run(dispatcher.clone(), jobs));
        tasks.spawn(dispatcher::renew_leases(dispatcher.clone(), stop.clone()));
        tasks.spawn(recovery::sweeper(
            dispatcher.clone(),
            args.analysis_sweep_interval,
            args.analysis_stats_interval,
            started,
            dispatcher.stopping.clone(),
        ));
        tracing::info!(
            color = %args.color,
            pod = %args.pod_name,
            concurrency = args.analysis_concurrency,
            "analysis pipeline started; waiting for the AI server"
        );
        Ok((
            Self {
                dispatcher,
                tasks,
                stop,
                ai_health,
            },
            handoff,
        ))
    }

    /// The AI server's health as last seen.
    pub fn ai_health(&self) -> watch::Receiver<AiHealth> {
        self.ai_health.clone()
    }

    /// Drains (DESIGN.md step 6): stops claiming, lets analyses in flight finish within
    /// `timeout`, hands back what is still held, then stops every task.
    pub async fn drain(mut self, timeout: Duration) {
        tracing::info!(held = self.dispatcher.held_count(), timeout = ?timeout, "analysis: draining");
        self.dispatcher.drain(timeout).await;
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("analysis: drained");
    }
}
