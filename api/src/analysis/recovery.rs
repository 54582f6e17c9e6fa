//! Recovery (DESIGN.md step 5): nothing committed is ever left behind.
//!
//! - **Sweeper**: every `MUTR_ANALYSIS_SWEEP_INTERVAL`, on a wake-up, and whenever workers free up
//!   after a sweep that found more than it could take, the pod claims ready nodes nobody holds
//!   (`PENDING`, or `PROCESSING` with an expired lease, whose parent ended), oldest first, as many
//!   as it has free workers plus `MUTR_ANALYSIS_PREFETCH` taken ahead (queued, leases renewed). Replicas sweep at once without taking the same node (`FOR UPDATE SKIP
//!   LOCKED`), and with nothing to do a sweep reads only the partial index of unfinished nodes.
//! - **Start-up** (and on becoming the active colour): once the AI server is `SERVING`, the nodes
//!   that wait for an unfinished parent are parked in Redis behind it (so each is dispatched the
//!   moment its parent ends), then the sweeper runs.
//! - **`recover --from-color C`**: returns every claim of colour C to `PENDING` and wakes the
//!   active pods; the operator runs it once C's pods are gone.

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    claims, colors,
    dispatcher::{Dispatcher, Job},
};

/// How many waiting nodes one parking round reads.
const PARK_PAGE: i64 = 2000;

/// Parks every node that waits for an unfinished parent in Redis behind that parent. Returns how
/// many were parked; stops at the first Redis error (the sweeper covers the rest).
pub async fn park_waiting(dispatcher: &Dispatcher) -> Result<u64, sqlx::Error> {
    let mut after = 0;
    let mut parked = 0;
    loop {
        let page = claims::waiting(&dispatcher.pool, after, PARK_PAGE).await?;
        let Some(&(last, _)) = page.last() else {
            break;
        };
        after = last;
        if let Err(e) = dispatcher.coordinator.park_many(&page).await {
            metrics::counter!("mutr_analysis_redis_fallbacks_total", "op" => "park").increment(1);
            tracing::warn!(error = %e, "cannot park waiting nodes in Redis; the sweeper dispatches them");
            break;
        }
        parked += page.len() as u64;
        if (page.len() as i64) < PARK_PAGE {
            break;
        }
    }
    Ok(parked)
}

