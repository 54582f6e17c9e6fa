//! The analysis pipeline end to end, on the real PostgreSQL and Redis and a real AI server process
//! with the tiny models: nodes posted over HTTP are analysed parents first, bad input fails only
//! its own node, a silent AI server costs deadlines and not workers, and the invariants hold for a
//! soak of concurrent clients.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestServer, forest, invariants, ok,
    procs::{AiServer, run_api},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Fast timings, so that recovery paths finish within a test.
const FAST: [&str; 4] = ["--analysis-lease", "3s", "--analysis-sweep-interval", "1s"];

async fn node_row(
    pool: &PgPool,
    id: i64,
) -> (String, Option<String>, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT analysis_status, topic, mutation_filter, last_error FROM nodes WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A root, a child and a grandchild posted at once are analysed in that order; each child is
/// analysed against its parent's stored topic, and `/viz` serves the analysed nodes.
#[sqlx::test]
async fn a_posted_tree_is_analysed_parents_first(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let s = TestServer::start_with_ai(pool, &ai.url(), &FAST).await;
    let (token, _) = s.guest().await;
    let root = ok(s
        .post_node(&token, json!({"content": "Once upon a time"}))
        .await)
    .await;
    let child = ok(s
        .post_node(
            &token,
            json!({"content": "there was a girl", "parentId": root["id"]}),
        )
        .await)
    .await;
    let grandchild = ok(s
        .post_node(
            &token,
            json!({"content": "she loved the park", "parentId": child["id"]}),
        )
        .await)
    .await;
    assert_eq!(
        grandchild["analysisStatus"], "PENDING",
        "the answer never waits for the AI"
    );
    invariants::wait_all_ended(&s.pool, Duration::from_secs(30)).await;
    let ended = invariants::check(&s.pool).await;
    assert_eq!(ended.completed, 3, "{ended:?}");

    let (_, root_topic, root_filter, _) = node_row(&s.pool, root["id"].as_i64().unwrap()).await;
    assert!(root_topic.is_some_and(|t| !t.is_empty()));
    assert_eq!(root_filter.as_deref(), Some("ORIGIN"));
    let (_, _, child_filter, _) = node_row(&s.pool, child["id"].as_i64().unwrap()).await;
    assert!(
        matches!(
            child_filter.as_deref(),
            Some("CLUSTER" | "EVOLUTION" | "MUTATION")
        ),
        "{child_filter:?}"
    );

    let viz = ok(s
        .http
        .get(s.url("/api/v1/nodes/viz?x=0&y=0&z=0&range=1000"))
        .send()
        .await
        .unwrap())
    .await;
    for n in viz.as_array().unwrap() {
        assert_eq!(n["analysisStatus"], "COMPLETED", "{n}");
        assert!(n["topic"].is_string(), "{n}");
    }
    let metrics = s.metrics().await;
    for name in [
        "mutr_analysis_started_total",
        "mutr_analysis_completed_total",
        "mutr_analysis_create_to_analysed_seconds_bucket",
        "mutr_analysis_queue_depth",
        "mutr_analysis_nodes{status=\"PENDING\"}",
        "mutr_node_write_wait_seconds_bucket",
        "mutr_node_batch_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    s.stop().await;
}

/// Twenty clients build random forests of several hundred nodes at once (deep chains, wide
/// fans): every node ends COMPLETED or FAILED, and every invariant holds.
#[sqlx::test]
async fn soak_twenty_clients_growing_forests(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let s = TestServer::start_with_ai(pool, &ai.url(), &FAST).await;
    let started = Instant::now();
    let grown = forest::grow(
        vec![s.base.clone()],
        forest::Shape {
            clients: 20,
            per_client: 20,
            seed: 42,
        },
    )
    .await;
    assert_eq!(grown.ids.len(), 400);
    invariants::wait_all_ended(&s.pool, Duration::from_secs(120)).await;
    let ended = invariants::check(&s.pool).await;
    assert_eq!(ended.nodes, 400, "{ended:?}");
    assert_eq!(ended.completed, 400, "{ended:?}");
    let depth: i32 = sqlx::query_scalar(
        "WITH RECURSIVE d AS (SELECT id, 1 AS depth FROM nodes WHERE parent_id IS NULL
          UNION ALL SELECT n.id, d.depth + 1 FROM nodes n JOIN d ON n.parent_id = d.id)
         SELECT max(depth) FROM d",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let widest: i64 = sqlx::query_scalar(
        "SELECT max(c) FROM (SELECT count(*) AS c FROM nodes GROUP BY parent_id) x",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    eprintln!(
        "soak: 400 nodes, deepest chain {depth}, widest fan {widest}, all analysed in {:?}",
        started.elapsed()
    );
    assert!(depth >= 5 && widest >= 5, "the forest has chains and fans");
    s.stop().await;
}

/// Ready nodes that queue up behind busy workers are claimed many to a statement by the worker
/// loop, not one statement each, and every invariant still holds: parents before children (the
/// children are released into the same queue as their parents end), no node analysed twice, each
/// child against its parent's stored topic.
#[sqlx::test]
async fn a_backlog_is_claimed_in_batches(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    // One AI call at a time so that a queue builds, and no periodic sweep to take it first.
    let s = TestServer::start_with_ai(
        pool,
        &ai.url(),
        &[
            "--analysis-concurrency",
            "1",
            "--analysis-sweep-interval",
            "1h",
        ],
    )
    .await;
    let (token, _) = s.guest().await;
    let roots = futures::future::join_all(
        (0..10).map(|i| s.post_node(&token, json!({"content": format!("backlog root {i}")}))),
    )
    .await;
    let mut root_ids = Vec::new();
    for r in roots {
        root_ids.push(ok(r).await["id"].as_i64().unwrap());
    }
    let children = futures::future::join_all(root_ids.iter().flat_map(|&parent| {
        (0..2).map(move |i| (parent, i)).map(|(parent, i)| {
            s.post_node(
                &token,
                json!({"content": format!("child {i} of {parent}"), "parentId": parent}),
            )
        })
    }))
    .await;
    for r in children {
        ok(r).await;
    }
    invariants::wait_all_ended(&s.pool, Duration::from_secs(60)).await;
    let ended = invariants::check(&s.pool).await;
    assert_eq!(ended.completed, 30, "{ended:?}");
    let metrics = s.metrics().await;
    let ahead: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mutr_analysis_claimed_ahead_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        ahead >= 10.0,
        "only {ahead} of 30 nodes were claimed in batches, though they queued behind one worker"
    );
    s.stop().await;
}

/// A node the AI server refuses (INVALID_ARGUMENT: longer than it accepts) ends FAILED with the
/// reason at once, without retries, and its children are released and analysed.
#[sqlx::test]
async fn a_refused_node_fails_with_the_reason_and_releases_its_children(pool: PgPool) {
    let ai = AiServer::start(&["--max-content-chars", "100", "--max-context-chars", "2000"]).await;
    let s = TestServer::start_with_ai(pool, &ai.url(), &FAST).await;
    let (token, _) = s.guest().await;
    let long = "이야기 ".repeat(60);
    let parent = ok(s.post_node(&token, json!({"content": long})).await).await;
    let child = ok(s
        .post_node(
            &token,
            json!({"content": "짧은 답", "parentId": parent["id"]}),
        )
        .await)
    .await;
    invariants::wait_all_ended(&s.pool, Duration::from_secs(30)).await;
    invariants::check(&s.pool).await;
    let (status, topic, _, error) = node_row(&s.pool, parent["id"].as_i64().unwrap()).await;
    assert_eq!(status, "FAILED");
    assert_eq!(topic, None);
    let error = error.unwrap();
    assert!(
        error.contains("INVALID_ARGUMENT") && error.contains("content"),
        "{error}"
    );
    let tries: i32 = sqlx::query_scalar("SELECT tries FROM analysis_attempts WHERE node_id = $1")
        .bind(parent["id"].as_i64().unwrap())
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(tries, 1, "a refusal is not retried");
    let (status, topic, _, _) = node_row(&s.pool, child["id"].as_i64().unwrap()).await;
    assert_eq!(status, "COMPLETED");
    assert!(topic.is_some());
    s.stop().await;
}

/// An AI server that stops answering (SIGSTOP) costs one deadline per try, not a stuck worker:
/// the claim ends after its tries, goes back to PENDING (the server is down, which says nothing
/// about the node), and once the server answers again every node is analysed.
#[sqlx::test]
async fn a_silent_ai_server_costs_deadlines_not_workers(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let s = TestServer::start_with_ai(
        pool,
        &ai.url(),
        &[
            "--analysis-timeout",
            "500ms",
            "--analysis-max-tries",
            "2",
            "--analysis-backoff",
            "100ms",
            "--analysis-concurrency",
            "1",
            "--ai-health-interval",
            "300ms",
            "--analysis-sweep-interval",
            "500ms",
        ],
    )
    .await;
    let (token, _) = s.guest().await;
    ai.pause();
    let started = Instant::now();
    let first = ok(s.post_node(&token, json!({"content": "누구 없나요"})).await).await;
    let id = first["id"].as_i64().unwrap();
    common::wait_until("the first claim to end", Duration::from_secs(10), || {
        let pool = s.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM analysis_attempts WHERE node_id = $1 AND outcome IS NOT NULL",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
                > 0
        }
    })
    .await;
    let took = started.elapsed();
    let (outcome, tries, error): (String, i32, String) = sqlx::query_as(
        "SELECT outcome, tries, error FROM analysis_attempts WHERE node_id = $1 ORDER BY id LIMIT 1",
    )
    .bind(id)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!((outcome.as_str(), tries), ("RETURNED", 2), "{error}");
    assert!(error.contains("DEADLINE_EXCEEDED"), "{error}");
    // Two deadlines of 0.5 s and one short backoff, not a worker stuck for ever.
    assert!(took < Duration::from_secs(5), "the claim took {took:?}");
    // The only worker is free again: once the server answers, this node and a new one end.
    let second = ok(s.post_node(&token, json!({"content": "다시 왔어요"})).await).await;
    ai.resume();
    invariants::wait_all_ended(&s.pool, Duration::from_secs(30)).await;
    invariants::check(&s.pool).await;
    for n in [&first, &second] {
        let (status, _, _, _) = node_row(&s.pool, n["id"].as_i64().unwrap()).await;
        assert_eq!(status, "COMPLETED");
    }
    s.stop().await;
}

