//! Throughput of `AnalyzeNode` under concurrency: the same requests at 1, 4, 8 and 16 concurrent
//! clients against a server started with `--parallel 1` (the old one-at-a-time server, the
//! baseline), one with `--parallel 8` (one generative context) and one with `--parallel 8
//! --gen-contexts 2` (the eight sequences over two contexts), in one run. Prints requests/s, p50
//! and p95 latency and each batched server's ratio to the baseline.
//!
//! Models: the tiny test models from `MUTR_MODEL_DIR` by default, or the files named by
//! `MUTR_GEN_MODEL` and `MUTR_EMBED_MODEL`; `n_gpu_layers` offloads layers on a `cuda` build.
//! `MUTR_BENCH_REQUESTS` sets the requests per concurrency level (default 48); `n_threads` the
//! llama.cpp threads of each model (default: the server's, half the cores);
//! `MUTR_BENCH_GEN_CONTEXTS` the contexts of the third server (default 2).

use std::time::{Duration, Instant};

mod common;

use common::model_files;
use mutr_ai_server::llm::{EmbedSettings, GenSettings, LoadedModel};
use mutr_ai_server::models;
use mutr_ai_server::server::{self, ModelSource, ServerConfig};
use mutr_ai_server::service::Limits;
use mutr_proto::{AnalysisRequest, AnalysisServiceClient};
use tokio::net::TcpListener;

const LEVELS: [usize; 4] = [1, 4, 8, 16];
/// Turns per level and server; each turn sends `requests / ROUNDS` requests.
const ROUNDS: usize = 3;

struct Run {
    rps: f64,
    p50: Duration,
    p95: Duration,
}

fn requests(n: usize) -> Vec<AnalysisRequest> {
    let subjects = [
        "Lily",
        "Tom",
        "the old dog",
        "a small bird",
        "the baker",
        "Grandma",
        "the fox",
        "Ben",
    ];
    let places = [
        "the park",
        "the river",
        "a quiet town",
        "the forest",
        "the sea",
        "the garden",
    ];
    (0..n)
        .map(|i| {
            let s = subjects[i % subjects.len()];
            let p = places[(i / subjects.len()) % places.len()];
            let content = format!("{s} walked to {p} and found something new on day {i}.");
            AnalysisRequest {
                content: content.clone(),
                parent_topic: if i % 4 == 0 {
                    String::new()
                } else {
                    format!("A day at {p}")
                },
                baseline_topic: "Small adventures".into(),
                full_context: format!("{s} woke up early.\nThe sky was clear over {p}.\n{content}"),
            }
        })
        .collect()
}

struct Server {
    client: AnalysisServiceClient<tonic::transport::Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
}