/// Claims as many ready nodes as there are free workers (and starts them) plus the room left for
/// claims taken ahead (and queues them). Returns how many it claimed, and whether there may be
/// more.
pub async fn sweep(dispatcher: &Arc<Dispatcher>) -> Result<(usize, bool), sqlx::Error> {
    if !dispatcher.may_claim() {
        return Ok((0, false));
    }
    // Worker slots first, so that the nodes claimed first have a worker waiting for them; the
    // rest (up to the prefetch room) wait in the ready queue with their leases renewed.
    let mut slots = Vec::new();
    while let Ok(slot) = dispatcher.workers.clone().try_acquire_owned() {
        slots.push(slot);
    }
    let limit = slots.len() + dispatcher.prefetch_room();
    if limit == 0 {
        return Ok((0, true));
    }
    let started = std::time::Instant::now();
    let found = claims::claim_ready(
        &dispatcher.pool,
        &dispatcher.settings.owner,
        dispatcher.settings.lease,
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
    .await?;
    metrics::histogram!("mutr_analysis_sweep_seconds").record(started.elapsed().as_secs_f64());
    let claimed = found.len();
    let mut found = found.into_iter();
    // Slots first: `zip` takes from its first iterator before it learns the second has ended, and
    // a claim taken from `found` without a slot would be dropped while still held.
    for (slot, claim) in slots.into_iter().zip(found.by_ref()) {
        tokio::spawn(dispatcher.clone().process(
            Job::Claimed {
                claim,
                context: None,
            },
            slot,
        ));
    }
    for claim in found {
        dispatcher.prefetch(claim).await;
    }
    if claimed > 0 {
        metrics::counter!("mutr_analysis_recovered_total").increment(claimed as u64);
        tracing::info!(claimed, "sweeper claimed nodes nobody held");
    }
    Ok((claimed, claimed == limit))
}

/// Refreshes the gauges of nodes by status. The unfinished ones are cheap (their partial index);
/// the ended ones count the whole table, so only every `ended_every`.
async fn refresh_gauges(
    pool: &PgPool,
    last_ended: &mut Option<std::time::Instant>,
    ended_every: Duration,
) {
    if let Ok(u) = claims::unfinished(pool).await {
        metrics::gauge!("mutr_analysis_nodes", "status" => "PENDING").set(u.pending as f64);
        metrics::gauge!("mutr_analysis_nodes", "status" => "PROCESSING").set(u.processing as f64);
        metrics::gauge!("mutr_analysis_queue_depth").set((u.pending + u.processing) as f64);
    }
    if last_ended.is_none_or(|t| t.elapsed() >= ended_every)
        && let Ok((completed, failed)) = claims::ended(pool).await
    {
        metrics::gauge!("mutr_analysis_nodes", "status" => "COMPLETED").set(completed as f64);
        metrics::gauge!("mutr_analysis_nodes", "status" => "FAILED").set(failed as f64);
        *last_ended = Some(std::time::Instant::now());
    }
}

/// The sweeper: waits for the AI server, runs the start-up recovery, then sweeps every
/// `interval`, on wake-ups and while a backlog lasts, until `stop`.
pub async fn sweeper(
    dispatcher: Arc<Dispatcher>,
    interval: Duration,
    stats_every: Duration,
    started: impl Fn() + Send + 'static,
    stop: CancellationToken,
) {
    let mut health = dispatcher.ai_health.clone();
    tokio::select! {
        r = health.wait_for(|h| h.is_serving()) => if r.is_err() { return },
        () = stop.cancelled() => return,
    }
    started();
    let mut claiming = dispatcher.claiming.clone();
    let mut recovered_as_active = false;
    let mut last_ended = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *claiming.borrow_and_update() && !recovered_as_active {
            // Start-up, or this colour just became active: park what waits, then sweep.
            match park_waiting(&dispatcher).await {
                Ok(n) if n > 0 => tracing::info!(
                    parked = n,
                    "recovery: parked nodes behind their unfinished parents"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "recovery: cannot read waiting nodes"),
            }
            recovered_as_active = true;
        }
        match sweep(&dispatcher).await {
            Ok((_, true)) => dispatcher
                .backlog
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; trying again at the next interval"),
        }
        refresh_gauges(&dispatcher.pool, &mut last_ended, stats_every).await;
        tokio::select! {
            _ = tick.tick() => {}
            () = dispatcher.wake.notified() => {}
            // The AI server is back: sweep now rather than at the next tick.
            Ok(()) = health.changed() => {}
            changed = claiming.changed() => {
                if changed.is_err() { return }
                if !*claiming.borrow() { recovered_as_active = false; }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// The summary line of `mutr-api recover`, as the operator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverSummary<'a> {
    /// The colour whose claims were returned.
    pub from_color: &'a str,
    /// How many went back to `PENDING`.
    pub returned_to_pending: u64,
    /// How many are still `PROCESSING` under that colour (0 unless it still claims).
    pub still_processing: u64,
}

/// Why `recover` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The colour name is not a label value.
    #[error("invalid colour {0:?}")]
    InvalidColor(String),
    /// The colour is the active one: its pods still hold these claims.
    #[error("{0} is the active colour: its pods hold these claims (pass --force if they are gone)")]
    Active(String),
    /// PostgreSQL failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// Returns every claim of `color` to `PENDING` and wakes the active pods. Refuses the active
/// colour unless `force`.
pub async fn recover(
    pool: &PgPool,
    color: &str,
    force: bool,
) -> Result<claims::Recovered, RecoverError> {
    if !super::policy::valid_color(color) {
        return Err(RecoverError::InvalidColor(color.chars().take(64).collect()));
    }
    if !force && colors::active(pool).await?.as_deref() == Some(color) {
        return Err(RecoverError::Active(color.to_owned()));
    }
    let recovered = claims::recover_color(pool, color).await?;
    colors::wake(pool).await?;
    Ok(recovered)
}
