//! Claims in PostgreSQL, the source of truth: taking a node (one conditional `UPDATE` that also
//! checks the parent has ended and this colour may claim), renewing the lease, and ending the
//! claim (completed, failed, returned, lost), each fenced on the claim's token and recorded in
//! `analysis_attempts` in the same statement.
//!
//! Every statement reads the clock of the database (`now()`, `clock_timestamp()`), never the
//! pod's, so leases mean the same on every replica.

use std::time::Duration;

use sqlx::PgExecutor;

use crate::{
    db::nodes::{NodeRow, status},
    domain::node::{AnalysisStatus, Node},
};

/// Who holds a claim: the pod and its colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The pod's name.
    pub pod: String,
    /// The pod's colour.
    pub color: String,
}

/// The parent of a claimed node, as the claiming statement read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentState {
    /// `COMPLETED` or `FAILED`: a claim is only taken once the parent ended.
    pub status: AnalysisStatus,
    /// Its stored topic; none when it failed.
    pub topic: Option<String>,
}

/// A node this pod holds: what the analysis needs and the token that fences every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The node.
    pub node_id: i64,
    /// The fencing token of this claim; changes on every claim.
    pub token: i64,
    /// The node's parent; none for a root.
    pub parent_id: Option<i64>,
    /// The node's text.
    pub content: String,
    /// How many times the node has been claimed, this claim included.
    pub claims: i32,
    /// The parent as the claim read it; none for a root.
    pub parent: Option<ParentState>,
}

impl Claim {
    /// This claim as one to hand back, with the AI calls made under it.
    pub fn held(&self, calls: Calls) -> Held {
        Held {
            node_id: self.node_id,
            token: self.token,
            calls,
        }
    }

    /// The parent topic to analyse against: empty for a root or when the parent failed.
    pub fn parent_topic(&self) -> &str {
        self.parent
            .as_ref()
            .and_then(|p| p.topic.as_deref())
            .unwrap_or_default()
    }
}

/// What the AI server said about a node, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Its topic.
    pub topic: String,
    /// One of the seven emotions.
    pub emotion: String,
    /// Confidence of the emotion, in [0, 1].
    pub confidence: f32,
    /// How far it drifted from its parent, in [0, 1]; 0.0 for a root.
    pub mutation_score: f64,
    /// The drift class of that score (`ORIGIN` for a root).
    pub mutation_filter: &'static str,
}

/// The AI calls made under one claim, recorded with its attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Calls {
    /// How many.
    pub tries: i32,
    /// Milliseconds spent waiting for them, backoff excluded.
    pub ai_ms: f64,
}

/// A claim to hand back: the node, its token and the AI calls made under it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    /// The node.
    pub node_id: i64,
    /// The claim's token.
    pub token: i64,
    /// AI calls made under the claim.
    pub calls: Calls,
}

fn lease_secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

struct ClaimRow {
    id: i64,
    parent_id: Option<i64>,
    content: String,
    claim_token: Option<i64>,
    attempts: i32,
    parent_status: Option<String>,
    parent_topic: Option<String>,
}

impl From<ClaimRow> for Claim {
    fn from(r: ClaimRow) -> Self {
        Self {
            node_id: r.id,
            token: r.claim_token.unwrap_or_default(),
            parent_id: r.parent_id,
            content: r.content,
            claims: r.attempts,
            parent: r.parent_status.map(|s| ParentState {
                status: status(&s),
                topic: r.parent_topic,
            }),
        }
    }
}