/// While the AI server is down, claims stop (the node in flight goes back to PENDING once, and no
/// claim is taken meanwhile); once it is back, the node is analysed.
#[sqlx::test]
async fn claims_pause_while_the_ai_server_is_down(pool: PgPool) {
    let mut ai = AiServer::start(&[]).await;
    let s = TestServer::start_with_ai(
        pool,
        &ai.url(),
        &[
            "--analysis-timeout",
            "300ms",
            "--analysis-max-tries",
            "1",
            "--analysis-sweep-interval",
            "200ms",
            "--ai-health-interval",
            "200ms",
        ],
    )
    .await;
    let (token, _) = s.guest().await;
    ai.kill();
    let node = ok(s
        .post_node(&token, json!({"content": "대답 없는 노드"}))
        .await)
    .await;
    let id = node["id"].as_i64().unwrap();
    let attempts = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM analysis_attempts WHERE node_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    // The node's two ways in (the hand-off and the sweep) may each be past their health check
    // when the outage is first seen, so up to two claims are handed back at once; after that none
    // is taken. A pipeline that kept claiming would take one per 200 ms sweep (about ten here).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let while_down = attempts(s.pool.clone()).await;
    assert!(
        while_down <= 2,
        "{while_down} claims while the AI server was down"
    );
    let (status, _, _, _) = node_row(&s.pool, id).await;
    assert_eq!(status, "PENDING");
    ai.restart().await;
    invariants::wait_all_ended(&s.pool, Duration::from_secs(30)).await;
    invariants::check(&s.pool).await;
    let (status, _, _, _) = node_row(&s.pool, id).await;
    assert_eq!(status, "COMPLETED");
    s.stop().await;
}

