//! Pending authorizations: what the callback needs (provider, PKCE verifier, the guest to link),
//! kept in Redis under the `state` for a short time and taken exactly once.
//!
//! The API runs as several replicas, so the callback may land on a different pod from the one that
//! started the flow: the pending authorization lives in Redis, not in process memory. `GETDEL`
//! takes it atomically, so of two callbacks carrying the same `state` only one proceeds. Keys hold
//! a SHA-256 of the state, never the state itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::provider::Provider;

const KEY_PREFIX: &str = "mutr:oauth2:pending:";

/// What the authorization endpoint remembers for the callback.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingAuthorization {
    /// The provider the flow was started with; a callback for another provider is refused.
    pub provider: Provider,
    /// The PKCE code verifier whose S256 challenge went to the provider.
    pub pkce_verifier: String,
    /// The guest (users.id) whose nodes the new member keeps, when the flow started with a
    /// valid guest token.
    pub guest_user_id: Option<i64>,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("provider", &self.provider)
            .field("pkce_verifier", &"<redacted>")
            .field("guest_user_id", &self.guest_user_id)
            .finish()
    }
}

/// The pending-authorization store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    /// Redis refused or could not be reached.
    #[error("redis failed while handling a pending authorization")]
    Redis(#[from] redis::RedisError),
    /// Redis held a value this version cannot read.
    #[error("a pending authorization in redis is malformed")]
    Malformed(#[from] serde_json::Error),
    /// A freshly generated state collided with a live one (practically impossible with 128-bit
    /// random states; refused rather than overwritten).
    #[error("a pending authorization with this state already exists")]
    Collision,
}

/// Pending authorizations in Redis.
#[derive(Clone)]
pub struct StateStore {
    redis: redis::aio::ConnectionManager,
    ttl: Duration,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// A store whose entries expire after `ttl` (how long a person may take at the provider).
    #[must_use]
    pub const fn new(redis: redis::aio::ConnectionManager, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    /// How long a pending authorization lives.
    #[must_use]
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Remembers `pending` under `state` until the TTL runs out.
    ///
    /// # Errors
    /// When Redis fails or the state is already in use.
    pub async fn put(
        &self,
        state: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), StateStoreError> {
        let value = serde_json::to_string(pending)?;
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let stored: Option<String> = redis::cmd("SET")
            .arg(key(state))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.redis.clone())
            .await?;
        stored.map(|_| ()).ok_or(StateStoreError::Collision)
    }

    /// Takes the pending authorization for `state`, so that no other callback can use it.
    /// `None` when it never existed, has expired, or was taken already.
    ///
    /// # Errors
    /// When Redis fails or the stored value cannot be read.
    pub async fn take(&self, state: &str) -> Result<Option<PendingAuthorization>, StateStoreError> {
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(key(state))
            .query_async(&mut self.redis.clone())
            .await?;
        value
            .map(|v| serde_json::from_str(&v))
            .transpose()
            .map_err(Into::into)
    }
}

fn key(state: &str) -> String {
    format!(
        "{KEY_PREFIX}{}",
        hex::encode(Sha256::digest(state.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_the_state() {
        let k = key("abc");
        assert!(k.starts_with(KEY_PREFIX));
        assert!(!k.contains("abc"));
        assert_eq!(k, key("abc"));
        assert_ne!(k, key("abd"));
    }

    #[test]
    fn debug_hides_the_verifier() {
        let p = PendingAuthorization {
            provider: Provider::Kakao,
            pkce_verifier: "very-secret-verifier".into(),
            guest_user_id: Some(7),
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        let back: PendingAuthorization =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
