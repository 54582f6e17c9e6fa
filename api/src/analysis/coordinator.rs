//! Parent-before-child ordering in Redis: which nodes are active (their children must wait) and
//! which children wait for which parent. Each step that reads and writes is one Lua script, so it
//! is atomic: no child can be parked on a list its parent has already released, the race that
//! left the old system's children waiting for ever.
//!
//! Redis only speeds things up. Every key expires, and a flushed or unreachable Redis loses
//! nothing: PostgreSQL says whether a parent has ended, each claim checks it again, and the
//! sweeper dispatches whatever Redis forgot (see `recovery`).
//!
//! Keys, under the configured prefix: `active:{id}` (a string: the node is unfinished) and
//! `waiting:{id}` (a set of the child ids parked on it). All keys of one call share the prefix;
//! on a Redis Cluster, put a hash tag in the prefix (`mutr:{analysis}:`) so they share a slot.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};

/// What [`Coordinator::hold`] decided for a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Its parent is active: the child is parked on it and will be released with it.
    Parked,
    /// Redis does not know the parent as active: ask PostgreSQL.
    Unknown,
}

/// The Redis side of the ordering, cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    redis: ConnectionManager,
    prefix: String,
    ttl_secs: u64,
    hold: Script,
    park: Script,
    release: Script,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("prefix", &self.prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

/// Check-and-hold for a batch of children, in order, in one atomic step. Each child is marked
/// active, then parked on its parent when the parent is active; a child marked earlier in the
/// batch is already active for a later child of its own.
/// KEYS: per child i (from 0), `3i+1` active:parent, `3i+2` waiting:parent, `3i+3` active:child.
/// ARGV: the ttl, then the child ids. Returns per child 1 when parked, 0 when the parent is not
/// known as active.
const HOLD: &str = r"
local ttl = ARGV[1]
local parked = {}
for i = 1, #ARGV - 1 do
  local k = (i - 1) * 3
  redis.call('SET', KEYS[k + 3], '1', 'EX', ttl)
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    redis.call('SADD', KEYS[k + 2], ARGV[i + 1])
    redis.call('EXPIRE', KEYS[k + 2], ttl)
    parked[i] = 1
  else
    parked[i] = 0
  end
end
return parked
";

/// Parks a child on a parent that PostgreSQL says is unfinished, marking both active.
/// KEYS: active:parent, waiting:parent, active:child. ARGV: child id, ttl.
const PARK: &str = r"
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
return 1
";

/// Complete-and-release. The node is no longer active; returns and forgets its waiting children.
/// KEYS: active:node, waiting:node.
const RELEASE: &str = r"
redis.call('DEL', KEYS[1])
local children = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return children
";

impl Coordinator {
    /// A coordinator over `redis`, its keys under `prefix`, expiring after `ttl`.
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
            ttl_secs: ttl.as_secs().max(1),
            hold: Script::new(HOLD),
            park: Script::new(PARK),
            release: Script::new(RELEASE),
        }
    }

    fn active(&self, id: i64) -> String {
        format!("{}active:{id}", self.prefix)
    }

    fn waiting(&self, id: i64) -> String {
        format!("{}waiting:{id}", self.prefix)
    }

    /// Marks `node` active, so that its children wait for it.
    pub async fn mark(&self, node: i64) -> redis::RedisResult<()> {
        self.mark_many(&[node]).await
    }

    /// Marks `nodes` active in one round trip. Each mark is one `SET` with its expiry (atomic on
    /// its own, so no script is needed); a burst of new nodes costs one pipeline.
    pub async fn mark_many(&self, nodes: &[i64]) -> redis::RedisResult<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for &node in nodes {
            pipe.set_ex(self.active(node), 1, self.ttl_secs).ignore();
        }
        let mut redis = self.redis.clone();
        pipe.query_async::<()>(&mut redis).await
    }

    /// Check-and-hold: marks `child` active and parks it on `parent` when the parent is active,
    /// in one atomic step.
    pub async fn hold(&self, parent: i64, child: i64) -> redis::RedisResult<Hold> {
        // `hold_many` answers exactly one `Hold` per pair.
        Ok(self.hold_many(&[(parent, child)]).await?[0])
    }

    /// [`hold`](Self::hold) for many `(parent, child)` pairs, in order, as one script call (one
    /// round trip for a burst of new nodes). Answers one [`Hold`] per pair.
    pub async fn hold_many(&self, pairs: &[(i64, i64)]) -> redis::RedisResult<Vec<Hold>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.hold.prepare_invoke();
        invocation.arg(self.ttl_secs);
        for &(parent, child) in pairs {
            invocation
                .key(self.active(parent))
                .key(self.waiting(parent))
                .key(self.active(child))
                .arg(child);
        }
        let mut redis = self.redis.clone();
        let parked: Vec<i64> = invocation.invoke_async(&mut redis).await?;
        if parked.len() != pairs.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the hold script answered for a different number of children",
            )));
        }
        Ok(parked
            .into_iter()
            .map(|p| if p == 1 { Hold::Parked } else { Hold::Unknown })
            .collect())
    }

    /// Parks `child` on `parent`, which PostgreSQL says is unfinished, marking both active. The
    /// caller must then look at the parent in PostgreSQL again and [`release`](Self::release) it
    /// if it ended meanwhile: its own release may have run before this park.
    pub async fn park(&self, parent: i64, child: i64) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        self.park
            .key(self.active(parent))
            .key(self.waiting(parent))
            .key(self.active(child))
            .arg(child)
            .arg(self.ttl_secs)
            .invoke_async::<i64>(&mut redis)
            .await
            .map(drop)
    }

    /// Parks many `(child, parent)` pairs in one round trip (recovery).
    pub async fn park_many(&self, pairs: &[(i64, i64)]) -> redis::RedisResult<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for &(child, parent) in pairs {
            let mut invocation = self.park.key(self.active(parent));
            invocation
                .key(self.waiting(parent))
                .key(self.active(child))
                .arg(child)
                .arg(self.ttl_secs);
            pipe.invoke_script(&invocation).ignore();
        }
        let mut redis = self.redis.clone();
        // A pipeline's scripts are loaded first, so EVALSHA cannot miss.
        self.park.prepare_invoke().load_async(&mut redis).await?;
        pipe.query_async::<()>(&mut redis).await
    }

    /// Complete-and-release: `node` ended; it is no longer active, and the children parked on it
    /// are returned (and forgotten) in the same atomic step.
    pub async fn release(&self, node: i64) -> redis::RedisResult<Vec<i64>> {
        let mut redis = self.redis.clone();
        let children: Vec<String> = self
            .release
            .key(self.active(node))
            .key(self.waiting(node))
            .invoke_async(&mut redis)
            .await?;
        Ok(children.iter().filter_map(|c| c.parse().ok()).collect())
    }
}