/// A node whose claims keep ending without a result (its pods died, or the AI server went down
/// each time) is not tried for ever: the claim after the last allowed one stores it FAILED.
#[sqlx::test]
async fn a_node_claimed_too_often_fails_with_the_reason(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let s = TestServer::start_with_ai(
        pool,
        &ai.url(),
        &[&FAST[..], &["--analysis-max-claims", "3"]].concat(),
    )
    .await;
    let (token, _) = s.guest().await;
    // Stored while the pipeline is busy elsewhere: mark it as claimed three times already.
    let node = ok(s.post_node(&token, json!({"content": "세 번째"})).await).await;
    let id = node["id"].as_i64().unwrap();
    invariants::wait_all_ended(&s.pool, Duration::from_secs(30)).await;
    sqlx::query(
        "INSERT INTO nodes (id, content, author_id, root_id, x, y, z, attempts)
         SELECT nextval('nodes_id_seq'), 'again', author_id, currval('nodes_id_seq'), 0, 0, 0, 3
         FROM nodes WHERE id = $1",
    )
    .bind(id)
    .execute(&s.pool)
    .await
    .unwrap();
    invariants::wait_all_ended(&s.pool, Duration::from_secs(30)).await;
    invariants::check(&s.pool).await;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT analysis_status, last_error FROM nodes WHERE content = 'again'")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(status, "FAILED");
    assert!(error.unwrap().contains("gave up after 3 claims"));
    s.stop().await;
}

