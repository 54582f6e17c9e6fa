//! Faults injected into real processes while clients grow forests through the HTTP API: an API
//! process killed with SIGKILL and restarted, Redis flushed, Redis stopped for ten seconds, the AI
//! server killed and restarted, PostgreSQL restarted, and a blue/green handover on one machine.
//! After each, every invariant of the pipeline is checked from SQL and `analysis_attempts`.
//!
//! Each test starts its own processes (`mutr-api serve` and `mutr-ai-server serve` binaries) and,
//! where it breaks one, its own Redis or PostgreSQL. `.config/nextest.toml` runs them one at a
//! time: together they would only measure the two cores of the CI machine.

mod common;

use std::time::{Duration, Instant};

use common::{
    forest::{self, Shape},
    invariants,
    procs::{AiServer, ApiProcess, run_api},
    services::{PrivatePostgres, PrivateRedis},
};
use sqlx::PgPool;

/// The environment of one API process, as a pod's: fast leases and sweeps so that recovery
/// happens within a test.
struct Pod {
    database: String,
    redis: String,
    ai: String,
    color: &'static str,
    name: String,
    prefix: String,
    channel: String,
}

impl Pod {
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("DATABASE_URL", self.database.as_str()),
            ("REDIS_URL", self.redis.as_str()),
            ("MUTR_AI_URL", self.ai.as_str()),
            ("MUTR_COLOR", self.color),
            ("MUTR_POD_NAME", self.name.as_str()),
            ("MUTR_ANALYSIS_REDIS_PREFIX", self.prefix.as_str()),
            ("MUTR_REALTIME_REDIS_CHANNEL", self.channel.as_str()),
            ("MUTR_WRITE_RATE_PER_SEC", "0"),
            ("MUTR_ANALYSIS_LEASE", "2s"),
            ("MUTR_ANALYSIS_SWEEP_INTERVAL", "500ms"),
            ("MUTR_AI_HEALTH_INTERVAL", "500ms"),
            ("MUTR_ANALYSIS_TIMEOUT", "5s"),
            ("MUTR_DRAIN_TIMEOUT", "10s"),
            ("MUTR_DB_ACQUIRE_TIMEOUT", "2s"),
        ]
    }

    async fn start(&self) -> ApiProcess {
        ApiProcess::start(&self.env()).await
    }
}

/// Pods of one installation: shared database, Redis, key prefix and push channel.
fn pods(database: &str, redis: &str) -> impl Fn(&str, &'static str, &str) -> Pod + use<> {
    let prefix = common::unique("analysis");
    let channel = common::unique("events");
    let (database, redis) = (database.to_owned(), redis.to_owned());
    move |ai: &str, color: &'static str, name: &str| Pod {
        database: database.clone(),
        redis: redis.clone(),
        ai: ai.to_owned(),
        color,
        name: name.to_owned(),
        prefix: prefix.clone(),
        channel: channel.clone(),
    }
}

const SHAPE: Shape = Shape {
    clients: 8,
    per_client: 20,
    seed: 7,
};

/// Waits until at least `n` nodes are stored (the fault lands mid-run).
async fn stored_at_least(pool: &PgPool, n: i64) {
    common::wait_until("nodes to be stored", Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM nodes")
            .fetch_one(pool)
            .await
            .unwrap_or(0)
            >= n
    })
    .await;
}

async fn finish(pool: &PgPool, grow: tokio::task::JoinHandle<forest::Grown>) -> invariants::Ended {
    let grown = grow.await.expect("clients");
    invariants::wait_all_ended(pool, Duration::from_secs(120)).await;
    let ended = invariants::check(pool).await;
    assert!(ended.nodes >= grown.ids.len() as i64, "{ended:?}");
    eprintln!("{ended:?}, {} requests retried", grown.retried);
    ended
}

#[sqlx::test]
async fn an_api_process_killed_mid_run_loses_nothing(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let pod = pods(&common::database_url(&pool), &common::redis_url());
    let mut a = pod(&ai.url(), "blue", "blue-a").start().await;
    let b = pod(&ai.url(), "blue", "blue-b").start().await;
    let grow = tokio::spawn(forest::grow(vec![a.base(), b.base()], SHAPE));
    stored_at_least(&pool, 50).await;
    common::wait_until("the doomed pod to hold claims", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM nodes WHERE analysis_status = 'PROCESSING' AND claim_owner = 'blue-a'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
            > 0
    })
    .await;
    a.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.restart().await;
    let ended = finish(&pool, grow).await;
    assert_eq!(ended.failed, 0, "{ended:?}");
    let lost: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM analysis_attempts WHERE owner = 'blue-a' AND outcome = 'LOST'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        lost > 0,
        "the killed pod's claims expired and were taken by others"
    );
    drop(b);
}

