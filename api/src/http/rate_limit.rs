//! Per-user write rate limit (429 with `Retry-After`), shared by every replica.
//!
//! The budget lives in Redis: one GCRA cell per user (the theoretical arrival time of the next
//! write), checked and advanced by one atomic script, so that N replicas together allow what one
//! would. While Redis does not answer (an error, or no answer within the configured timeout) each
//! replica falls back to a token bucket of its own with the same rate and burst: a user may then
//! write up to N times the rate across the fleet, never without a limit, and writes never wait on
//! an outage of the accelerator. After a failure the replica stays on its own bucket for
//! [`RETRY_REDIS_AFTER`] before it asks Redis again, so an outage costs one timeout per second,
//! not one per write.

use std::{
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use redis::{Script, aio::ConnectionManager};

use crate::error::ApiError;

/// How long a replica keeps to its own bucket after Redis failed to answer.
pub const RETRY_REDIS_AFTER: Duration = Duration::from_secs(1);

/// GCRA on the server's clock (`TIME`, so replicas with skewed clocks agree). KEYS[1]: the user's
/// cell. ARGV: emission interval and tolerance (burst × interval), both in microseconds. Returns
/// 0 when the write is allowed, else the microseconds until it would be.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local next_tat = tat + emission
local allowed_at = next_tat - tolerance
if allowed_at > now then
  return allowed_at - now
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
";

/// Where the shared budget lives.
#[derive(Debug, Clone, Args)]
pub struct SharedLimitArgs {
    /// Prefix of the Redis keys that hold each user's shared write budget.
    #[arg(
        long,
        env = "MUTR_RATE_LIMIT_REDIS_PREFIX",
        default_value = "mutr:ratelimit:write:"
    )]
    pub rate_limit_redis_prefix: String,

    /// How long a write waits for Redis's verdict before this replica decides alone.
    #[arg(long, env = "MUTR_RATE_LIMIT_REDIS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "50ms")]
    pub rate_limit_redis_timeout: Duration,
}

impl Default for SharedLimitArgs {
    fn default() -> Self {
        Self {
            rate_limit_redis_prefix: "mutr:ratelimit:write:".to_owned(),
            rate_limit_redis_timeout: Duration::from_millis(50),
        }
    }
}

/// The shared budget in Redis.
struct Shared {
    redis: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    emission_us: u64,
    tolerance_us: u64,
    /// Until when this replica decides alone (after Redis failed).
    local_until: Mutex<Option<Instant>>,
    /// Whether the last look found Redis down, to log each change once.
    degraded: AtomicBool,
}

/// The write limit: the shared budget when Redis answers, this replica's own buckets otherwise;
/// unlimited when the configured rate is 0.
pub struct WriteLimiter {
    local: Option<DefaultKeyedRateLimiter<i64>>,
    shared: Option<Shared>,
}

impl std::fmt::Debug for WriteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLimiter")
            .field("limited", &self.local.is_some())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl WriteLimiter {
    /// This replica's buckets only: `per_second` writes sustained, `burst` at once;
    /// `per_second == 0` turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let local = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            local,
            shared: None,
        }
    }

    /// The same limit shared by every replica through `redis`, with this replica's own buckets
    /// as the fallback.
    pub fn shared(
        per_second: u32,
        burst: u32,
        redis: ConnectionManager,
        args: &SharedLimitArgs,
    ) -> Self {
        let mut limiter = Self::new(per_second, burst);
        if per_second > 0 {
            let emission_us = 1_000_000 / u64::from(per_second);
            let burst = u64::from(if burst == 0 { per_second } else { burst });
            limiter.shared = Some(Shared {
                redis,
                script: Script::new(GCRA),
                prefix: args.rate_limit_redis_prefix.clone(),
                timeout: args.rate_limit_redis_timeout,
                emission_us,
                tolerance_us: emission_us * burst,
                local_until: Mutex::new(None),
                degraded: AtomicBool::new(false),
            });
        }
        limiter
    }

    /// Takes one write from `user_id`'s budget, or says when to retry.
    pub async fn check(&self, user_id: i64) -> Result<(), ApiError> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        if let Some(shared) = &self.shared
            && let Some(wait) = shared.check(user_id).await
        {
            return match wait {
                Duration::ZERO => Ok(()),
                wait => Err(limited(wait)),
            };
        }
        local
            .check_key(&user_id)
            .map_err(|not_until| limited(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Forgets local buckets that are full again, so memory follows the active users only.
    pub fn shrink(&self) {
        if let Some(limiter) = &self.local {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How often [`Self::shrink`] should run.
    pub const SHRINK_EVERY: Duration = Duration::from_secs(60);
}

impl Shared {
    /// Redis's verdict (zero: allowed; else the wait), or `None` when Redis did not give one.
    async fn check(&self, user_id: i64) -> Option<Duration> {
        if let Ok(until) = self.local_until.lock()
            && until.is_some_and(|t| Instant::now() < t)
        {
            metrics::counter!("mutr_rate_limit_fallbacks_total").increment(1);
            return None;
        }
        let mut redis = self.redis.clone();
        let mut call = self.script.key(format!("{}{user_id}", self.prefix));
        call.arg(self.emission_us).arg(self.tolerance_us);
        let answer = tokio::time::timeout(self.timeout, call.invoke_async::<u64>(&mut redis)).await;
        match answer {
            Ok(Ok(wait_us)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("write rate limit: shared through Redis again");
                }
                Some(Duration::from_micros(wait_us))
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", self.timeout),
                };
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "write rate limit: Redis unavailable; each replica limits on its own");
                }
                if let Ok(mut until) = self.local_until.lock() {
                    *until = Some(Instant::now() + RETRY_REDIS_AFTER);
                }
                metrics::counter!("mutr_rate_limit_fallbacks_total").increment(1);
                None
            }
        }
    }
}

fn limited(wait: Duration) -> ApiError {
    metrics::counter!("mutr_rate_limited_total").increment(1);
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn burst_then_limited_per_user() {
        let limiter = WriteLimiter::new(1, 3);
        for _ in 0..3 {
            limiter.check(1).await.unwrap();
        }
        match limiter.check(1).await {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another user has a bucket of their own.
        limiter.check(2).await.unwrap();
    }

    #[tokio::test]
    async fn zero_rate_is_unlimited() {
        let limiter = WriteLimiter::new(0, 0);
        for _ in 0..10_000 {
            limiter.check(1).await.unwrap();
        }
    }
}
