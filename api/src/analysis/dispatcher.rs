//! The dispatcher: from a committed node to its stored analysis.
//!
//! - **Intake** reads the hand-off of the node writer and orders each node after its parent
//!   ([`Dispatcher::order_ready`], [`Dispatcher::order_waiting`]): ready at once when the event
//!   carries the parent's topic or the node is a root; parked in Redis when the parent is active
//!   there; else PostgreSQL decides.
//! - **Workers**: at most `MUTR_ANALYSIS_CONCURRENCY` nodes are analysed at once. A worker claims
//!   its node in PostgreSQL (the claim checks the parent again), calls the AI server with retries,
//!   stores the result fenced on its claim, broadcasts it, and releases the children parked on it.
//! - **Renewal** extends the lease of every claim held here, in one statement, every third of the
//!   lease; a claim found lost has its work cancelled.
//! - **Drain** (on shutdown, or when this colour stops being active): no new claims; analyses in
//!   flight finish within the drain timeout, then what is still held goes back to `PENDING`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use mutr_proto::AnalysisRequest;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument as _;

use super::{
    ai::{AiClient, AiHealth},
    claims::{self, Calls, Claim, Held, Owner},
    coordinator::{Coordinator, Hold},
    policy::{self, Exhausted, Fault, RetryPolicy},
};
use crate::{
    db,
    domain::{lineage::LineageContext, node::AnalysisStatus},
    events::{AnalysisRequested, GALAXY_TOPIC, SharedBroadcaster},
};

/// Timings and limits of the workers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Who claims.
    pub owner: Owner,
    /// AI calls in flight at once (`MUTR_ANALYSIS_CONCURRENCY`). Twice as many workers hold
    /// claims, so that while one worker stores a result and releases its children, another has
    /// its claim and lineage ready and takes the freed AI slot at once: the AI server sees
    /// `concurrency` calls whenever there is work, not `concurrency` minus the ones between calls.
    pub concurrency: usize,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// How AI calls are retried.
    pub retry: RetryPolicy,
    /// Claims of one node after which it fails.
    pub max_claims: u32,
    /// Ordering steps (Redis and PostgreSQL look-ups) run at once.
    pub ordering_concurrency: usize,
    /// Ready nodes a sweep claims beyond the free workers (queued here, leases renewed), so that
    /// a recovery hands out work at once instead of one free worker at a time.
    pub prefetch: usize,
}

/// A node to analyse.
#[derive(Debug)]
pub enum Job {
    /// Ready as far as this pod knows; the claim checks again. The context comes with it when it
    /// is known to be current (the event of a node whose parent had a topic already).
    Ready {
        /// The node.
        node_id: i64,
        /// Its lineage window, when current.
        context: Option<LineageContext>,
    },
    /// Already claimed (by a sweep, or ahead of free workers by [`run`]), with the lineage
    /// window when its job carried one.
    Claimed {
        /// The claim.
        claim: Claim,
        /// Its lineage window, when current.
        context: Option<LineageContext>,
    },
}

/// Why a claim's work stopped before its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The lease was lost (expired and taken, or recovered).
    Lost,
    /// The pod drains or stopped being active, past its drain timeout.
    Drain,
}

struct Holding {
    token: i64,
    calls: Calls,
    cancel: CancellationToken,
    stop: Option<Stop>,
}

