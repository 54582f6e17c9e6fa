//! Optional Redis cache of analysis results, keyed by a hash of the model identity and the
//! request. The cache is an optimisation only: every Redis failure or timeout is logged, counted
//! and treated as a miss, never as a failed request.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics as m;

/// A cached analysis result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedResult {
    /// The topic.
    pub topic: String,
    /// The emotion label.
    pub emotion: String,
    /// Its probability among the labels.
    pub confidence: f32,
    /// The calibrated mutation score.
    pub mutation_score: f32,
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// How long an entry lives.
    pub ttl: Duration,
    /// Longest wait for one Redis command; past it the cache counts as down for that request.
    pub timeout: Duration,
}

/// Errors creating the cache (a malformed URL; an unreachable server is not an error).
#[derive(Debug, thiserror::Error)]
#[error("invalid REDIS_URL")]
pub struct CacheConfigError(#[source] redis::RedisError);

/// A Redis-backed result cache that connects lazily and reconnects on its own.
#[derive(Clone)]
pub struct ResultCache {
    conn: ConnectionManager,
    settings: CacheSettings,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not printed.
        f.debug_struct("ResultCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ResultCache {
    /// A cache on `url`. Nothing is sent until the first lookup, so a Redis that is down at start
    /// only costs misses.
    pub fn new(url: &str, settings: CacheSettings) -> Result<Self, CacheConfigError> {
        let client = redis::Client::open(url).map_err(CacheConfigError)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(CacheConfigError)?;
        Ok(Self { conn, settings })
    }

    /// The cached result for `key`, or `None` on a miss or any failure.
    pub async fn get(&self, key: &str) -> Option<CachedResult> {
        let mut conn = self.conn.clone();
        let result =
            tokio::time::timeout(self.settings.timeout, conn.get::<_, Option<Vec<u8>>>(key)).await;
        match result {
            Ok(Ok(Some(bytes))) => match serde_json::from_slice(&bytes) {
                Ok(hit) => {
                    metrics::counter!(m::CACHE_HITS).increment(1);
                    Some(hit)
                }
                Err(e) => {
                    tracing::warn!("ignoring an unreadable cache entry: {e}");
                    metrics::counter!(m::CACHE_ERRORS, "op" => "decode").increment(1);
                    None
                }
            },
            Ok(Ok(None)) => {
                metrics::counter!(m::CACHE_MISSES).increment(1);
                None
            }
            Ok(Err(e)) => {
                tracing::warn!("result cache lookup failed: {e}");
                metrics::counter!(m::CACHE_ERRORS, "op" => "get").increment(1);
                None
            }
            Err(_) => {
                tracing::warn!("result cache lookup timed out");
                metrics::counter!(m::CACHE_ERRORS, "op" => "get").increment(1);
                None
            }
        }
    }

    /// Stores `value` under `key`; failures are logged and counted.
    pub async fn put(&self, key: &str, value: &CachedResult) {
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        let mut conn = self.conn.clone();
        let ttl = self.settings.ttl.as_secs().max(1);
        let result = tokio::time::timeout(
            self.settings.timeout,
            conn.set_ex::<_, _, ()>(key, bytes, ttl),
        )
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("result cache store failed: {e}");
                metrics::counter!(m::CACHE_ERRORS, "op" => "set").increment(1);
            }
            Err(_) => {
                tracing::warn!("result cache store timed out");
                metrics::counter!(m::CACHE_ERRORS, "op" => "set").increment(1);
            }
        }
    }
}

/// The cache key of a request: a SHA-256 over the model identity and every request field, each
/// length-prefixed so that no two different requests share a key.
pub fn key(identity: &str, fields: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in std::iter::once(identity).chain(fields.iter().copied()) {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("mutr:ai:result:v1:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_fields_and_models() {
        let a = key("m1", &["ab", "c"]);
        assert_eq!(a, key("m1", &["ab", "c"]));
        assert_ne!(a, key("m1", &["a", "bc"]));
        assert_ne!(a, key("m2", &["ab", "c"]));
        assert!(a.starts_with("mutr:ai:result:v1:"));
        assert_eq!(a.len(), "mutr:ai:result:v1:".len() + 64);
    }
}
