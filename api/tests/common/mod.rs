//! Test helpers: the real server (`mutr_api::serve`, the wiring production runs) on
//! `127.0.0.1:0` over a test's own database, real AI server and API processes, private
//! PostgreSQL and Redis instances a test may break, and the pipeline's invariants read from SQL.

#![allow(dead_code)] // each test binary uses a different part of these helpers

pub mod forest;
pub mod invariants;
pub mod procs;
pub mod services;

use std::time::{Duration, Instant};

use clap::Parser as _;
use mutr_api::{
    ServeError,
    config::{Cli, Command, ServeArgs},
};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The URL of the database behind `pool` (a `#[sqlx::test]` database on the test server), so
/// that the server under test connects to it the way production does.
pub fn database_url(pool: &PgPool) -> String {
    let o = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("postgres")
    )
}

/// `REDIS_URL` from the environment (make test and CI export it), else the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    services::free_port()
}

/// A name no other test uses, for Redis channels and key prefixes on the shared Redis.
pub fn unique(what: &str) -> String {
    format!("mutr-test:{what}:{}:", uuid::Uuid::new_v4().simple())
}

/// The keys of the shared Redis that match `pattern`, by `SCAN` in steps of 10,000. `KEYS` walks
/// the whole keyspace in one command, which outlasts the client's response timeout when Redis
/// holds many other keys (a bench's pipeline keys, left to expire in an hour, made it 1.7
/// million); each `SCAN` step answers quickly whatever else is stored.
pub async fn scan_keys(conn: &mut impl redis::aio::ConnectionLike, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await
            .expect("SCAN answers");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Serve arguments for the database of `pool`, as the binary would parse them, plus `extra`
/// flags (later flags win). The live-push channel and the pipeline's Redis keys are the test's
/// own; the AI server is a closed port unless `extra` names one.
pub fn serve_args(pool: &PgPool, extra: &[&str]) -> ServeArgs {
    let database = database_url(pool);
    let redis = redis_url();
    let channel = unique("events");
    let prefix = unique("analysis");
    // User ids restart at 1 in every test database: each test gets write budgets of its own.
    let rate_limit = format!("{}:", unique("ratelimit"));
    let ai = format!("http://127.0.0.1:{}", closed_port());
    let mut argv = vec![
        "mutr-api",
        "serve",
        "--database-url",
        &database,
        "--redis-url",
        &redis,
        "--shutdown-grace",
        "0s",
        "--drain-timeout",
        "5s",
        "--realtime-redis-channel",
        &channel,
        "--analysis-redis-prefix",
        &prefix,
        "--rate-limit-redis-prefix",
        &rate_limit,
        "--ai-url",
        &ai,
        "--pod-name",
        "test-pod",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)
        .expect("valid test arguments")
        .command
    {
        Command::Serve(args) => *args,
        _ => unreachable!(),
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts the server over the database of `pool` with the write rate limit off, and no AI
    /// server: HTTP and the live push serve, `/readyz` says it is starting, nodes stay `PENDING`.
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, &["--write-rate-per-sec", "0"]).await
    }

    /// As [`start`](Self::start), with extra serve flags.
    pub async fn start_with(pool: PgPool, extra: &[&str]) -> Self {
        let args = serve_args(&pool, extra);
        let server = Self::spawn(pool, args).await;
        server.wait_alive().await;
        server
    }

    /// Starts the server with the AI server at `ai_url` and waits until it is ready (the AI
    /// server answered SERVING).
    pub async fn start_with_ai(pool: PgPool, ai_url: &str, extra: &[&str]) -> Self {
        let mut flags = vec!["--write-rate-per-sec", "0", "--ai-url", ai_url];
        flags.extend_from_slice(extra);
        let args = serve_args(&pool, &flags);
        let server = Self::spawn(pool, args).await;
        server.wait_ready().await;
        server
    }

    /// Serves `args` over `pool`'s database without waiting for anything.
    pub async fn spawn(pool: PgPool, args: ServeArgs) -> Self {
        // Logs of the server under test (RUST_LOG filters; shown for failing tests).
        mutr_api::telemetry::init_tracing(mutr_api::telemetry::LogFormat::Text);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { mutr_api::serve(args, listener, stop).await });
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            pool,
            shutdown,
            task: Some(task),
        }
    }

    /// Polls `path` until it answers 200, failing after a deadline.
    async fn wait_for_ok(&self, path: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = self.http.get(self.url(path)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "{path} did not answer 200");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the server answers `/healthz`.
    pub async fn wait_alive(&self) {
        self.wait_for_ok("/healthz").await;
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_for_ok("/readyz").await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new guest: (token, nickname).
    pub async fn guest(&self) -> (String, String) {
        let body = ok(self
            .http
            .post(self.url("/api/v1/auth/guest"))
            .send()
            .await
            .unwrap())
        .await;
        (
            body["guestToken"].as_str().unwrap().to_owned(),
            body["nickname"].as_str().unwrap().to_owned(),
        )
    }

    /// Posts a node as the guest with `token`.
    pub async fn post_node(&self, token: &str, body: Value) -> Response {
        self.http
            .post(self.url("/api/v1/nodes"))
            .header("X-Guest-Token", token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Cancels the server and waits for it to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops within 20 s")
                .expect("server task")
                .expect("server result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `data` of a 200 envelope.
#[track_caller]
pub fn ok(response: Response) -> impl Future<Output = Value> {
    let caller = std::panic::Location::caller();
    async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "at {caller}: {body}");
        assert_eq!(body["success"], true, "at {caller}: {body}");
        assert_eq!(body["message"], "Success", "at {caller}: {body}");
        body["data"].clone()
    }
}

/// Asserts an error envelope with `status`; returns its message.
#[track_caller]
pub fn error(response: Response, status: StatusCode) -> impl Future<Output = String> {
    let caller = std::panic::Location::caller();
    async move {
        let got = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "at {caller}: {text}");
        assert!(
            content_type.starts_with("application/json"),
            "at {caller}: content type {content_type:?}"
        );
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("at {caller}: not JSON: {text}"));
        assert_eq!(body["success"], false, "at {caller}: {body}");
        assert_eq!(body["data"], Value::Null, "at {caller}: {body}");
        let message = body["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "at {caller}: empty message");
        message
    }
}

/// Waits until `condition` holds, polling every 20 ms, failing with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