#[sqlx::test]
async fn redis_flushed_mid_run_loses_nothing(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let redis = PrivateRedis::start().await;
    let pod = pods(&common::database_url(&pool), &redis.url());
    let a = pod(&ai.url(), "blue", "blue-a").start().await;
    let b = pod(&ai.url(), "blue", "blue-b").start().await;
    let grow = tokio::spawn(forest::grow(vec![a.base(), b.base()], SHAPE));
    stored_at_least(&pool, 60).await;
    redis.flushall().await;
    stored_at_least(&pool, 100).await;
    redis.flushall().await;
    let ended = finish(&pool, grow).await;
    assert_eq!(ended.failed, 0, "{ended:?}");
}

#[sqlx::test]
async fn redis_stopped_for_ten_seconds_loses_nothing(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let mut redis = PrivateRedis::start().await;
    let pod = pods(&common::database_url(&pool), &redis.url());
    let a = pod(&ai.url(), "blue", "blue-a").start().await;
    let grow = tokio::spawn(forest::grow(vec![a.base()], SHAPE));
    stored_at_least(&pool, 40).await;
    redis.kill();
    let down = Instant::now();
    // The outage itself lasts ten seconds; the clients keep posting through it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM nodes WHERE analysis_status = 'COMPLETED'
           AND updated_at > now() - make_interval(secs => $1)",
    )
    .bind(down.elapsed().as_secs_f64())
    .fetch_one(&pool)
    .await
    .unwrap();
    redis.restart().await;
    let ended = finish(&pool, grow).await;
    assert_eq!(ended.failed, 0, "{ended:?}");
    assert!(
        during > 0,
        "analyses went on from PostgreSQL alone while Redis was down"
    );
}

#[sqlx::test]
async fn the_ai_server_killed_and_restarted_fails_no_node(pool: PgPool) {
    let mut ai = AiServer::start(&[]).await;
    let pod = pods(&common::database_url(&pool), &common::redis_url());
    let a = pod(&ai.url(), "blue", "blue-a").start().await;
    let grow = tokio::spawn(forest::grow(vec![a.base()], SHAPE));
    stored_at_least(&pool, 40).await;
    ai.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ai.restart().await;
    let ended = finish(&pool, grow).await;
    assert_eq!(
        ended.failed, 0,
        "an outage of the AI server fails no node: {ended:?}"
    );
}

#[tokio::test]
async fn postgresql_restarted_mid_run_loses_nothing() {
    let pg = PrivatePostgres::start().await;
    let pool = pg.migrated_pool().await;
    let ai = AiServer::start(&[]).await;
    let pod = pods(&pg.url(), &common::redis_url());
    let a = pod(&ai.url(), "blue", "blue-a").start().await;
    let grow = tokio::spawn(forest::grow(vec![a.base()], SHAPE));
    stored_at_least(&pool, 40).await;
    pg.crash();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again().await;
    let ended = finish(&pool, grow).await;
    assert_eq!(ended.failed, 0, "{ended:?}");
    drop(a);
}