/// Claims `node_id` for `owner` with a lease of `lease`, when it is `PENDING` (or `PROCESSING`
/// with an expired lease), its parent has ended (`COMPLETED` or `FAILED`) and `owner`'s colour
/// may claim (it is the recorded active colour, or none is recorded). None when any of that does
/// not hold, or another worker took it first. Records the attempt, and closes the attempt of an
/// expired claim as `LOST`.
pub async fn claim_one(
    db: impl PgExecutor<'_>,
    node_id: i64,
    owner: &Owner,
    lease: Duration,
) -> Result<Option<Claim>, sqlx::Error> {
    let row = sqlx::query_as!(
        ClaimRow,
        r#"WITH claimed AS (
            UPDATE nodes n
            SET analysis_status = 'PROCESSING', claim_owner = $2, claim_color = $3,
                lease_expires_at = now() + make_interval(secs => $4),
                claim_token = nextval('analysis_claim_token'), attempts = n.attempts + 1,
                updated_at = now()
            WHERE n.id = $1
              AND (n.analysis_status = 'PENDING'
                   OR (n.analysis_status = 'PROCESSING' AND n.lease_expires_at < now()))
              AND COALESCE((SELECT a.color = $3 FROM analysis_active_color a), TRUE)
              AND (n.parent_id IS NULL OR EXISTS (
                    SELECT 1 FROM nodes p
                    WHERE p.id = n.parent_id AND p.analysis_status IN ('COMPLETED', 'FAILED')))
            RETURNING n.id, n.parent_id, n.content, n.claim_token, n.attempts
        ),
        with_parent AS (
            SELECT c.id, c.parent_id, c.content, c.claim_token, c.attempts,
                   p.analysis_status AS parent_status, p.topic AS parent_topic
            FROM claimed c LEFT JOIN nodes p ON p.id = c.parent_id
        ),
        expired AS (
            UPDATE analysis_attempts a
            SET finished_at = clock_timestamp(), outcome = 'LOST', error = 'lease expired'
            FROM claimed c
            WHERE a.node_id = c.id AND a.finished_at IS NULL
        ),
        recorded AS (
            INSERT INTO analysis_attempts (node_id, owner, color, token, parent_status, parent_topic)
            SELECT id, $2, $3, claim_token, parent_status, parent_topic FROM with_parent
        )
        SELECT id AS "id!", parent_id AS "parent_id?", content AS "content!",
               claim_token AS "claim_token?", attempts AS "attempts!",
               parent_status AS "parent_status?", parent_topic AS "parent_topic?"
        FROM with_parent"#,
        node_id,
        owner.pod,
        owner.color,
        lease_secs(lease),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// The claiming statement of [`claim_listed`] and [`claim_ready`]. Candidates: the ready nodes
/// (`PENDING`, or `PROCESSING` with an expired lease; parent ended; `$2`'s colour may claim) that
/// also pass `$filter`, by id, up to `$limit`, locked `FOR UPDATE SKIP LOCKED`; both may use `$4`.
/// Each candidate is claimed for `$1` (pod) and `$2` (colour) with a lease of `$3` seconds, with
/// the parent's state as the statement read it, its expired attempt closed and the new one
/// recorded.
macro_rules! claim_candidates {
    ($filter:tt, $limit:tt, $owner:expr, $lease:expr, $fourth:expr) => {
        sqlx::query_as!(
            ClaimRow,
            r#"WITH candidate AS (
            SELECT n.id FROM nodes n
            WHERE "# + $filter + r#"
              AND n.analysis_status IN ('PENDING', 'PROCESSING')
              AND (n.analysis_status = 'PENDING' OR n.lease_expires_at < now())
              AND (n.parent_id IS NULL OR EXISTS (
                    SELECT 1 FROM nodes p
                    WHERE p.id = n.parent_id AND p.analysis_status IN ('COMPLETED', 'FAILED')))
              AND COALESCE((SELECT a.color = $2 FROM analysis_active_color a), TRUE)
            ORDER BY n.id
            "# + $limit + r#"
            FOR UPDATE OF n SKIP LOCKED
        ),
        claimed AS (
            UPDATE nodes n
            SET analysis_status = 'PROCESSING', claim_owner = $1, claim_color = $2,
                lease_expires_at = now() + make_interval(secs => $3),
                claim_token = nextval('analysis_claim_token'), attempts = n.attempts + 1,
                updated_at = now()
            FROM candidate
            WHERE n.id = candidate.id
            RETURNING n.id, n.parent_id, n.content, n.claim_token, n.attempts
        ),
        with_parent AS (
            SELECT c.id, c.parent_id, c.content, c.claim_token, c.attempts,
                   p.analysis_status AS parent_status, p.topic AS parent_topic
            FROM claimed c LEFT JOIN nodes p ON p.id = c.parent_id
        ),
        expired AS (
            UPDATE analysis_attempts a
            SET finished_at = clock_timestamp(), outcome = 'LOST', error = 'lease expired'
            FROM claimed c
            WHERE a.node_id = c.id AND a.finished_at IS NULL
        ),
        recorded AS (
            INSERT INTO analysis_attempts (node_id, owner, color, token, parent_status, parent_topic)
            SELECT id, $1, $2, claim_token, parent_status, parent_topic FROM with_parent
        )
        SELECT id AS "id!", parent_id AS "parent_id?", content AS "content!",
               claim_token AS "claim_token?", attempts AS "attempts!",
               parent_status AS "parent_status?", parent_topic AS "parent_topic?"
        FROM with_parent ORDER BY id"#,
            $owner.pod,
            $owner.color,
            lease_secs($lease),
            $fourth,
        )
    };
}

