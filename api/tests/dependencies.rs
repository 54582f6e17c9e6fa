//! Each shared dependency down and back (issue 15): the pod stays ready and keeps serving what it
//! can, reports the outage in `/readyz`'s body and in metrics, answers the rest with the
//! envelope's 503, and recovers by itself. Also the write limit every replica shares through
//! Redis, and its per-replica fallback while Redis is down.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestServer, error, ok,
    procs::AiServer,
    serve_args,
    services::{PrivatePostgres, PrivateRedis},
};
use mutr_api::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

/// `/readyz`: (status, body).
async fn readyz(s: &TestServer) -> (StatusCode, Value) {
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// Polls `/readyz` until `field` of its data reads `want` (it must stay 200 meanwhile).
async fn wait_readyz(s: &TestServer, field: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(s).await;
        assert_eq!(status, StatusCode::OK, "readiness must not fail: {body}");
        if body["data"][field] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz {field} never became {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn viz(s: &TestServer) -> reqwest::Response {
    s.http
        .get(s.url("/api/v1/nodes/viz?x=0&y=0&z=0&range=1000"))
        .send()
        .await
        .unwrap()
}

#[sqlx::test]
async fn redis_down_and_back_the_pod_stays_ready_and_keeps_writing(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let mut redis = PrivateRedis::start().await;
    let prefix = format!("{}:", common::unique("ratelimit"));
    let mut args = serve_args(
        &pool,
        &[
            "--ai-url",
            &ai.url(),
            "--write-rate-per-sec",
            "1",
            "--write-burst",
            "3",
            "--rate-limit-redis-prefix",
            &prefix,
        ],
    );
    args.redis_url = Secret::new(redis.url());
    let s = TestServer::spawn(pool, args).await;
    s.wait_ready().await;
    wait_readyz(&s, "redis", "ok").await;
    let (token, _) = s.guest().await;
    ok(s.post_node(&token, json!({"content": "before"})).await).await;

    redis.kill();
    wait_readyz(&s, "redis", "unreachable").await;
    // Writes and reads go on; the write limit is kept by this replica alone meanwhile: one write
    // was spent through Redis, and the local bucket starts full (3), so three pass, then 429.
    let started = Instant::now();
    for i in 0..3 {
        ok(
            s.post_node(&token, json!({"content": format!("during {i}")}))
                .await,
        )
        .await;
    }
    let limited = s
        .post_node(&token, json!({"content": "one too many"}))
        .await;
    assert!(limited.headers().contains_key("retry-after"));
    error(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an outage of Redis made writes wait: {:?}",
        started.elapsed()
    );
    ok(viz(&s).await).await;
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("mutr_rate_limit_fallbacks_total"),
        "fallbacks are counted"
    );
    assert!(
        metrics.contains("mutr_dependency_up{dependency=\"redis\"} 0"),
        "the outage shows in metrics"
    );

    redis.restart().await;
    wait_readyz(&s, "redis", "ok").await;
    // The shared budget again, once the replica asks Redis anew: a new user's writes are
    // counted there (the restarted Redis started empty), three pass, then 429.
    tokio::time::sleep(mutr_api::http::rate_limit::RETRY_REDIS_AFTER).await;
    let (other, _) = s.guest().await;
    for i in 0..3 {
        ok(
            s.post_node(&other, json!({"content": format!("after {i}")}))
                .await,
        )
        .await;
    }
    error(
        s.post_node(&other, json!({"content": "after, too many"}))
            .await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = common::scan_keys(&mut conn, &format!("{prefix}*")).await;
    assert!(!keys.is_empty(), "the budget is kept in Redis again");
    s.stop().await;
}

#[tokio::test]
async fn postgresql_down_and_back_writes_get_503_and_the_pod_stays_ready() {
    let pg = PrivatePostgres::start().await;
    let pool = pg.migrated_pool().await;
    let ai = AiServer::start(&[]).await;
    let mut args = serve_args(
        &pool,
        &["--ai-url", &ai.url(), "--db-acquire-timeout", "1s"],
    );
    args.database.database_url = Secret::new(pg.url());
    let s = TestServer::spawn(pool.clone(), args).await;
    s.wait_ready().await;
    let (token, _) = s.guest().await;
    ok(s.post_node(&token, json!({"content": "before"})).await).await;

    pg.crash();
    wait_readyz(&s, "database", "unreachable").await;
    let message = error(
        s.post_node(&token, json!({"content": "during"})).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        !message.contains("postgres://"),
        "no URL in an error: {message}"
    );
    error(viz(&s).await, StatusCode::SERVICE_UNAVAILABLE).await;
    // The process answers: liveness stays up.
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );

    pg.start_again().await;
    wait_readyz(&s, "database", "ok").await;
    common::wait_until(
        "writes to succeed again",
        Duration::from_secs(30),
        || async {
            s.post_node(&token, json!({"content": "after"}))
                .await
                .status()
                == StatusCode::OK
        },
    )
    .await;
    ok(viz(&s).await).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        stored, 2,
        "the write during the outage was refused, not half-stored"
    );
    s.stop().await;
}

#[sqlx::test]
async fn the_write_limit_is_shared_by_replicas(pool: PgPool) {
    let prefix = format!("{}:", common::unique("ratelimit-shared"));
    let flags = [
        "--write-rate-per-sec",
        "1",
        "--write-burst",
        "4",
        "--rate-limit-redis-prefix",
        prefix.as_str(),
    ];
    // Both replicas use this prefix (a flag given again overrides the test default).
    let a = TestServer::spawn(pool.clone(), serve_args(&pool, &flags)).await;
    a.wait_alive().await;
    let b = TestServer::spawn(pool.clone(), serve_args(&pool, &flags)).await;
    b.wait_alive().await;
    let (token, _) = a.guest().await;
    // Four writes across both replicas spend the burst; the fifth is refused on either.
    for (i, s) in [&a, &b, &a, &b].into_iter().enumerate() {
        ok(s.post_node(&token, json!({"content": format!("w{i}")}))
            .await)
        .await;
    }
    for s in [&a, &b] {
        let r = s.post_node(&token, json!({"content": "too many"})).await;
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        error(r, StatusCode::TOO_MANY_REQUESTS).await;
    }
    a.stop().await;
    b.stop().await;
}