/// What the dispatcher shares between its tasks.
pub struct Dispatcher {
    pub(super) pool: PgPool,
    /// A connection of its own for lease renewal, so that a busy pool cannot starve it and let
    /// leases expire under work that is still being done.
    renewals: PgPool,
    pub(super) coordinator: Coordinator,
    pub(super) ai: AiClient,
    pub(super) broadcaster: SharedBroadcaster,
    pub(super) settings: Settings,
    /// Claims held here, by node id.
    held: Mutex<HashMap<i64, Holding>>,
    /// Free worker slots: a worker holds one from before its claim to after its result is stored.
    pub(super) workers: Arc<Semaphore>,
    /// How many worker slots there are.
    worker_count: usize,
    /// Free AI call slots: held only for the call itself.
    ai_calls: Semaphore,
    /// Ready nodes waiting for a worker.
    ready: mpsc::Sender<Job>,
    /// Whether this pod's colour may claim.
    pub(super) claiming: watch::Receiver<bool>,
    /// The AI server's health: the watcher's, and this dispatcher's own news of an outage.
    pub(super) ai_health: watch::Receiver<AiHealth>,
    ai_news: Arc<watch::Sender<AiHealth>>,
    /// Makes the sweeper run now.
    pub(super) wake: Arc<Notify>,
    /// Set when the last sweep found more ready work than it could take.
    pub(super) backlog: AtomicBool,
    /// Claims taken ahead by sweeps and queued for a worker.
    prefetched: AtomicUsize,
    /// Cancelled when the pod stops claiming for good (shutdown).
    pub(super) stopping: CancellationToken,
    /// Cancelled when work in flight must stop (drain timeout).
    abort: CancellationToken,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The parts a [`Dispatcher`] is built from.
pub struct Parts {
    /// PostgreSQL.
    pub pool: PgPool,
    /// PostgreSQL for lease renewal only (one connection).
    pub renewals: PgPool,
    /// Redis ordering.
    pub coordinator: Coordinator,
    /// The AI server.
    pub ai: AiClient,
    /// Live clients.
    pub broadcaster: SharedBroadcaster,
    /// Timings and limits.
    pub settings: Settings,
    /// Whether this pod may claim.
    pub claiming: watch::Receiver<bool>,
    /// The AI server's health, which the dispatcher also sets when its calls find the server
    /// down (the watcher sets it back once the server answers).
    pub ai_health: Arc<watch::Sender<AiHealth>>,
    /// Sweeper wake-ups.
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher and the receiving end of its ready queue (of `queue` jobs), for [`run`].
    pub fn new(parts: Parts, queue: usize) -> (Arc<Self>, mpsc::Receiver<Job>) {
        let (ready, jobs) = mpsc::channel(queue.max(1));
        let worker_count = workers_for(parts.settings.concurrency);
        let workers = Arc::new(Semaphore::new(worker_count));
        let ai_calls = Semaphore::new(parts.settings.concurrency.max(1));
        let dispatcher = Arc::new(Self {
            pool: parts.pool,
            renewals: parts.renewals,
            coordinator: parts.coordinator,
            ai: parts.ai,
            broadcaster: parts.broadcaster,
            settings: parts.settings,
            held: Mutex::new(HashMap::new()),
            workers,
            worker_count,
            ai_calls,
            ready,
            claiming: parts.claiming,
            ai_health: parts.ai_health.subscribe(),
            ai_news: parts.ai_health,
            wake: parts.wake,
            backlog: AtomicBool::new(false),
            prefetched: AtomicUsize::new(0),
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
        });
        (dispatcher, jobs)
    }

    /// Whether this pod takes new claims now.
    pub(super) fn may_claim(&self) -> bool {
        *self.claiming.borrow()
            && self.ai_health.borrow().is_serving()
            && !self.stopping.is_cancelled()
    }

    /// Whether `node` is claimed here (queued or being analysed).
    fn holds(&self, node: i64) -> bool {
        self.held.lock().is_ok_and(|h| h.contains_key(&node))
    }

    /// Claims held here now.
    pub fn held_count(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or_default()
    }

    /// Queues a ready node without waiting; a full queue leaves it `PENDING` for the sweeper.
    fn enqueue(&self, job: Job) {
        if let Err(e) = self.ready.try_send(job) {
            metrics::counter!("mutr_analysis_queue_full_total").increment(1);
            tracing::debug!(error = %e, "ready queue full; the sweeper takes the node later");
            self.backlog.store(true, Ordering::Relaxed);
        } else {
            metrics::gauge!("mutr_analysis_ready_queue").increment(1.0);
        }
    }

    /// Orders children that are not [ready at once](ready_at_once) after their parents
    /// (DESIGN.md step 2): one Redis step checks and holds them all, in order; those whose parent
    /// Redis does not know as active are left to PostgreSQL, each on its own.
    pub async fn order_waiting(self: &Arc<Self>, events: Vec<AnalysisRequested>) {
        let pairs: Vec<(i64, i64)> = events
            .iter()
            .filter_map(|e| e.parent_id.map(|parent| (parent, e.node_id)))
            .collect();
        let held = match self.coordinator.hold_many(&pairs).await {
            Ok(held) => Some(held),
            Err(e) => {
                redis_fallback("hold", &e);
                None
            }
        };
        let redis_up = held.is_some();
        let parked = held
            .as_ref()
            .map_or(0, |h| h.iter().filter(|h| **h == Hold::Parked).count());
        if parked > 0 {
            metrics::counter!("mutr_analysis_parked_total").increment(parked as u64);
        }
        let unknown = pairs
            .into_iter()
            .enumerate()
            .filter_map(|(i, (parent, node))| {
                let parked = held.as_ref().is_some_and(|h| h[i] == Hold::Parked);
                (!parked).then(|| self.order_by_database(parent, node, redis_up))
            });
        futures::stream::iter(unknown)
            .buffer_unordered(DATABASE_ORDERS)
            .for_each(|()| async {})
            .await;
    }

    /// Queues nodes that are [ready at once](ready_at_once), in order, after marking them active
    /// in one Redis round trip (their own children must wait for them).
    pub async fn order_ready(&self, events: Vec<AnalysisRequested>) {
        let nodes: Vec<i64> = events.iter().map(|e| e.node_id).collect();
        if let Err(e) = self.coordinator.mark_many(&nodes).await {
            redis_fallback("mark", &e);
        }
        for event in events {
            self.queue(Job::Ready {
                node_id: event.node_id,
                context: event.context,
            });
        }
    }