/// Claims those of `ids` that are ready, in one statement: the conditions of [`claim_one`], row
/// by row. A row another transaction has locked is skipped (`FOR UPDATE SKIP LOCKED`) rather than
/// waited for, so two pods listing overlapping nodes never wait on each other; a skipped node is
/// simply not in the answer, like one that was not ready. Returned in the order of their ids.
pub async fn claim_listed(
    db: impl PgExecutor<'_>,
    ids: &[i64],
    owner: &Owner,
    lease: Duration,
) -> Result<Vec<Claim>, sqlx::Error> {
    let rows = claim_candidates!("n.id = ANY($4)", "", owner, lease, ids)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Claims up to `limit` nodes that are ready and held by nobody, oldest first: `PENDING`, or
/// `PROCESSING` with an expired lease, whose parent has ended. Rows another transaction has
/// locked are skipped (`FOR UPDATE SKIP LOCKED`), so replicas sweeping at once never take the same
/// node. Nothing when `owner`'s colour may not claim.
pub async fn claim_ready(
    db: impl PgExecutor<'_>,
    owner: &Owner,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claim>, sqlx::Error> {
    let rows = claim_candidates!("TRUE", "LIMIT $4", owner, lease, limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Extends the lease of every claim in `held` that is still this worker's; the node ids whose
/// claim is still held (a missing one was lost: expired and taken, or recovered).
pub async fn renew(
    db: impl PgExecutor<'_>,
    held: &[(i64, i64)],
    lease: Duration,
) -> Result<Vec<i64>, sqlx::Error> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
    let tokens: Vec<i64> = held.iter().map(|h| h.1).collect();
    sqlx::query_scalar!(
        r#"UPDATE nodes n SET lease_expires_at = now() + make_interval(secs => $3)
        FROM unnest($1::bigint[], $2::bigint[]) AS h(id, token)
        WHERE n.id = h.id AND n.claim_token = h.token AND n.analysis_status = 'PROCESSING'
        RETURNING n.id"#,
        &ids,
        &tokens,
        lease_secs(lease),
    )
    .fetch_all(db)
    .await
}

/// Stores the analysis of a claimed node as `COMPLETED`, fenced on the claim's token; the node as
/// clients see it, or none when the claim was lost meanwhile (then nothing is written to the node
/// and the attempt is closed as `LOST`).
pub async fn complete(
    db: impl PgExecutor<'_>,
    claim: &Claim,
    analysis: &Analysis,
    calls: Calls,
) -> Result<Option<Node>, sqlx::Error> {
    let row = sqlx::query_as!(
        NodeRow,
        r#"WITH done AS (
            UPDATE nodes
            SET analysis_status = 'COMPLETED', topic = $3, emotion = $4, confidence = $5,
                mutation_score = $6, mutation_filter = $7, lease_expires_at = NULL,
                last_error = NULL, updated_at = now()
            WHERE id = $1 AND claim_token = $2 AND analysis_status = 'PROCESSING'
            RETURNING id, content, author_id, topic, emotion, mutation_filter, mutation_score,
                      x, y, z, parent_id, root_id, created_at, analysis_status
        ),
        recorded AS (
            UPDATE analysis_attempts
            SET finished_at = clock_timestamp(), tries = $8, ai_ms = $9,
                outcome = CASE WHEN EXISTS (SELECT 1 FROM done) THEN 'COMPLETED' ELSE 'LOST' END,
                error = CASE WHEN EXISTS (SELECT 1 FROM done) THEN NULL
                             ELSE 'claim lost before the result was stored' END
            WHERE token = $2 AND finished_at IS NULL
        )
        SELECT d.id AS "id!", d.content AS "content!", u.nickname AS author_nickname,
               d.topic, d.emotion AS "emotion!", d.mutation_filter, d.mutation_score,
               d.x AS "x!", d.y AS "y!", d.z AS "z!", d.parent_id, d.root_id AS "root_id!",
               d.created_at AS "created_at!", d.analysis_status AS "analysis_status!"
        FROM done d JOIN users u ON u.id = d.author_id"#,
        claim.node_id,
        claim.token,
        analysis.topic,
        analysis.emotion,
        analysis.confidence,
        analysis.mutation_score,
        analysis.mutation_filter,
        calls.tries,
        calls.ai_ms,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Ends a claimed node as `FAILED` with `reason`, fenced on the claim's token; the node as
/// clients see it, or none when the claim was lost meanwhile.
pub async fn fail(
    db: impl PgExecutor<'_>,
    claim: &Claim,
    reason: &str,
    calls: Calls,
) -> Result<Option<Node>, sqlx::Error> {
    let row = sqlx::query_as!(
        NodeRow,
        r#"WITH done AS (
            UPDATE nodes
            SET analysis_status = 'FAILED', last_error = $3, lease_expires_at = NULL,
                updated_at = now()
            WHERE id = $1 AND claim_token = $2 AND analysis_status = 'PROCESSING'
            RETURNING id, content, author_id, topic, emotion, mutation_filter, mutation_score,
                      x, y, z, parent_id, root_id, created_at, analysis_status
        ),
        recorded AS (
            UPDATE analysis_attempts
            SET finished_at = clock_timestamp(), tries = $4, ai_ms = $5, error = $3,
                outcome = CASE WHEN EXISTS (SELECT 1 FROM done) THEN 'FAILED' ELSE 'LOST' END
            WHERE token = $2 AND finished_at IS NULL
        )
        SELECT d.id AS "id!", d.content AS "content!", u.nickname AS author_nickname,
               d.topic, d.emotion AS "emotion!", d.mutation_filter, d.mutation_score,
               d.x AS "x!", d.y AS "y!", d.z AS "z!", d.parent_id, d.root_id AS "root_id!",
               d.created_at AS "created_at!", d.analysis_status AS "analysis_status!"
        FROM done d JOIN users u ON u.id = d.author_id"#,
        claim.node_id,
        claim.token,
        reason,
        calls.tries,
        calls.ai_ms,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Hands claims back: each node still held under its token goes back to `PENDING` (its attempt
/// `RETURNED` with `reason`); an attempt whose claim was already gone is closed as `LOST`. The
/// number of nodes returned.
pub async fn give_back(
    db: impl PgExecutor<'_>,
    held: &[Held],
    reason: &str,
) -> Result<u64, sqlx::Error> {
    if held.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = held.iter().map(|h| h.node_id).collect();
    let tokens: Vec<i64> = held.iter().map(|h| h.token).collect();
    let tries: Vec<i32> = held.iter().map(|h| h.calls.tries).collect();
    let ai_ms: Vec<f64> = held.iter().map(|h| h.calls.ai_ms).collect();
    let returned = sqlx::query_scalar!(
        r#"WITH back AS (
            UPDATE nodes n
            SET analysis_status = 'PENDING', claim_owner = NULL, claim_color = NULL,
                lease_expires_at = NULL, updated_at = now()
            FROM unnest($1::bigint[], $2::bigint[]) AS h(id, token)
            WHERE n.id = h.id AND n.claim_token = h.token AND n.analysis_status = 'PROCESSING'
            RETURNING n.claim_token
        ),
        recorded AS (
            UPDATE analysis_attempts a
            SET finished_at = clock_timestamp(), tries = t.tries, ai_ms = t.ai_ms,
                outcome = CASE WHEN a.token IN (SELECT claim_token FROM back) THEN 'RETURNED'
                               ELSE 'LOST' END,
                error = $4
            FROM unnest($2::bigint[], $3::int[], $5::float8[]) AS t(token, tries, ai_ms)
            WHERE a.token = t.token AND a.finished_at IS NULL
        )
        SELECT count(*) AS "count!" FROM back"#,
        &ids,
        &tokens,
        &tries,
        reason,
        &ai_ms,
    )
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(returned).unwrap_or_default())
}

/// Closes the attempt of a claim that was lost before anything was stored.
pub async fn close_lost(
    db: impl PgExecutor<'_>,
    token: i64,
    calls: Calls,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE analysis_attempts SET finished_at = clock_timestamp(), outcome = 'LOST',
             tries = $2, ai_ms = $4, error = $3
         WHERE token = $1 AND finished_at IS NULL",
        token,
        calls.tries,
        error,
        calls.ai_ms,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The status of one node; none when it does not exist.
pub async fn status_of(
    db: impl PgExecutor<'_>,
    node_id: i64,
) -> Result<Option<AnalysisStatus>, sqlx::Error> {
    let s = sqlx::query_scalar!("SELECT analysis_status FROM nodes WHERE id = $1", node_id)
        .fetch_optional(db)
        .await?;
    Ok(s.as_deref().map(status))
}

/// The `PENDING` children of `parent_id`: who to dispatch once it ended, when Redis cannot say.
pub async fn pending_children(
    db: impl PgExecutor<'_>,
    parent_id: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM nodes WHERE parent_id = $1 AND analysis_status = 'PENDING' ORDER BY id",
        parent_id
    )
    .fetch_all(db)
    .await
}

/// Unfinished nodes whose parent is unfinished too, after `after_id`, oldest first: `(child,
/// parent)` pairs to park in Redis at recovery.
pub async fn waiting(
    db: impl PgExecutor<'_>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT n.id, p.id AS parent_id
        FROM nodes n JOIN nodes p ON p.id = n.parent_id
        WHERE n.analysis_status IN ('PENDING', 'PROCESSING') AND n.id > $1
          AND p.analysis_status IN ('PENDING', 'PROCESSING')
        ORDER BY n.id
        LIMIT $2"#,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.parent_id)).collect())
}

/// Nodes by analysis status, for the metrics: the unfinished ones through their partial index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// `PENDING` nodes.
    pub pending: i64,
    /// `PROCESSING` nodes.
    pub processing: i64,
}

/// How many nodes are `PENDING` and `PROCESSING` (read through the partial index of unfinished
/// nodes, so it costs what is unfinished, not the size of the galaxy).
pub async fn unfinished(db: impl PgExecutor<'_>) -> Result<Unfinished, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE analysis_status = 'PENDING') AS "pending!",
                  count(*) FILTER (WHERE analysis_status = 'PROCESSING') AS "processing!"
        FROM nodes WHERE analysis_status IN ('PENDING', 'PROCESSING')"#
    )
    .fetch_one(db)
    .await?;
    Ok(Unfinished {
        pending: row.pending,
        processing: row.processing,
    })
}

/// How many nodes ended `COMPLETED` and `FAILED` (a count over the whole table: run it rarely).
pub async fn ended(db: impl PgExecutor<'_>) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE analysis_status = 'COMPLETED') AS "completed!",
                  count(*) FILTER (WHERE analysis_status = 'FAILED') AS "failed!"
        FROM nodes"#
    )
    .fetch_one(db)
    .await?;
    Ok((row.completed, row.failed))
}

/// What `recover --from-color` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Claims of the colour returned to `PENDING`.
    pub returned: u64,
    /// Nodes still `PROCESSING` under the colour afterwards (0 unless the colour still claims).
    pub still_processing: u64,
}

