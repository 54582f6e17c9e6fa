//! Which colour claims analysis work. The record is one row in PostgreSQL
//! (`analysis_active_color`), written by `mutr-api activate --color C` and announced with
//! `NOTIFY`; every pod follows it through `LISTEN`, and polls as a fallback, so a pod learns of a
//! change within the poll interval even when a notification is lost. With no record, every pod
//! claims.
//!
//! The same listening connection carries wake-ups (`recover` returned work, a pod gave work back):
//! they make this pod sweep at once instead of at its next interval.

use std::{sync::Arc, time::Duration};

use sqlx::{PgExecutor, PgPool, postgres::PgListener};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// The channel `activate` notifies.
pub const ACTIVE_COLOR_CHANNEL: &str = "mutr_active_color";
/// The channel that makes the active pods sweep now.
pub const WAKE_CHANNEL: &str = "mutr_analysis_wake";

/// Whether a pod of `mine` may claim work while `active` is recorded.
pub fn may_claim(active: Option<&str>, mine: &str) -> bool {
    active.is_none_or(|a| a == mine)
}

/// The recorded active colour; none when no colour was ever activated.
pub async fn active(db: impl PgExecutor<'_>) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT color FROM analysis_active_color")
        .fetch_optional(db)
        .await
}

/// Records `color` as the active colour and notifies every pod, in one transaction; the colour
/// recorded before, if any.
pub async fn activate(db: &PgPool, color: &str) -> Result<Option<String>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let previous = sqlx::query_scalar!("SELECT color FROM analysis_active_color FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO analysis_active_color (singleton, color, updated_at) VALUES (TRUE, $1, now())
         ON CONFLICT (singleton) DO UPDATE SET color = EXCLUDED.color, updated_at = now()",
        color
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", ACTIVE_COLOR_CHANNEL, color)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(previous)
}

/// Wakes the active pods: they sweep for work at once.
pub async fn wake(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '')", WAKE_CHANNEL)
        .execute(db)
        .await?;
    Ok(())
}

/// Follows the active-colour record until `stop`: publishes on `claiming` whether this pod (of
/// `color`) may claim, and notifies `wake` on every wake-up, on becoming active, and after the
/// listening connection was lost (a wake-up may have been missed).
pub async fn follow(
    pool: PgPool,
    color: String,
    poll: Duration,
    claiming: watch::Sender<bool>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut listener: Option<PgListener> = None;
    let mut every = tokio::time::interval(poll);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if listener.is_none() {
            listener = listen(&pool).await;
            if listener.is_some() {
                // Whatever was announced while nobody listened.
                refresh(&pool, &color, &claiming, &wake).await;
                wake.notify_one();
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => refresh(&pool, &color, &claiming, &wake).await,
            received = next(&mut listener) => match received {
                Some(channel) if channel == WAKE_CHANNEL => wake.notify_one(),
                Some(_) => refresh(&pool, &color, &claiming, &wake).await,
                None => {
                    tracing::warn!("lost the LISTEN connection; polling until it is back");
                    listener = None;
                }
            },
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "cannot LISTEN yet");
            return None;
        }
    };
    match listener
        .listen_all([ACTIVE_COLOR_CHANNEL, WAKE_CHANNEL])
        .await
    {
        Ok(()) => Some(listener),
        Err(e) => {
            tracing::debug!(error = %e, "cannot LISTEN yet");
            None
        }
    }
}

/// The channel of the next notification; none when the connection was lost (or there is none,
/// in which case this waits for ever and the poll does the work).
async fn next(listener: &mut Option<PgListener>) -> Option<String> {
    match listener {
        Some(l) => match l.try_recv().await {
            Ok(Some(n)) => Some(n.channel().to_owned()),
            Ok(None) | Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn refresh(pool: &PgPool, color: &str, claiming: &watch::Sender<bool>, wake: &Notify) {
    match active(pool).await {
        Ok(active) => {
            let now = may_claim(active.as_deref(), color);
            let before = claiming.send_replace(now);
            if before != now {
                tracing::info!(
                    active = active.as_deref().unwrap_or("<none>"),
                    color,
                    claiming = now,
                    "active colour changed"
                );
                if now {
                    wake.notify_one();
                }
            }
            metrics::gauge!("mutr_analysis_claiming").set(if now { 1.0 } else { 0.0 });
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the active colour; keeping the last one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_active_colour_claims_and_everyone_without_a_record() {
        assert!(may_claim(None, "blue"));
        assert!(may_claim(Some("blue"), "blue"));
        assert!(!may_claim(Some("green"), "blue"));
    }

    #[sqlx::test]
    async fn activate_records_the_colour_and_returns_the_previous_one(pool: PgPool) {
        assert_eq!(active(&pool).await.unwrap(), None);
        assert_eq!(activate(&pool, "blue").await.unwrap(), None);
        assert_eq!(
            activate(&pool, "green").await.unwrap().as_deref(),
            Some("blue")
        );
        assert_eq!(
            activate(&pool, "green").await.unwrap().as_deref(),
            Some("green")
        );
        assert_eq!(active(&pool).await.unwrap().as_deref(), Some("green"));
    }

    /// A pod follows the record within its poll interval through NOTIFY, and wakes on becoming
    /// active.
    #[sqlx::test]
    async fn pods_follow_the_record(pool: PgPool) {
        let (claiming, mut seen) = watch::channel(true);
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(
            pool.clone(),
            "blue".to_owned(),
            // Long poll: the change must come through NOTIFY.
            Duration::from_secs(60),
            claiming,
            wake.clone(),
            stop.clone(),
        ));
        // The first wake-up comes once the listener is up.
        tokio::time::timeout(Duration::from_secs(10), wake.notified())
            .await
            .expect("woken once listening");
        activate(&pool, "green").await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), seen.wait_for(|c| !*c))
            .await
            .expect("stopped claiming within 2 s")
            .unwrap();
        activate(&pool, "blue").await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), seen.wait_for(|c| *c))
            .await
            .expect("claims again within 2 s")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), wake.notified())
            .await
            .expect("woken on becoming active");
        wake_up_reaches(&pool, &wake).await;
        stop.cancel();
        task.await.unwrap();
    }

    async fn wake_up_reaches(pool: &PgPool, notify: &Notify) {
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        super::wake(pool).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), woken)
            .await
            .expect("a wake-up reaches the pod");
    }
}