/// The operator's switchover on one machine: blue works; green starts with its own AI server;
/// `activate --color green`; blue gets SIGTERM and drains (exit 0); `recover --from-color blue`;
/// green finishes everything, and nothing of blue is left PROCESSING.
#[sqlx::test]
async fn a_blue_green_handover_loses_nothing(pool: PgPool) {
    let database = common::database_url(&pool);
    let env = [("DATABASE_URL", database.as_str())];
    let (status, _, err) = run_api(&["activate", "--color", "blue"], &env);
    assert!(status.success(), "{err}");
    let ai_blue = AiServer::start(&[]).await;
    let pod = pods(&database, &common::redis_url());
    let mut blue = pod(&ai_blue.url(), "blue", "blue-0").start().await;
    // Blue's clients store their forest; blue analyses it, and has claims in flight when green
    // comes.
    let first = forest::grow(vec![blue.base()], SHAPE).await;
    common::wait_until(
        "blue to have analysed some",
        Duration::from_secs(60),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM nodes WHERE analysis_status = 'COMPLETED'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                >= 20
        },
    )
    .await;

    let ai_green = AiServer::start(&[]).await;
    let green = pod(&ai_green.url(), "green", "green-0").start().await;
    let (status, out, err) = run_api(&["activate", "--color", "green"], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains(r#""activeColor":"green""#), "{out}");
    // The stable Service now sends clients to green; blue gets SIGTERM after a short delay.
    let grow = tokio::spawn(forest::grow(
        vec![green.base()],
        Shape {
            clients: 4,
            per_client: 10,
            seed: 8,
        },
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exit = blue.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "blue drained and exited 0: {exit}");
    let (status, out, err) = run_api(&["recover", "--from-color", "blue"], &env);
    assert!(status.success(), "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["stillProcessing"], 0, "{summary}");
    assert_eq!(first.ids.len(), 160);
    let ended = finish(&pool, grow).await;
    assert_eq!(ended.failed, 0, "{ended:?}");
    let after: Vec<(String, i64)> = sqlx::query_as(
        "SELECT color, count(*) FROM analysis_attempts
         WHERE started_at > (SELECT updated_at + interval '1 second' FROM analysis_active_color)
         GROUP BY color ORDER BY color",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        after.iter().all(|(c, _)| c == "green"),
        "only green claims after the switch: {after:?}"
    );
    let blue_left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM nodes WHERE analysis_status = 'PROCESSING' AND claim_color = 'blue'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(blue_left, 0);
    drop(green);
}

/// SIGTERM while an analysis is in flight: readiness fails, claiming stops, the call in flight
/// finishes when it can within the drain timeout; when it cannot, its claim goes back to PENDING.
/// Either way the process exits 0 within the drain timeout, and nothing stays claimed.
#[sqlx::test]
async fn sigterm_drains_within_the_timeout(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let database = common::database_url(&pool);
    let pod = pods(&database, &common::redis_url());
    let health_slow = [
        ("MUTR_AI_HEALTH_INTERVAL", "30s"),
        ("MUTR_DRAIN_TIMEOUT", "2s"),
    ];
    let start = |name: &'static str| {
        let p = pod(&ai.url(), "blue", name);
        async move {
            let mut env = p.env();
            env.extend(health_slow);
            ApiProcess::start(&env).await
        }
    };
    let processing = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM nodes WHERE analysis_status = 'PROCESSING' AND claim_owner = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        }
    };
    let post = |base: String| async move {
        let http = reqwest::Client::new();
        let token: serde_json::Value = http
            .post(format!("{base}/api/v1/auth/guest"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = http
            .post(format!("{base}/api/v1/nodes"))
            .header(
                "X-Guest-Token",
                token["data"]["guestToken"].as_str().unwrap(),
            )
            .json(&serde_json::json!({"content": "drain me"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    };

    // The call finishes within the drain timeout: the node is stored.
    let mut finishing = start("finishing").await;
    ai.pause();
    post(finishing.base()).await;
    common::wait_until("a claim", Duration::from_secs(10), || {
        processing("finishing")
    })
    .await;
    let resume = tokio::spawn({
        let pid = ai.pid();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            AiServer::resume_pid(pid);
        }
    });
    let started = Instant::now();
    let exit = finishing.terminate(Duration::from_secs(10)).await;
    resume.await.unwrap();
    assert!(exit.success(), "{exit}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM nodes WHERE analysis_status = 'COMPLETED' AND claim_owner = 'finishing'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        completed, 1,
        "the analysis in flight finished during the drain"
    );

    // The call cannot finish in time: the claim is handed back.
    let mut stuck = start("stuck").await;
    ai.pause();
    post(stuck.base()).await;
    common::wait_until("a claim", Duration::from_secs(10), || processing("stuck")).await;
    let started = Instant::now();
    let exit = stuck.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let (status, outcome, error): (String, String, String) = sqlx::query_as(
        "SELECT n.analysis_status, a.outcome, a.error FROM nodes n
         JOIN analysis_attempts a ON a.node_id = n.id WHERE a.owner = 'stuck'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), outcome.as_str(), error.as_str()),
        ("PENDING", "RETURNED", "drained")
    );
    ai.resume();
}