/// Returns every node claimed by `color` to `PENDING`, closing their attempts as `RECOVERED`.
pub async fn recover_color(
    db: impl PgExecutor<'_> + Copy,
    color: &str,
) -> Result<Recovered, sqlx::Error> {
    let returned = sqlx::query_scalar!(
        r#"WITH back AS (
            UPDATE nodes
            SET analysis_status = 'PENDING', claim_owner = NULL, claim_color = NULL,
                lease_expires_at = NULL, updated_at = now()
            WHERE analysis_status = 'PROCESSING' AND claim_color = $1
            RETURNING claim_token
        ),
        recorded AS (
            UPDATE analysis_attempts a
            SET finished_at = clock_timestamp(), outcome = 'RECOVERED',
                error = 'returned by recover --from-color ' || $1
            FROM back
            WHERE a.token = back.claim_token AND a.finished_at IS NULL
        )
        SELECT count(*) AS "count!" FROM back"#,
        color,
    )
    .fetch_one(db)
    .await?;
    let still = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM nodes
        WHERE analysis_status = 'PROCESSING' AND claim_color = $1"#,
        color
    )
    .fetch_one(db)
    .await?;
    Ok(Recovered {
        returned: u64::try_from(returned).unwrap_or_default(),
        still_processing: u64::try_from(still).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::PgPool;

    fn owner(pod: &str, color: &str) -> Owner {
        Owner {
            pod: pod.to_owned(),
            color: color.to_owned(),
        }
    }

    const LEASE: Duration = Duration::from_secs(30);

    /// A root and a child under it; their ids.
    async fn tree(pool: &PgPool) -> (i64, i64) {
        let author: i64 = sqlx::query_scalar(
            "INSERT INTO users (nickname, role, guest_token_hash)
             VALUES ('t', 'ROLE_GUEST', gen_random_uuid()::text::bytea) RETURNING id",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let root: i64 = sqlx::query_scalar(
            "INSERT INTO nodes (id, content, author_id, root_id, x, y, z)
             VALUES (nextval('nodes_id_seq'), 'root', $1, currval('nodes_id_seq'), 0, 0, 0)
             RETURNING id",
        )
        .bind(author)
        .fetch_one(pool)
        .await
        .unwrap();
        let child: i64 = sqlx::query_scalar(
            "INSERT INTO nodes (content, author_id, parent_id, root_id, x, y, z)
             VALUES ('child', $1, $2, $2, 1, 1, 1) RETURNING id",
        )
        .bind(author)
        .bind(root)
        .fetch_one(pool)
        .await
        .unwrap();
        (root, child)
    }

    fn one() -> Calls {
        Calls {
            tries: 1,
            ai_ms: 5.0,
        }
    }

    fn analysis() -> Analysis {
        Analysis {
            topic: "바다".to_owned(),
            emotion: "joy".to_owned(),
            confidence: 0.9,
            mutation_score: 0.0,
            mutation_filter: "ORIGIN",
        }
    }

    #[sqlx::test]
    async fn a_child_is_claimed_only_once_its_parent_ended(pool: PgPool) {
        let (root, child) = tree(&pool).await;
        let a = owner("pod-a", "blue");
        assert_eq!(claim_one(&pool, child, &a, LEASE).await.unwrap(), None);
        let claim = claim_one(&pool, root, &a, LEASE).await.unwrap().unwrap();
        assert_eq!((&claim.parent, claim.claims), (&None, 1));
        // Still PROCESSING: the child waits.
        assert_eq!(claim_one(&pool, child, &a, LEASE).await.unwrap(), None);
        complete(&pool, &claim, &analysis(), one())
            .await
            .unwrap()
            .unwrap();
        let child_claim = claim_one(&pool, child, &a, LEASE).await.unwrap().unwrap();
        assert_eq!(
            child_claim.parent,
            Some(ParentState {
                status: AnalysisStatus::Completed,
                topic: Some("바다".to_owned())
            })
        );
        assert_eq!(child_claim.parent_topic(), "바다");
    }

    #[sqlx::test]
    async fn a_held_claim_cannot_be_taken_and_an_expired_one_gets_a_new_token(pool: PgPool) {
        let (root, _) = tree(&pool).await;
        let first = claim_one(
            &pool,
            root,
            &owner("pod-a", "blue"),
            Duration::from_millis(200),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            claim_one(&pool, root, &owner("pod-b", "blue"), LEASE)
                .await
                .unwrap(),
            None,
            "held"
        );
        sqlx::query("UPDATE nodes SET lease_expires_at = now() - interval '1 second'")
            .execute(&pool)
            .await
            .unwrap();
        let second = claim_one(&pool, root, &owner("pod-b", "blue"), LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(first.token, second.token, "every claim gets a new token");
        assert_eq!(second.claims, 2);
        // The first worker comes back: its result is fenced off, its renewal finds nothing.
        assert_eq!(
            complete(&pool, &first, &analysis(), one()).await.unwrap(),
            None
        );
        assert_eq!(
            renew(&pool, &[(root, first.token)], LEASE).await.unwrap(),
            Vec::<i64>::new()
        );
        assert_eq!(fail(&pool, &first, "late", one()).await.unwrap(), None);
        assert_eq!(
            status_of(&pool, root).await.unwrap(),
            Some(AnalysisStatus::Processing)
        );
        // The second stores once; storing again is refused too.
        assert!(
            complete(&pool, &second, &analysis(), one())
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            complete(&pool, &second, &analysis(), one()).await.unwrap(),
            None
        );
        let outcomes: Vec<(String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT owner, outcome, error FROM analysis_attempts ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            outcomes,
            vec![
                (
                    "pod-a".into(),
                    Some("LOST".into()),
                    Some("lease expired".into())
                ),
                ("pod-b".into(), Some("COMPLETED".into()), None),
            ]
        );
    }

    #[sqlx::test]
    async fn only_the_active_colour_claims(pool: PgPool) {
        let (root, _) = tree(&pool).await;
        sqlx::query("INSERT INTO analysis_active_color (color) VALUES ('green')")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            claim_one(&pool, root, &owner("b", "blue"), LEASE)
                .await
                .unwrap(),
            None
        );
        assert!(
            claim_ready(&pool, &owner("b", "blue"), LEASE, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            claim_ready(&pool, &owner("g", "green"), LEASE, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// A listed claim takes, in one statement, exactly the listed nodes a single claim would:
    /// ready roots and children of ended parents, each under a token of its own with its attempt
    /// recorded, never a child of an unfinished parent, nothing under an inactive colour, and
    /// none that another transaction holds locked (skipped, not waited for).
    #[sqlx::test]
    async fn a_listed_claim_takes_only_the_ready_nodes_of_the_list(pool: PgPool) {
        let (root, child) = tree(&pool).await;
        let (other_root, other_child) = tree(&pool).await;
        let (unlisted, _) = tree(&pool).await;
        let a = owner("a", "blue");
        let ids = [root, child, other_root, other_child];
        let claims = claim_listed(&pool, &ids, &a, LEASE).await.unwrap();
        let taken: Vec<i64> = claims.iter().map(|c| c.node_id).collect();
        assert_eq!(
            taken,
            vec![root, other_root],
            "children wait for their parents"
        );
        assert_ne!(claims[0].token, claims[1].token);
        let recorded: Vec<(i64, i64, String)> =
            sqlx::query_as("SELECT node_id, token, owner FROM analysis_attempts ORDER BY node_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            recorded,
            claims
                .iter()
                .map(|c| (c.node_id, c.token, "a".to_owned()))
                .collect::<Vec<_>>()
        );
        let status: String = sqlx::query_scalar("SELECT analysis_status FROM nodes WHERE id = $1")
            .bind(unlisted)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(status, "PENDING", "an unlisted node is left alone");
        // Listed again: nothing, they are held.
        assert!(
            claim_listed(&pool, &ids, &a, LEASE)
                .await
                .unwrap()
                .is_empty()
        );

        // Once the parent ended, its child is taken; a row locked elsewhere is skipped at once.
        complete(&pool, &claims[0], &analysis(), one())
            .await
            .unwrap()
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE")
            .bind(unlisted)
            .execute(&mut *tx)
            .await
            .unwrap();
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            claim_listed(&pool, &[child, other_child, unlisted], &a, LEASE),
        )
        .await
        .expect("a locked row is skipped, not waited for")
        .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(
            next.iter().map(|c| c.node_id).collect::<Vec<_>>(),
            vec![child]
        );
        assert_eq!(next[0].parent_topic(), "바다");

        // Another colour active: nothing for blue.
        sqlx::query("INSERT INTO analysis_active_color (color) VALUES ('green')")
            .execute(&pool)
            .await
            .unwrap();
        assert!(
            claim_listed(&pool, &[unlisted], &a, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Two sweepers at once never take the same node: the second skips the rows the first has
    /// locked and takes the next ones.
    #[sqlx::test]
    async fn concurrent_sweeps_take_different_nodes(pool: PgPool) {
        for _ in 0..3 {
            tree(&pool).await;
        }
        let mut tx = pool.begin().await.unwrap();
        let first = claim_ready(&mut *tx, &owner("a", "blue"), LEASE, 2)
            .await
            .unwrap();
        let second = claim_ready(&pool, &owner("b", "blue"), LEASE, 10)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let a: Vec<i64> = first.iter().map(|c| c.node_id).collect();
        let b: Vec<i64> = second.iter().map(|c| c.node_id).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 1, "only the third root is left: {b:?}");
        assert!(!a.contains(&b[0]));
        // Children wait for their parents even in a sweep.
        assert!(
            claim_ready(&pool, &owner("c", "blue"), LEASE, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[sqlx::test]
    async fn handing_back_and_recovering_return_nodes_to_pending(pool: PgPool) {
        let (root, _) = tree(&pool).await;
        let (other, _) = tree(&pool).await;
        let a = claim_one(&pool, root, &owner("a", "blue"), LEASE)
            .await
            .unwrap()
            .unwrap();
        let held = Held {
            node_id: root,
            token: a.token,
            calls: Calls {
                tries: 2,
                ai_ms: 10.0,
            },
        };
        assert_eq!(give_back(&pool, &[held], "drained").await.unwrap(), 1);
        assert_eq!(
            give_back(&pool, &[held], "again").await.unwrap(),
            0,
            "fenced"
        );
        assert_eq!(
            status_of(&pool, root).await.unwrap(),
            Some(AnalysisStatus::Pending)
        );
        claim_one(&pool, root, &owner("a", "blue"), LEASE)
            .await
            .unwrap()
            .unwrap();
        claim_one(&pool, other, &owner("g", "green"), LEASE)
            .await
            .unwrap()
            .unwrap();
        let r = recover_color(&pool, "blue").await.unwrap();
        assert_eq!(
            r,
            Recovered {
                returned: 1,
                still_processing: 0
            }
        );
        assert_eq!(
            status_of(&pool, root).await.unwrap(),
            Some(AnalysisStatus::Pending)
        );
        assert_eq!(
            status_of(&pool, other).await.unwrap(),
            Some(AnalysisStatus::Processing)
        );
        let outcomes: Vec<(Option<String>, i32)> =
            sqlx::query_as("SELECT outcome, tries FROM analysis_attempts ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            outcomes,
            vec![
                (Some("RETURNED".into()), 2),
                (Some("RECOVERED".into()), 0),
                (None, 0)
            ]
        );
        assert_eq!(
            unfinished(&pool).await.unwrap(),
            Unfinished {
                pending: 3,
                processing: 1
            }
        );
    }
}