async fn start(
    parallel: u32,
    contexts: u32,
    models: &(LoadedModel, LoadedModel),
    threads: i32,
) -> Server {
    let config = ServerConfig {
        models: ModelSource::Loaded {
            generate: models.0.clone(),
            embed: models.1.clone(),
        },
        generate: GenSettings {
            parallel,
            n_ctx: 1024,
            n_batch: 512,
            // The model's threads are divided among its contexts, at least one each.
            n_threads: threads * i32::try_from(contexts).unwrap_or(1),
            contexts,
        },
        embed: EmbedSettings {
            parallel: parallel.next_power_of_two(),
            n_batch: 2048,
            n_threads: threads,
            text_prefix: std::env::var("MUTR_EMBED_PREFIX").unwrap_or_default(),
        },
        limits: Limits {
            max_content_chars: 4000,
            max_context_chars: 8000,
            max_topic_chars: 200,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(120),
            topic_max_tokens: 30,
        },
        max_message_bytes: 256 * 1024,
        drain_timeout: Duration::from_secs(30),
        cache: None,
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(config, grpc, metrics, async {
        let _ = stopped.await;
    }));
    let ready = format!("http://{metrics_addr}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reqwest::get(&ready)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = AnalysisServiceClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    // Warm-up: fills the shared prompt starts and the allocator.
    for r in requests(8) {
        client
            .clone()
            .analyze_node(r)
            .await
            .expect("warm-up request");
    }
    Server { client, stop, task }
}

/// `n` requests through `clients` concurrent clients: elapsed time and each latency.
async fn run_level(
    client: &AnalysisServiceClient<tonic::transport::Channel>,
    clients: usize,
    n: usize,
) -> (Duration, Vec<Duration>) {
    let work = std::sync::Arc::new(tokio::sync::Mutex::new(requests(n)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (mut c, work) = (client.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(req) = work.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                c.analyze_node(req).await.expect("request");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    (started.elapsed(), latencies)
}

fn summarise(n: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Run {
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Run {
        rps: n as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p95: pct(0.95),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse. RUST_LOG turns on the server's logs.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let per_level = common::env_number("MUTR_BENCH_REQUESTS")
        .unwrap_or(48)
        .max(ROUNDS);
    // llama.cpp threads per context.
    let threads = common::threads();
    let contexts: u32 = common::env_number("MUTR_BENCH_GEN_CONTEXTS").unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (g, e) = model_files();
        let gpu_layers = common::gpu_layers();
        let loaded = tokio::task::spawn_blocking(move || {
            let g = LoadedModel::load(&g, gpu_layers, models::fingerprint(&g).unwrap()).unwrap();
            let e = LoadedModel::load(&e, gpu_layers, models::fingerprint(&e).unwrap()).unwrap();
            (g, e)
        })
        .await
        .unwrap();
        // The servers run side by side and are measured in turns, round after round, so that
        // load from elsewhere on the machine falls on all alike.
        let servers = [
            start(1, 1, &loaded, threads).await,
            start(8, 1, &loaded, threads).await,
            start(8, contexts, &loaded, threads).await,
        ];
        // results[level][server]
        let mut results: Vec<Vec<Run>> = Vec::new();
        for &clients in &LEVELS {
            let mut totals: Vec<(Duration, Vec<Duration>)> =
                servers.iter().map(|_| (Duration::ZERO, Vec::new())).collect();
            for _ in 0..ROUNDS {
                for (i, s) in servers.iter().enumerate() {
                    let (elapsed, latencies) = run_level(&s.client, clients, per_level / ROUNDS).await;
                    totals[i].0 += elapsed;
                    totals[i].1.extend(latencies);
                }
            }
            let n = (per_level / ROUNDS) * ROUNDS;
            results.push(totals.into_iter().map(|(t, l)| summarise(n, t, l)).collect());
        }
        for s in servers {
            let _ = s.stop.send(());
            s.task.await.unwrap().expect("clean stop");
        }
        println!();
        println!(
            "ai-server AnalyzeNode, models {} + {}, {per_level} requests per level, \
             {threads} llama.cpp threads per model context. p1: --parallel 1 (baseline); \
             p8: --parallel 8; p8x{contexts}: --parallel 8 --gen-contexts {contexts}",
            loaded.0.path().file_name().unwrap().to_string_lossy(),
            loaded.1.path().file_name().unwrap().to_string_lossy()
        );
        println!(
            "| clients | p8x{contexts} req/s | p8 req/s | p1 req/s | p8x{contexts} / p1 | p8 / p1 \
             | p50 p8x{contexts} / p8 / p1 | p95 p8x{contexts} / p8 / p1 |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (i, clients) in LEVELS.iter().enumerate() {
            let [b, p, x] = &results[i][..] else {
                unreachable!("three servers")
            };
            println!(
                "| {clients} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {} / {} / {} | {} / {} / {} |",
                x.rps,
                p.rps,
                b.rps,
                x.rps / b.rps,
                p.rps / b.rps,
                ms(x.p50),
                ms(p.p50),
                ms(b.p50),
                ms(x.p95),
                ms(p.p95),
                ms(b.p95)
            );
        }
    });
}
