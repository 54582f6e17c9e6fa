//! The pipeline's invariants (DESIGN.md), read from `nodes` and `analysis_attempts`: every node
//! ended; none analysed before its parent ended; none completed twice; each child was analysed
//! against its parent's stored topic; no attempt left open.

use std::time::Duration;

use sqlx::PgPool;

/// What a finished run looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub nodes: i64,
    pub completed: i64,
    pub failed: i64,
}

/// Counts nodes that have not ended yet.
pub async fn unfinished(pool: &PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM nodes WHERE analysis_status NOT IN ('COMPLETED', 'FAILED')",
    )
    .fetch_one(pool)
    .await
    .expect("count unfinished")
}

/// Waits until every node has ended, failing after `limit` with what is left.
pub async fn wait_all_ended(pool: &PgPool, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = unfinished(pool).await;
        if left == 0 {
            return;
        }
        if std::time::Instant::now() > deadline {
            let rows: Vec<(i64, String, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT id, analysis_status, claim_color, last_error FROM nodes
                 WHERE analysis_status NOT IN ('COMPLETED', 'FAILED') ORDER BY id LIMIT 20",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            panic!("{left} nodes have not ended after {limit:?}, e.g. {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn violations(pool: &PgPool, what: &str, sql: &'static str) {
    let rows: Vec<(i64,)> = sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("checking {what}: {e}"));
    assert!(
        rows.is_empty(),
        "invariant broken: {what}; nodes {:?}",
        rows.iter().map(|r| r.0).take(20).collect::<Vec<_>>()
    );
}

/// Checks every invariant; panics with the offending nodes. Call once every node has ended.
pub async fn check(pool: &PgPool) -> Ended {
    violations(
        pool,
        "every node ends COMPLETED or FAILED",
        "SELECT id FROM nodes WHERE analysis_status NOT IN ('COMPLETED', 'FAILED')",
    )
    .await;
    violations(
        pool,
        "each ended node ended through exactly one attempt (none completed twice)",
        "SELECT n.id FROM nodes n
         LEFT JOIN analysis_attempts a ON a.node_id = n.id AND a.outcome IN ('COMPLETED', 'FAILED')
         GROUP BY n.id, n.analysis_status
         HAVING count(a.id) <> 1
             OR max(a.outcome) <> n.analysis_status",
    )
    .await;
    violations(
        pool,
        "a child is claimed only once its parent ended",
        "SELECT a.node_id FROM analysis_attempts a JOIN nodes n ON n.id = a.node_id
         WHERE n.parent_id IS NOT NULL
           AND (a.parent_status IS NULL OR a.parent_status NOT IN ('COMPLETED', 'FAILED'))",
    )
    .await;
    violations(
        pool,
        "no child analysed before its parent's result was stored",
        "SELECT a.node_id FROM analysis_attempts a
         JOIN nodes n ON n.id = a.node_id
         JOIN analysis_attempts pe ON pe.node_id = n.parent_id
              AND pe.outcome IN ('COMPLETED', 'FAILED')
         WHERE a.started_at < pe.finished_at",
    )
    .await;
    violations(
        pool,
        "each child was analysed against its parent's stored topic",
        "SELECT a.node_id FROM analysis_attempts a
         JOIN nodes n ON n.id = a.node_id
         JOIN nodes p ON p.id = n.parent_id
         WHERE a.outcome IN ('COMPLETED', 'FAILED')
           AND a.parent_topic IS DISTINCT FROM p.topic",
    )
    .await;
    violations(
        pool,
        "a completed node has a topic and one of the seven emotions",
        "SELECT id FROM nodes WHERE analysis_status = 'COMPLETED'
           AND (topic IS NULL OR emotion NOT IN
                ('joy', 'embarrassed', 'anger', 'anxiety', 'hurt', 'sadness', 'neutral')
                OR mutation_filter IS NULL OR mutation_score IS NULL)",
    )
    .await;
    violations(
        pool,
        "no attempt is left open",
        "SELECT node_id FROM analysis_attempts WHERE finished_at IS NULL",
    )
    .await;
    let (nodes, completed, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE analysis_status = 'COMPLETED'),
                count(*) FILTER (WHERE analysis_status = 'FAILED')
         FROM nodes",
    )
    .fetch_one(pool)
    .await
    .expect("counts");
    if failed > 0 {
        let reasons: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT id, last_error FROM nodes WHERE analysis_status = 'FAILED' ORDER BY id LIMIT 10",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        eprintln!("failed nodes: {reasons:?}");
        let attempts: Vec<(String, Option<String>, Option<String>, i32)> = sqlx::query_as(
            "SELECT owner, outcome, error, tries FROM analysis_attempts WHERE node_id = $1 ORDER BY id",
        )
        .bind(reasons[0].0)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        eprintln!("attempts of node {}: {attempts:?}", reasons[0].0);
    }
    Ended {
        nodes,
        completed,
        failed,
    }
}