/// `mutr-api activate` records the colour and `recover` returns a colour's claims to PENDING,
/// each printing one JSON line; `recover` refuses the active colour and bad names.
#[sqlx::test]
async fn activate_and_recover_commands(pool: PgPool) {
    let url = common::database_url(&pool);
    let env = [("DATABASE_URL", url.as_str())];
    let (status, out, err) = run_api(&["activate", "--color", "green"], &env);
    assert!(status.success(), "{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line, json!({"activeColor": "green", "previousColor": null}));

    // Two nodes claimed by blue, one by green.
    let author: i64 = sqlx::query_scalar(
        "INSERT INTO users (nickname, role, guest_token_hash) VALUES ('t', 'ROLE_GUEST', '\\x01') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    for color in ["blue", "blue", "green"] {
        sqlx::query(
            "WITH n AS (INSERT INTO nodes (id, content, author_id, root_id, x, y, z, analysis_status,
                                           claim_owner, claim_color, lease_expires_at, claim_token)
                        VALUES (nextval('nodes_id_seq'), 'x', $1, currval('nodes_id_seq'), 0, 0, 0,
                                'PROCESSING', 'pod', $2, now() + interval '1 hour',
                                nextval('analysis_claim_token'))
                        RETURNING id, claim_token)
             INSERT INTO analysis_attempts (node_id, owner, color, token)
             SELECT id, 'pod', $2, claim_token FROM n",
        )
        .bind(author)
        .bind(color)
        .execute(&pool)
        .await
        .unwrap();
    }
    let (status, out, err) = run_api(&["recover", "--from-color", "blue"], &env);
    assert!(status.success(), "{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        line,
        json!({"fromColor": "blue", "returnedToPending": 2, "stillProcessing": 0})
    );
    let outcomes: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT color, outcome FROM analysis_attempts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        vec![
            ("blue".into(), Some("RECOVERED".into())),
            ("blue".into(), Some("RECOVERED".into())),
            ("green".into(), None),
        ]
    );

    let (status, _, err) = run_api(&["recover", "--from-color", "green"], &env);
    assert!(!status.success(), "recovering the active colour is refused");
    assert!(err.contains("active colour"), "{err}");
    let (status, _, err) = run_api(&["recover", "--from-color", "Green; DROP"], &env);
    assert!(!status.success());
    assert!(err.contains("colour"), "{err}");
    let (status, _, err) = run_api(
        &["recover", "--from-color", "blue"],
        &[("DATABASE_URL", "postgres://nobody:hunter2@127.0.0.1:1/none")],
    );
    assert!(!status.success(), "no database: non-zero exit");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

