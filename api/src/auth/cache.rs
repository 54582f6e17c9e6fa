//! Guests briefly remembered by the hash of their token, so that a guest's writes skip the lookup.
//!
//! Only writes use it ([`super::Author`]), and every write checks again, in the statement that
//! stores it, that the token still identifies the guest (`db::nodes::create_many`): a guest who
//! signed in since (the token hash is gone) is refused even while the entry lives, and the entry
//! is dropped then. Reads of the caller (`/users/me`) always ask the database.

use std::time::Duration;

use moka::sync::Cache;

use crate::db::users::User;

/// Options of the guest cache (flattened into `mutr-api serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct GuestCacheArgs {
    /// How long a guest found by token is remembered for writes (0s: not at all).
    #[arg(long, env = "MUTR_GUEST_CACHE_TTL", value_parser = humantime::parse_duration, default_value = "60s")]
    pub guest_cache_ttl: Duration,

    /// Most guests remembered at once (least recently used go first).
    #[arg(long, env = "MUTR_GUEST_CACHE_CAPACITY", default_value_t = 100_000)]
    pub guest_cache_capacity: u64,
}

impl Default for GuestCacheArgs {
    fn default() -> Self {
        Self {
            guest_cache_ttl: Duration::from_secs(60),
            guest_cache_capacity: 100_000,
        }
    }
}

/// Guests by token hash; a no-op when turned off.
#[derive(Clone)]
pub struct GuestCache {
    cache: Option<Cache<Vec<u8>, User>>,
}

impl std::fmt::Debug for GuestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestCache")
            .field("entries", &self.cache.as_ref().map(Cache::entry_count))
            .finish()
    }
}

impl GuestCache {
    /// A cache as configured.
    pub fn new(args: &GuestCacheArgs) -> Self {
        let cache = (!args.guest_cache_ttl.is_zero() && args.guest_cache_capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(args.guest_cache_capacity)
                .time_to_live(args.guest_cache_ttl)
                .build()
        });
        Self { cache }
    }

    /// The guest remembered for this token hash.
    pub fn get(&self, token_hash: &[u8]) -> Option<User> {
        let found = self.cache.as_ref()?.get(token_hash);
        let outcome = if found.is_some() { "hit" } else { "miss" };
        metrics::counter!("mutr_guest_cache_lookups_total", "outcome" => outcome).increment(1);
        found
    }

    /// Remembers a guest found by this token hash.
    pub fn insert(&self, token_hash: Vec<u8>, user: User) {
        if let Some(cache) = &self.cache {
            cache.insert(token_hash, user);
        }
    }

    /// Forgets this token hash (it no longer identifies its guest).
    pub fn invalidate(&self, token_hash: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.invalidate(token_hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::Role;

    fn guest(id: i64) -> User {
        User {
            id,
            nickname: format!("손님_{id}"),
            role: Role::Guest,
            email: None,
            provider: None,
            provider_user_id: None,
        }
    }

    #[test]
    fn remembers_forgets_and_can_be_turned_off() {
        let cache = GuestCache::new(&GuestCacheArgs::default());
        assert_eq!(cache.get(b"h"), None);
        cache.insert(b"h".to_vec(), guest(1));
        assert_eq!(cache.get(b"h"), Some(guest(1)));
        cache.invalidate(b"h");
        assert_eq!(cache.get(b"h"), None);

        let off = GuestCache::new(&GuestCacheArgs {
            guest_cache_ttl: Duration::ZERO,
            ..GuestCacheArgs::default()
        });
        off.insert(b"h".to_vec(), guest(1));
        assert_eq!(off.get(b"h"), None);
    }

    #[test]
    fn entries_expire() {
        let cache = GuestCache::new(&GuestCacheArgs {
            guest_cache_ttl: Duration::from_millis(30),
            ..GuestCacheArgs::default()
        });
        cache.insert(b"h".to_vec(), guest(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cache.get(b"h").is_some() {
            assert!(std::time::Instant::now() < deadline, "entry never expired");
            std::thread::yield_now();
        }
    }
}
