//! Per-user write rate limit (429 with `Retry-After`), a token bucket per user id.

use std::{num::NonZeroU32, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::error::ApiError;

/// Token buckets keyed by user id; unlimited when the configured rate is 0.
#[derive(Debug)]
pub struct WriteLimiter {
    limiter: Option<DefaultKeyedRateLimiter<i64>>,
}

impl WriteLimiter {
    /// `per_second` writes sustained, `burst` at once; `per_second == 0` turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    /// Takes one write from `user_id`'s bucket, or says when to retry.
    pub fn check(&self, user_id: i64) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&user_id).map_err(|not_until| {
            metrics::counter!("mutr_rate_limited_total").increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Forgets buckets that are full again, so memory follows the active users only.
    pub fn shrink(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How often [`Self::shrink`] should run.
    pub const SHRINK_EVERY: Duration = Duration::from_secs(60);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_per_user() {
        let limiter = WriteLimiter::new(1, 3);
        for _ in 0..3 {
            limiter.check(1).unwrap();
        }
        match limiter.check(1) {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another user has a bucket of their own.
        limiter.check(2).unwrap();
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let limiter = WriteLimiter::new(0, 0);
        for _ in 0..10_000 {
            limiter.check(1).unwrap();
        }
    }
}