    /// The parent is not known as active in Redis: PostgreSQL decides. An ended parent makes the
    /// node ready; an unfinished one gets the node parked on it, and is looked at again after the
    /// park, since its own release may have run before.
    async fn order_by_database(self: &Arc<Self>, parent: i64, node: i64, redis_up: bool) {
        match claims::status_of(&self.pool, parent).await {
            Ok(Some(s)) if ended(s) => self.queue(Job::Ready {
                node_id: node,
                context: None,
            }),
            Ok(_) if redis_up => {
                if let Err(e) = self.coordinator.park(parent, node).await {
                    redis_fallback("park", &e);
                    return;
                }
                metrics::counter!("mutr_analysis_parked_total").increment(1);
                if let Ok(Some(s)) = claims::status_of(&self.pool, parent).await
                    && ended(s)
                {
                    self.release(parent).await;
                }
            }
            // Redis is down: the parent's worker finds its PENDING children in PostgreSQL when it
            // ends, and the sweeper covers the rest.
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(node, parent, error = %e, "cannot read the parent; the sweeper takes the node later");
            }
        }
    }

    fn queue(&self, job: Job) {
        self.enqueue(job);
    }

    /// Releases the children waiting for `node` (which ended) and queues them: from Redis, or
    /// from PostgreSQL when Redis cannot answer.
    pub(super) async fn release(&self, node: i64) {
        let children = match self.coordinator.release(node).await {
            Ok(children) => children,
            Err(e) => {
                redis_fallback("release", &e);
                match claims::pending_children(&self.pool, node).await {
                    Ok(children) => children,
                    Err(e) => {
                        tracing::warn!(node, error = %e, "cannot find the children of an ended node; the sweeper takes them later");
                        Vec::new()
                    }
                }
            }
        };
        if !children.is_empty() {
            metrics::counter!("mutr_analysis_released_total").increment(children.len() as u64);
        }
        for child in children {
            self.enqueue(Job::Ready {
                node_id: child,
                context: None,
            });
        }
    }

    /// Analyses one job on a worker slot.
    pub(super) async fn process(self: Arc<Self>, job: Job, _slot: OwnedSemaphorePermit) {
        let (claim, context) = match job {
            Job::Claimed { claim, context } => (claim, context),
            Job::Ready { node_id, context } => {
                // The AI server may have gone down, or the colour become inactive, while the job
                // waited for its slot: a claim now would only be handed back.
                if !self.may_claim() {
                    return;
                }
                // A sweep claimed it while this job waited in the queue (the sweep takes the
                // oldest unclaimed nodes, and queued ones are unclaimed): its claim is queued or
                // being analysed here already, so a claim now would only fail.
                if self.holds(node_id) {
                    return;
                }
                match claims::claim_one(
                    &self.pool,
                    node_id,
                    &self.settings.owner,
                    self.settings.lease,
                )
                .await
                {
                    Ok(Some(claim)) if self.stopping.is_cancelled() => {
                        // Drain began while the claim was being taken.
                        return self
                            .give_back(&[claim.held(Calls::default())], "drained")
                            .await;
                    }
                    Ok(Some(claim)) => return self.analyse(claim, context).await,
                    Ok(None) => return self.not_claimed(node_id).await,
                    Err(e) => {
                        tracing::warn!(node_id, error = %e, "claim failed; the sweeper takes the node later");
                        return;
                    }
                }
            }
        };
        self.analyse(claim, context).await;
    }

    /// A ready node whose claim found it taken by another worker, not ready, or already ended.
    /// In the last case it may still be marked active (its event came late): it is released.
    async fn not_claimed(&self, node_id: i64) {
        metrics::counter!("mutr_analysis_claim_conflicts_total").increment(1);
        if let Ok(Some(s)) = claims::status_of(&self.pool, node_id).await
            && ended(s)
        {
            self.release(node_id).await;
        }
    }

