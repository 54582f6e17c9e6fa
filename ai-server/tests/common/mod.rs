//! Test helpers: the real models (loaded once per test process), a real server on 127.0.0.1:0,
//! a gRPC client, and polling with a deadline instead of sleeps.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mutr_ai_server::llm::{EmbedSettings, GenSettings, LoadedModel, default_embed_parallel};
use mutr_ai_server::models::{self, Manifest};
use mutr_ai_server::server::{self, ModelSource, ServeError, ServerConfig};
use mutr_ai_server::service::Limits;
use mutr_proto::{AnalysisRequest, AnalysisResponse, AnalysisServiceClient};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The test models: the tiny profile (`MUTR_TEST_PROFILE` picks another, say `small` to run
/// the determinism test on Gemma by hand), from `MUTR_MODEL_DIR`, else the shared folder next
/// to the repository, else the download cache.
pub fn model_files() -> (PathBuf, PathBuf) {
    let profile = std::env::var("MUTR_TEST_PROFILE").unwrap_or_else(|_| "tiny".into());
    let manifest = Manifest::builtin();
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MUTR_MODEL_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"));
    dirs.push(models::default_cache_dir());
    let r = models::resolve(&manifest, Some(&profile), None, None, &dirs).unwrap_or_else(|e| {
        panic!("{e}\n(the tests need the {profile} models: set MUTR_MODEL_DIR or run `mutr-ai-server fetch-model --profile {profile}`)")
    });
    (r.generate, r.embed)
}

/// Layers offloaded to the GPU: `n_gpu_layers` as the server reads it (a `cuda` build on a GPU
/// machine, `hack/gpu/device-bench.sh`), else none.
pub fn gpu_layers() -> u32 {
    env_number("n_gpu_layers").unwrap_or(0)
}

/// A number from the environment, as the server parses its settings.
fn env_number(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Texts embedded in one decode: `MUTR_EMBED_PARALLEL` as the server reads it, else the server's
/// default for `parallel` generative sequences and [`gpu_layers`].
pub fn embed_parallel(parallel: u32) -> u32 {
    env_number("MUTR_EMBED_PARALLEL")
        .unwrap_or_else(|| default_embed_parallel(parallel, gpu_layers()))
}

/// The tiny models, loaded once per process.
pub fn loaded_models() -> (LoadedModel, LoadedModel) {
    static MODELS: OnceLock<(LoadedModel, LoadedModel)> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            let (g, e) = model_files();
            let layers = gpu_layers();
            let g = LoadedModel::load(&g, layers, models::fingerprint(&g).unwrap())
                .expect("load the generative model");
            let e = LoadedModel::load(&e, layers, models::fingerprint(&e).unwrap())
                .expect("load the embedding model");
            (g, e)
        })
        .clone()
}

/// Settings for a test server; `Default` is a small, fast configuration.
#[derive(Debug, Clone)]
pub struct Opts {
    pub parallel: u32,
    pub gen_contexts: u32,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub max_queue: usize,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_message_bytes: usize,
    pub redis_url: Option<String>,
    pub topic_max_tokens: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            parallel: 4,
            gen_contexts: 1,
            n_ctx: 512,
            n_batch: 512,
            max_queue: 64,
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
            redis_url: None,
            topic_max_tokens: 30,
        }
    }
}

pub fn limits(o: &Opts) -> Limits {
    Limits {
        max_content_chars: 4000,
        max_context_chars: 8000,
        max_topic_chars: 200,
        max_in_flight: o.parallel as usize + o.max_queue,
        request_timeout: o.request_timeout,
        topic_max_tokens: o.topic_max_tokens,
    }
}

/// Tests run one llama.cpp thread per worker: test processes run side by side, and OpenMP
/// threads that spin-wait for each other on an oversubscribed machine make everything crawl.
pub fn config(o: &Opts, models: ModelSource) -> ServerConfig {
    let cache = o.redis_url.as_ref().map(|url| {
        mutr_ai_server::cache::ResultCache::new(
            url,
            mutr_ai_server::cache::CacheSettings {
                ttl: Duration::from_secs(600),
                timeout: Duration::from_millis(300),
            },
        )
        .expect("valid redis url")
    });
    ServerConfig {
        models,
        generate: GenSettings {
            parallel: o.parallel,
            n_ctx: o.n_ctx,
            n_batch: o.n_batch,
            n_threads: Some(o.gen_contexts as i32),
            contexts: Some(o.gen_contexts),
        },
        embed: EmbedSettings {
            parallel: embed_parallel(o.parallel),
            n_batch: 2048,
            n_threads: 1,
            text_prefix: String::new(),
        },
        limits: limits(o),
        max_message_bytes: o.max_message_bytes,
        drain_timeout: o.drain_timeout,
        cache,
    }
}

/// A server running in this process.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Starts a server on the shared models and waits until it is SERVING.
    pub async fn start(o: Opts) -> Self {
        let (generate, embed) = loaded_models();
        let s = Self::start_with(config(&o, ModelSource::Loaded { generate, embed })).await;
        s.wait_ready().await;
        s
    }

    /// Starts a server without waiting for it to be ready.
    pub async fn start_with(config: ServerConfig) -> Self {
        let grpc_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc, metrics) = (
            grpc_l.local_addr().unwrap(),
            metrics_l.local_addr().unwrap(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(config, grpc_l, metrics_l, async {
            drop(stopped.await);
        }));
        Self {
            grpc,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.metrics);
        wait_until(
            Duration::from_secs(60),
            "the server to be SERVING",
            || async {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
    }

    pub async fn client(&self) -> AnalysisServiceClient<Channel> {
        AnalysisServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Begins the shutdown (like SIGTERM).
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("serve returned")
            .unwrap()
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
#[track_caller]
pub fn wait_until<F, Fut>(
    limit: Duration,
    what: &'static str,
    mut cond: F,
) -> impl std::future::Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + limit;
        loop {
            if cond().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{caller}: timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn request(content: &str, parent_topic: &str) -> AnalysisRequest {
    AnalysisRequest {
        content: content.into(),
        parent_topic: parent_topic.into(),
        baseline_topic: String::new(),
        full_context: content.into(),
    }
}

pub async fn analyze(
    client: &mut AnalysisServiceClient<Channel>,
    req: AnalysisRequest,
) -> Result<AnalysisResponse, tonic::Status> {
    client
        .analyze_node(req)
        .await
        .map(tonic::Response::into_inner)
}

/// The value of a metric line that starts with `prefix` (name and labels), summed over matches.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Asserts the fields of a response are in their ranges.
#[track_caller]
pub fn assert_in_range(r: &AnalysisResponse) {
    assert!(!r.topic.trim().is_empty(), "empty topic: {r:?}");
    assert!(
        mutr_ai_server::analysis::emotion::LABELS.contains(&r.emotion.as_str()),
        "{r:?}"
    );
    assert!(r.confidence > 0.0 && r.confidence <= 1.0, "{r:?}");
    assert!((0.0..=1.0).contains(&r.mutation_score), "{r:?}");
}