/// Only the active colour claims: with green active, a blue pod serves HTTP and push but every
/// analysis is done by the green pod; when blue becomes active again, it takes over.
#[sqlx::test]
async fn only_the_active_colour_claims(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let url = common::database_url(&pool);
    let env = [("DATABASE_URL", url.as_str())];
    let (status, _, err) = run_api(&["activate", "--color", "green"], &env);
    assert!(status.success(), "{err}");
    let blue = TestServer::start_with_ai(
        pool.clone(),
        &ai.url(),
        &[&FAST[..], &["--color", "blue", "--pod-name", "blue-0"]].concat(),
    )
    .await;
    let green = TestServer::start_with_ai(
        pool.clone(),
        &ai.url(),
        &[&FAST[..], &["--color", "green", "--pod-name", "green-0"]].concat(),
    )
    .await;
    let (token, _) = blue.guest().await;
    let mut parent = None;
    for i in 0..10 {
        let n = ok(blue
            .post_node(
                &token,
                json!({"content": format!("파랑에서 {i}"), "parentId": parent}),
            )
            .await)
        .await;
        parent = Some(n["id"].clone());
    }
    invariants::wait_all_ended(&pool, Duration::from_secs(30)).await;
    invariants::check(&pool).await;
    let colors: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT color FROM analysis_attempts ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(colors, vec!["green"]);

    let (status, _, err) = run_api(&["activate", "--color", "blue"], &env);
    assert!(status.success(), "{err}");
    // Within two seconds every pod follows the record.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = ok(green
        .post_node(&token, json!({"content": "초록에서"}))
        .await)
    .await;
    invariants::wait_all_ended(&pool, Duration::from_secs(30)).await;
    let color: String =
        sqlx::query_scalar("SELECT color FROM analysis_attempts WHERE node_id = $1")
            .bind(n["id"].as_i64().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(color, "blue");
    blue.stop().await;
    green.stop().await;
}

/// Bad JSON and unknown parents are refused in the envelope before anything reaches the pipeline.
#[sqlx::test]
async fn refused_requests_never_reach_the_pipeline(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let (token, _) = s.guest().await;
    let r = s
        .post_node(&token, json!({"content": "고아", "parentId": 999_999}))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM analysis_attempts")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0);
    s.stop().await;
}

/// A claim is renewed while its analysis runs longer than the lease: another pod sweeping every
/// 200 ms never takes it, and the node is analysed once.
#[sqlx::test]
async fn a_long_analysis_keeps_its_claim(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let other_ai = AiServer::start(&[]).await;
    let flags = [
        "--analysis-lease",
        "1s",
        "--analysis-sweep-interval",
        "200ms",
        "--analysis-timeout",
        "20s",
        "--ai-health-interval",
        "30s",
    ];
    let a = TestServer::start_with_ai(
        pool.clone(),
        &ai.url(),
        &[&flags[..], &["--pod-name", "slow-pod"]].concat(),
    )
    .await;
    let (token, _) = a.guest().await;
    ai.pause();
    let node = ok(a
        .post_node(&token, json!({"content": "오래 걸리는 분석"}))
        .await)
    .await;
    let id = node["id"].as_i64().unwrap();
    common::wait_until(
        "the slow pod to claim the node",
        Duration::from_secs(10),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM nodes WHERE id = $1 AND analysis_status = 'PROCESSING'",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
                    == 1
            }
        },
    )
    .await;
    // A second pod that would take any claim whose lease expired.
    let b = TestServer::start_with_ai(
        pool.clone(),
        &other_ai.url(),
        &[&flags[..], &["--pod-name", "thief"]].concat(),
    )
    .await;
    // Three leases long.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ai.resume();
    invariants::wait_all_ended(&pool, Duration::from_secs(30)).await;
    invariants::check(&pool).await;
    let attempts: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT owner, outcome FROM analysis_attempts WHERE node_id = $1")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        attempts,
        vec![("slow-pod".to_owned(), Some("COMPLETED".to_owned()))]
    );
    a.stop().await;
    b.stop().await;
}