    /// Claims a ready job taken from the queue together with the ready jobs queued behind it, in
    /// one statement, and puts the claims at the back of `ahead` (in queue order, held and
    /// renewed like a sweep's claims taken ahead, and counted with them): a backlog costs one
    /// claiming statement per [`CLAIM_BATCH`] nodes instead of one per node. A job alone in the
    /// queue, or with no room left for claims taken ahead, is returned for its worker to claim as
    /// before. Claims met in the queue on the way join `ahead`.
    async fn claim_queued(
        self: &Arc<Self>,
        first: Job,
        jobs: &mut mpsc::Receiver<Job>,
        ahead: &mut VecDeque<Job>,
    ) -> Option<Job> {
        let room = self.prefetch_room().min(CLAIM_BATCH);
        if room < 2 || matches!(first, Job::Claimed { .. }) {
            return Some(first);
        }
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                // A sweep claimed it while it waited: see `process`.
                Job::Ready { node_id, .. } if self.holds(node_id) => {}
                Job::Ready { node_id, context } => batch.push((node_id, context)),
                claimed @ Job::Claimed { .. } => self.push_ahead(ahead, claimed),
            }
            next = None;
            if batch.len() < room
                && let Ok(job) = jobs.try_recv()
            {
                self.dequeued(&job);
                next = Some(job);
            }
        }
        if batch.len() < 2 {
            return batch
                .pop()
                .map(|(node_id, context)| Job::Ready { node_id, context });
        }
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        let claimed =
            claims::claim_listed(&self.pool, &ids, &self.settings.owner, self.settings.lease).await;
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(nodes = ids.len(), error = %e, "claim failed; the sweeper takes the nodes later");
                return None;
            }
        };
        metrics::counter!("mutr_analysis_claimed_ahead_total").increment(claimed.len() as u64);
        // The first job of a node queued twice keeps its context.
        let mut contexts: HashMap<i64, Option<LineageContext>> = batch.into_iter().rev().collect();
        if self.stopping.is_cancelled() {
            // Drain began while the claims were being taken.
            let held: Vec<Held> = claimed.iter().map(|c| c.held(Calls::default())).collect();
            self.give_back(&held, "drained").await;
            return None;
        }
        for claim in claimed {
            self.hold(&claim);
            let context = contexts.remove(&claim.node_id).flatten();
            self.push_ahead(ahead, Job::Claimed { claim, context });
        }
        if !contexts.is_empty() {
            let dispatcher = self.clone();
            tokio::spawn(async move {
                for node_id in contexts.into_keys() {
                    dispatcher.not_claimed(node_id).await;
                }
            });
        }
        None
    }

    /// Puts a claim taken ahead of a free worker at the back of `ahead`.
    fn push_ahead(&self, ahead: &mut VecDeque<Job>, job: Job) {
        ahead.push_back(job);
        self.prefetched.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the oldest claim taken ahead, if any.
    fn pop_ahead(&self, ahead: &mut VecDeque<Job>) -> Option<Job> {
        let job = ahead.pop_front()?;
        self.prefetched.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }

    async fn analyse(self: Arc<Self>, claim: Claim, context: Option<LineageContext>) {
        let span = tracing::info_span!("analysis", node_id = claim.node_id, token = claim.token);
        self.analyse_in_span(claim, context).instrument(span).await;
    }

    async fn analyse_in_span(self: Arc<Self>, claim: Claim, context: Option<LineageContext>) {
        let node_id = claim.node_id;
        let cancel = self.hold(&claim);
        metrics::counter!("mutr_analysis_started_total").increment(1);
        metrics::gauge!("mutr_analysis_in_flight").increment(1.0);
        let started = Instant::now();
        let outcome = self.run_claim(&claim, context, &cancel).await;
        metrics::gauge!("mutr_analysis_in_flight").decrement(1.0);
        let (calls, stop) = self.unhold(node_id);
        let stored = match outcome {
            Outcome::Analysed(analysis) => {
                let (claim, analysis) = (&claim, &analysis);
                self.store(claim, |db| async move {
                    claims::complete(&db, claim, analysis, calls).await
                })
                .await
            }
            Outcome::Failed(reason) => {
                let (claim, reason) = (&claim, reason.as_str());
                self.store(claim, |db| async move {
                    claims::fail(&db, claim, reason, calls).await
                })
                .await
            }
            Outcome::GiveBack(reason) => {
                self.give_back(&[claim.held(calls)], &reason).await;
                return;
            }
            Outcome::Stopped => {
                match stop {
                    Some(Stop::Lost) | None => {
                        metrics::counter!("mutr_analysis_lost_total").increment(1);
                        let _ = claims::close_lost(
                            &self.pool,
                            claim.token,
                            calls,
                            "claim lost while analysing",
                        )
                        .await;
                    }
                    Some(Stop::Drain) => {
                        self.give_back(&[claim.held(calls)], "drained").await;
                    }
                }
                return;
            }
        };
        let Some(node) = stored else {
            return;
        };
        let status = node.analysis_status;
        match status {
            AnalysisStatus::Completed => {
                metrics::counter!("mutr_analysis_completed_total").increment(1);
                let age = (chrono::Utc::now() - node.created_at).num_milliseconds() as f64 / 1000.0;
                metrics::histogram!("mutr_analysis_create_to_analysed_seconds")
                    .record(age.max(0.0));
            }
            _ => metrics::counter!("mutr_analysis_failed_total").increment(1),
        }
        metrics::histogram!("mutr_analysis_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(node_id, status = ?status, topic = node.topic.as_deref().unwrap_or(""), "analysis stored");
        match serde_json::to_string(&node) {
            Ok(json) => self.broadcaster.publish(GALAXY_TOPIC, json).await,
            Err(e) => tracing::error!(node_id, error = %e, "node not serialisable for broadcast"),
        }
        self.release(node_id).await;
        // The last sweep left ready work behind: sweep again once the queue of claims taken ahead
        // runs low.
        if self.prefetched.load(Ordering::Relaxed) <= self.settings.prefetch / 2
            && self.backlog.swap(false, Ordering::Relaxed)
        {
            self.wake.notify_one();
        }
    }

    /// Stores the end of a claim, retrying while PostgreSQL is unreachable (an unknown outcome is
    /// safe to retry: the write is fenced, and a retry that finds its own earlier write takes it).
    async fn store<F, Fut>(&self, claim: &Claim, write: F) -> Option<crate::domain::node::Node>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<Option<crate::domain::node::Node>, sqlx::Error>>,
    {
        let mut wait = Duration::from_millis(100);
        let deadline = Instant::now() + self.settings.lease * 2;
        let mut retried = false;
        loop {
            match write(self.pool.clone()).await {
                Ok(Some(node)) => return Some(node),
                Ok(None) if retried => {
                    // An earlier try may have committed before its answer was lost.
                    return match db::nodes::find(&self.pool, claim.node_id).await {
                        Ok(Some(node))
                            if ended(node.analysis_status) && self.ended_under(claim).await =>
                        {
                            Some(node)
                        }
                        _ => None,
                    };
                }
                Ok(None) => {
                    metrics::counter!("mutr_analysis_lost_total").increment(1);
                    tracing::warn!(
                        node_id = claim.node_id,
                        "claim lost before the result was stored"
                    );
                    return None;
                }
                Err(e) if Instant::now() < deadline && !self.abort.is_cancelled() => {
                    tracing::warn!(node_id = claim.node_id, error = %e, "storing the analysis failed; retrying");
                    retried = true;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.abort.cancelled() => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(node_id = claim.node_id, error = %e, "storing the analysis failed; the lease will expire and another worker takes the node");
                    return None;
                }
            }
        }
    }

    async fn ended_under(&self, claim: &Claim) -> bool {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND claim_token = $2
                   AND analysis_status IN ('COMPLETED', 'FAILED')) AS "e!""#,
            claim.node_id,
            claim.token
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or(false)
    }

    /// Runs the AI calls of a claim until it has a result, a refusal, or must stop.
    async fn run_claim(
        &self,
        claim: &Claim,
        context: Option<LineageContext>,
        cancel: &CancellationToken,
    ) -> Outcome {
        if cancel.is_cancelled() {
            // Lost while it waited in the queue.
            return Outcome::Stopped;
        }
        let max_claims = self.settings.max_claims;
        if u32::try_from(claim.claims).unwrap_or(u32::MAX) > max_claims {
            return Outcome::Failed(format!(
                "gave up after {max_claims} claims (the last ones ended without a result)"
            ));
        }
        let context = match context {
            Some(c) => c,
            None => match db::nodes::lineage(&self.pool, &claim.content, claim.parent_id).await {
                Ok(c) => c,
                Err(e) => {
                    return Outcome::GiveBack(format!("cannot read the lineage: {e}"));
                }
            },
        };
        let request = AnalysisRequest {
            content: claim.content.clone(),
            parent_topic: claim.parent_topic().to_owned(),
            baseline_topic: context.baseline_topic,
            full_context: context.full_context,
        };
        let mut delays = self.settings.retry.delays();
        let status = loop {
            // An AI slot for the call only: not while claiming, storing or backing off.
            let slot = tokio::select! {
                slot = self.ai_calls.acquire() => slot,
                () = cancel.cancelled() => return Outcome::Stopped,
            };
            let Ok(ai_slot) = slot else {
                return Outcome::Stopped;
            };
            let call = self.ai.analyze(request.clone());
            let sent = Instant::now();
            let answer = tokio::select! {
                answer = call => answer,
                () = cancel.cancelled() => return Outcome::Stopped,
            };
            drop(ai_slot);
            let took = sent.elapsed();
            self.record_call(claim.node_id, took);
            metrics::histogram!("mutr_analysis_ai_call_seconds").record(took.as_secs_f64());
            let status = match answer {
                Ok(a) => {
                    return match policy::accept(
                        claim.parent_id.is_none(),
                        &a.topic,
                        &a.emotion,
                        a.confidence,
                        a.mutation_score,
                    ) {
                        Ok(analysis) => Outcome::Analysed(analysis),
                        Err(bad) => Outcome::Failed(bad.to_string()),
                    };
                }
                Err(status) if policy::classify(status.code()) == Fault::Permanent => {
                    tracing::warn!(node_id = claim.node_id, code = ?status.code(), message = status.message(), "the AI server refused the node");
                    return Outcome::Failed(reason(&status));
                }
                Err(status) => status,
            };
            metrics::counter!("mutr_analysis_retries_total", "code" => code_name(status.code()))
                .increment(1);
            tracing::debug!(node_id = claim.node_id, code = ?status.code(), "transient AI failure");
            let Some(wait) = delays.next() else {
                break status;
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Outcome::Stopped,
            }
        };
        let why = format!(
            "{} after {} tries",
            reason(&status),
            self.settings.retry.max_tries
        );
        // Ask the server now rather than trust the last health check, which may predate the
        // outage that made these calls fail.
        let health = self.ai.health(Duration::from_secs(1)).await;
        if !health.is_serving() {
            // Stop claiming now, not at the watcher's next look.
            self.ai_news.send_replace(health);
        }
        match policy::when_exhausted(claim.claims, max_claims) {
            Exhausted::Fail => Outcome::Failed(why),
            Exhausted::GiveBack => Outcome::GiveBack(why),
        }
    }

    /// Registers a claim for renewal and drain; a claim already registered (taken ahead by a
    /// sweep) keeps its entry, so a loss noticed while it was queued is not forgotten.
    fn hold(&self, claim: &Claim) -> CancellationToken {
        let Ok(mut held) = self.held.lock() else {
            return self.abort.child_token();
        };
        let entry = held.entry(claim.node_id).or_insert_with(|| Holding {
            token: claim.token,
            calls: Calls::default(),
            cancel: self.abort.child_token(),
            stop: None,
        });
        if entry.token != claim.token {
            *entry = Holding {
                token: claim.token,
                calls: Calls::default(),
                cancel: self.abort.child_token(),
                stop: None,
            };
        }
        entry.cancel.clone()
    }

    /// Claims free room for ahead of the workers now.
    pub(super) fn prefetch_room(&self) -> usize {
        self.settings
            .prefetch
            .saturating_sub(self.prefetched.load(Ordering::Relaxed))
    }

    /// Queues a claim taken ahead of a free worker; its lease is renewed while it waits.
    pub(super) async fn prefetch(&self, claim: Claim) {
        tracing::debug!(
            node_id = claim.node_id,
            token = claim.token,
            "claim taken ahead"
        );
        self.hold(&claim);
        let held = Held {
            node_id: claim.node_id,
            token: claim.token,
            calls: Calls::default(),
        };
        self.prefetched.fetch_add(1, Ordering::Relaxed);
        let job = Job::Claimed {
            claim,
            context: None,
        };
        if self.ready.try_send(job).is_err() {
            self.prefetched.fetch_sub(1, Ordering::Relaxed);
            self.unhold(held.node_id);
            self.give_back(&[held], "ready queue full").await;
        } else {
            metrics::gauge!("mutr_analysis_ready_queue").increment(1.0);
        }
    }

    /// A queued job leaves the queue: a claim taken ahead is no longer waiting.
    fn dequeued(&self, job: &Job) {
        metrics::gauge!("mutr_analysis_ready_queue").decrement(1.0);
        if matches!(job, Job::Claimed { .. }) {
            self.prefetched.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hands back a queued claim this pod will not analyse.
    async fn drop_claimed(&self, job: Job, reason: &str) {
        if let Job::Claimed { claim: c, .. } = job {
            let (calls, _) = self.unhold(c.node_id);
            let held = Held {
                node_id: c.node_id,
                token: c.token,
                calls,
            };
            self.give_back(&[held], reason).await;
        }
    }

    fn record_call(&self, node: i64, took: Duration) {
        if let Ok(mut held) = self.held.lock()
            && let Some(h) = held.get_mut(&node)
        {
            h.calls.tries += 1;
            h.calls.ai_ms += took.as_secs_f64() * 1000.0;
        }
    }

    fn unhold(&self, node: i64) -> (Calls, Option<Stop>) {
        let removed = self.held.lock().ok().and_then(|mut h| h.remove(&node));
        let stop = if self.abort.is_cancelled() {
            Some(Stop::Drain)
        } else {
            removed.as_ref().and_then(|h| h.stop)
        };
        (removed.map_or_else(Calls::default, |h| h.calls), stop)
    }

    /// Hands claims back to `PENDING` and wakes the pods that may claim.
    pub(super) async fn give_back(&self, held: &[Held], reason: &str) {
        match claims::give_back(&self.pool, held, reason).await {
            Ok(n) => {
                if n > 0 {
                    metrics::counter!("mutr_analysis_returned_total").increment(n);
                    tracing::info!(returned = n, reason, "claims handed back to PENDING");
                    let _ = super::colors::wake(&self.pool).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, reason, "cannot hand claims back; their leases will expire")
            }
        }
    }

    /// Extends every lease held here; cancels the work of claims found lost.
    pub(super) async fn renew(&self) {
        let held: Vec<(i64, i64)> = match self.held.lock() {
            Ok(h) => h.iter().map(|(id, h)| (*id, h.token)).collect(),
            Err(_) => return,
        };
        if held.is_empty() {
            return;
        }
        match claims::renew(&self.renewals, &held, self.settings.lease).await {
            Ok(kept) => {
                tracing::debug!(held = held.len(), kept = kept.len(), "leases renewed");
                if kept.len() == held.len() {
                    return;
                }
                let kept: std::collections::HashSet<i64> = kept.into_iter().collect();
                if let Ok(mut h) = self.held.lock() {
                    let now: Vec<(i64, i64)> = h
                        .iter()
                        .filter(|(_, holding)| holding.stop.is_none())
                        .map(|(id, holding)| (*id, holding.token))
                        .collect();
                    for id in lost_in_renewal(&held, &kept, &now) {
                        if let Some(holding) = h.get_mut(&id) {
                            tracing::warn!(node_id = id, "claim lost; stopping its analysis");
                            holding.stop = Some(Stop::Lost);
                            holding.cancel.cancel();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, held = held.len(), "cannot renew leases"),
        }
    }

    /// Stops taking claims, lets analyses in flight finish within `timeout`, then stops them and
    /// hands back whatever is still held. Every analysis holds a worker slot from before its claim
    /// to after its result is stored, so all slots free means nothing is in flight.
    pub async fn drain(&self, timeout: Duration) {
        self.stopping.cancel();
        let all = u32::try_from(self.worker_count).unwrap_or(u32::MAX);
        let idle = tokio::time::timeout(timeout, self.workers.acquire_many(all)).await;
        if idle.is_err() {
            tracing::warn!(
                held = self.held_count(),
                "drain timeout reached; handing the rest back"
            );
            self.abort.cancel();
            // Their workers hand them back themselves; give them a moment.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.workers.acquire_many(all)).await;
        }
        let rest: Vec<Held> = match self.held.lock() {
            Ok(mut h) => h
                .drain()
                .map(|(id, h)| Held {
                    node_id: id,
                    token: h.token,
                    calls: h.calls,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        self.give_back(&rest, "drained").await;
    }
}

/// The claims a lease renewal found lost: those it `asked` about (node, token) that PostgreSQL did
/// not `kept`, and that are still held `now` under the same token and not already stopping. A
/// claim taken while the renewal ran was not in the question, so its absence from the answer says
/// nothing (treating it as lost once left it `PROCESSING` until its lease ran out); a node claimed
/// again under a new token meanwhile is a new claim, not the one asked about.
fn lost_in_renewal(
    asked: &[(i64, i64)],
    kept: &std::collections::HashSet<i64>,
    now: &[(i64, i64)],
) -> Vec<i64> {
    let now: HashMap<i64, i64> = now.iter().copied().collect();
    asked
        .iter()
        .filter(|(id, token)| !kept.contains(id) && now.get(id) == Some(token))
        .map(|(id, _)| *id)
        .collect()
}

/// Most queued ready jobs [`run`] claims in one statement.
const CLAIM_BATCH: usize = 64;

/// Worker slots for `concurrency` AI calls in flight: two per call (one calling, one claiming
/// or storing around it).
fn workers_for(concurrency: usize) -> usize {
    concurrency.max(1).saturating_mul(2)
}

enum Outcome {
    Analysed(claims::Analysis),
    Failed(String),
    GiveBack(String),
    Stopped,
}

fn ended(status: AnalysisStatus) -> bool {
    matches!(status, AnalysisStatus::Completed | AnalysisStatus::Failed)
}

/// The reason stored for a failed call: the code and the server's message, never longer than a
/// line of a screen.
fn reason(status: &Status) -> String {
    let message: String = status.message().chars().take(300).collect();
    format!("AI server: {} ({message})", code_name(status.code()))
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn redis_fallback(op: &'static str, error: &redis::RedisError) {
    metrics::counter!("mutr_analysis_redis_fallbacks_total", "op" => op).increment(1);
    tracing::debug!(op, error = %error, "Redis unavailable for ordering; falling back to PostgreSQL");
}

/// Takes ready jobs onto worker slots until `stop`, while this pod may claim; jobs that arrive
/// while it may not are dropped (the node stays `PENDING` for the pods that may).
pub async fn run(dispatcher: Arc<Dispatcher>, mut jobs: mpsc::Receiver<Job>) {
    let mut claiming = dispatcher.claiming.clone();
    let mut health = dispatcher.ai_health.clone();
    // Claims taken ahead of free workers (`Dispatcher::claim_queued`), served before the queue.
    // Their claims are held: renewed while they wait here, and handed back by the drain when
    // this loop ends with some left.
    let mut ahead = VecDeque::new();
    loop {
        // Wait until claims may be taken.
        while !dispatcher.may_claim() {
            if dispatcher.stopping.is_cancelled() {
                return;
            }
            // While another colour is active, drop what waits: the pods that may claim find it in
            // PostgreSQL. While the AI server is down, keep it for when it is back.
            let mut dropped = 0u64;
            while !*dispatcher.claiming.borrow()
                && let Some(job) = dispatcher.pop_ahead(&mut ahead)
            {
                dispatcher.drop_claimed(job, "not claiming").await;
                dropped += 1;
            }
            while !*dispatcher.claiming.borrow()
                && let Ok(job) = jobs.try_recv()
            {
                dispatcher.dequeued(&job);
                dispatcher.drop_claimed(job, "not claiming").await;
                dropped += 1;
            }
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    "not claiming: queued nodes left to the pods that claim"
                );
                let _ = super::colors::wake(&dispatcher.pool).await;
            }
            tokio::select! {
                _ = claiming.changed() => {}
                _ = health.changed() => {}
                () = dispatcher.stopping.cancelled() => return,
            }
        }
        // The job first, then a worker slot: an idle loop holds no slot, so the sweeper sees
        // every free worker.
        let job = if let Some(job) = dispatcher.pop_ahead(&mut ahead) {
            job
        } else {
            let job = tokio::select! {
                job = jobs.recv() => match job { Some(j) => j, None => return },
                () = dispatcher.stopping.cancelled() => return,
                _ = claiming.changed() => continue,
                _ = health.changed() => continue,
            };
            dispatcher.dequeued(&job);
            match dispatcher.claim_queued(job, &mut jobs, &mut ahead).await {
                Some(job) => job,
                None => continue,
            }
        };
        let slot = tokio::select! {
            slot = dispatcher.workers.clone().acquire_owned() => slot.ok(),
            () = dispatcher.stopping.cancelled() => None,
        };
        let Some(slot) = slot.filter(|_| dispatcher.may_claim()) else {
            dispatcher.drop_claimed(job, "not claiming").await;
            continue;
        };
        tokio::spawn(dispatcher.clone().process(job, slot));
    }
}

/// Whether a new node may be analysed without waiting: a root, or a child whose parent was
/// `COMPLETED` when the node was stored (the event's parent-topic hint), so that every ancestor had
/// ended and the lineage window's baseline topic is current.
fn ready_at_once(event: &AnalysisRequested) -> bool {
    event.parent_id.is_none() || event.parent_topic_hint.is_some()
}

/// Most hand-off events the intake takes in one go (what queued while it was busy).
const ORDER_BATCH: usize = 64;

/// Children of one batch whose parent PostgreSQL must judge (Redis did not know it), looked at at
/// once.
const DATABASE_ORDERS: usize = 8;

/// Reads the node writer's hand-off until it closes or `stop`, ordering each node. Of the events
/// that queued up, the nodes ready at once are one step (one Redis round trip marks them all) and
/// the others another (one Redis script checks and holds them all).
pub async fn intake(dispatcher: Arc<Dispatcher>, mut events: mpsc::Receiver<AnalysisRequested>) {
    let steps = Arc::new(Semaphore::new(
        dispatcher.settings.ordering_concurrency.max(1),
    ));
    loop {
        let first = tokio::select! {
            event = events.recv() => match event { Some(e) => e, None => return },
            () = dispatcher.stopping.cancelled() => return,
        };
        let mut batch = vec![first];
        while batch.len() < ORDER_BATCH
            && let Ok(event) = events.try_recv()
        {
            batch.push(event);
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = batch.into_iter().partition(ready_at_once);
        if !ready.is_empty() {
            let d = dispatcher.clone();
            if !spawn_step(&steps, async move { d.order_ready(ready).await }).await {
                return;
            }
        }
        if !waiting.is_empty() {
            let d = dispatcher.clone();
            if !spawn_step(&steps, async move { d.order_waiting(waiting).await }).await {
                return;
            }
        }
    }
}

/// Runs `work` as a task once one of `steps` is free, holding it until done; false when the
/// semaphore is closed.
async fn spawn_step(
    steps: &Arc<Semaphore>,
    work: impl Future<Output = ()> + Send + 'static,
) -> bool {
    let Ok(step) = steps.clone().acquire_owned().await else {
        return false;
    };
    tokio::spawn(async move {
        work.await;
        drop(step);
    });
    true
}

/// Renews the leases held here every third of the lease until `stop`.
pub async fn renew_leases(dispatcher: Arc<Dispatcher>, stop: CancellationToken) {
    let every = (dispatcher.settings.lease / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => dispatcher.renew().await,
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{lost_in_renewal, workers_for};

    #[test]
    fn a_renewal_judges_only_the_claims_it_asked_about() {
        // Asked about nodes 1 and 2 (tokens 10, 20); PostgreSQL kept 1. Meanwhile node 3 was
        // claimed (token 30) and node 2 is still held under token 20.
        let asked = [(1, 10), (2, 20)];
        let kept: HashSet<i64> = [1].into();
        let now = [(1, 10), (2, 20), (3, 30)];
        assert_eq!(lost_in_renewal(&asked, &kept, &now), vec![2]);
    }

    #[test]
    fn a_claim_taken_while_the_renewal_ran_is_not_lost() {
        // The bug the pipeline bench found: the snapshot was taken, a sweep claimed node 3, and
        // the renewal's answer (which cannot mention node 3) made it look lost.
        let asked = [(1, 10)];
        let kept: HashSet<i64> = [1].into();
        let now = [(1, 10), (3, 30)];
        assert!(lost_in_renewal(&asked, &kept, &now).is_empty());
    }

    #[test]
    fn a_node_claimed_again_under_a_new_token_is_a_new_claim() {
        // Node 2's claim (token 20) ended and the node was claimed again (token 21) while the
        // renewal ran: the renewal's verdict on token 20 does not touch token 21.
        let asked = [(2, 20)];
        let kept = HashSet::new();
        assert!(lost_in_renewal(&asked, &kept, &[(2, 21)]).is_empty());
        // And a claim that ended meanwhile is not held any more: nothing to stop.
        assert!(lost_in_renewal(&asked, &kept, &[]).is_empty());
    }

    #[test]
    fn workers_overlap_the_ai_calls() {
        assert_eq!(workers_for(0), 2);
        assert_eq!(workers_for(4), 8);
    }
}
