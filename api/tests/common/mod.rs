//! Test helpers: the real server on `127.0.0.1:0` over a fresh database (from `#[sqlx::test]`),
//! with a hand-off channel and a broadcaster that prove events leave only after commit.

#![allow(dead_code)] // each test binary uses a different part of these helpers

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::Parser as _;
use futures::future::BoxFuture;
use mutr_api::{
    ServeError,
    config::{Cli, Command, ServeArgs},
    events::{AnalysisRequested, Broadcaster, handoff_channel},
    realtime::Realtime,
};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A published event and whether its node was visible (committed) to another connection when
/// it was published.
#[derive(Debug, Clone)]
pub struct Published {
    pub destination: &'static str,
    pub body: Value,
    pub committed_when_published: bool,
}

/// Records what is published, checking on a separate connection that the node is committed, and
/// forwards it to the live push when the server has one.
pub struct RecordingBroadcaster {
    pool: PgPool,
    pub published: Mutex<Vec<Published>>,
    forward: Option<Realtime>,
}

impl Broadcaster for RecordingBroadcaster {
    fn publish(&self, destination: &'static str, body: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(push) = &self.forward {
                push.publish(destination, body.clone()).await;
            }
            let body: Value = serde_json::from_str(&body).expect("published body is JSON");
            let id = body["id"].as_i64().expect("published node has an id");
            let committed =
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM nodes WHERE id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .expect("visibility check")
                    == 1;
            self.published.lock().unwrap().push(Published {
                destination,
                body,
                committed_when_published: committed,
            });
        })
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub broadcaster: Arc<RecordingBroadcaster>,
    pub handoffs: tokio::sync::Mutex<mpsc::Receiver<AnalysisRequested>>,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// Serve arguments as the binary would parse them, plus `extra` flags.
pub fn serve_args(extra: &[&str]) -> ServeArgs {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut argv = vec![
        "mutr-api",
        "serve",
        "--database-url",
        "postgres://unused-the-test-passes-a-pool",
        "--redis-url",
        &redis,
        "--shutdown-grace",
        "0s",
        "--drain-timeout",
        "5s",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)
        .expect("valid test arguments")
        .command
    {
        Command::Serve(args) => *args,
        Command::Migrate(_) => unreachable!(),
    }
}

impl TestServer {
    /// Starts the server over `pool` with the default limits, except the write rate (off) .
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, &["--write-rate-per-sec", "0"]).await
    }

    /// Starts the server over `pool` with extra serve flags.
    pub async fn start_with(pool: PgPool, extra: &[&str]) -> Self {
        Self::start_args(pool, serve_args(extra)).await
    }

    /// Starts the server over `pool` with `args`.
    pub async fn start_args(pool: PgPool, args: ServeArgs) -> Self {
        Self::start_inner(pool, args, false).await
    }

    /// Starts the server over `pool` with the live push on, its Redis bridge on `channel` (tests
    /// that run at the same time use different channels), and waits until the bridge is connected.
    pub async fn start_live(pool: PgPool, channel: &str) -> Self {
        let args = serve_args(&[
            "--write-rate-per-sec",
            "0",
            "--realtime-redis-channel",
            channel,
        ]);
        Self::start_inner(pool, args, true).await
    }

    async fn start_inner(pool: PgPool, args: ServeArgs, live: bool) -> Self {
        let (handoff, handoffs) = handoff_channel(1024);
        let shutdown = CancellationToken::new();
        let push = if live {
            let push = Realtime::start(
                args.realtime.clone(),
                Some(args.redis_url.expose().to_owned()),
                shutdown.child_token(),
            )
            .await
            .expect("live push");
            let deadline = Instant::now() + Duration::from_secs(10);
            while push.redis_connected() != Some(true) {
                assert!(
                    Instant::now() < deadline,
                    "realtime bridge did not connect to Redis"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(push)
        } else {
            None
        };
        let broadcaster = Arc::new(RecordingBroadcaster {
            pool: pool.clone(),
            published: Mutex::new(Vec::new()),
            forward: push.clone(),
        });
        let mut state =
            mutr_api::build_state(&args, pool.clone(), Arc::new(handoff), broadcaster.clone())
                .expect("state");
        if let Some(push) = push {
            state = state.with_realtime(push);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = shutdown.clone();
        let task =
            tokio::spawn(async move { mutr_api::serve_state(&args, state, listener, stop).await });
        let server = Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            pool,
            broadcaster,
            handoffs: tokio::sync::Mutex::new(handoffs),
            shutdown,
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/readyz` until it answers 200, failing after a deadline.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    /// The next hand-off event, failing after a deadline.
    pub async fn next_handoff(&self) -> AnalysisRequested {
        tokio::time::timeout(Duration::from_secs(5), self.handoffs.lock().await.recv())
            .await
            .expect("a hand-off event within 5 s")
            .expect("hand-off channel open")
    }

    /// Everything published so far.
    pub fn published(&self) -> Vec<Published> {
        self.broadcaster.published.lock().unwrap().clone()
    }

    /// Cancels the server and waits for it to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
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
