//! Throughput of `AnalyzeNode` under concurrency, against the ceiling llama.cpp itself sets.
//!
//! For each model pair (the tiny profile, and the small one when fetched; see
//! `common::model_pairs`), the same requests at 1, 4, 8 and 16 concurrent clients go to two
//! servers started as a user would, with every other setting left to the server: `--parallel 1`
//! (the old one-at-a-time server, the baseline) and `--parallel 8` (the default layout for these
//! cores and this model). They run side by side and are measured in alternating rounds, so load
//! from elsewhere falls on both alike.
//!
//! Beside each server's requests/s: what llama.cpp achieves for the same work with the same
//! layout (`llm::probe::ceiling`): the prompt tokens, decode steps and embedded texts per request
//! that the server's own metrics counted during that level, with as many sequences in flight as
//! the clients allow, decoded back to back with no scheduler. The ratio of the server's time per
//! request to that is what the scheduler costs.
//!
//! `MUTR_BENCH_REQUESTS` sets the requests per level (default 48 for the tiny models, 24 for
//! others), `MUTR_BENCH_PROBE_REQUESTS` those of the probe (default the same); `n_threads` and
//! `MUTR_GEN_CONTEXTS` override the servers' layout (to compare layouts by hand);
//! `MUTR_EMBED_PARALLEL` the texts per embedding decode; `n_gpu_layers` offloads layers on a
//! `cuda` build.

use std::time::{Duration, Instant};

mod common;

use common::ModelPair;
use mutr_ai_server::llm::probe::{ProbeLayout, RequestWork, ceiling};
use mutr_ai_server::llm::{
    EmbedSettings, GenSettings, Layout, LoadedModel, available_cores, default_embed_parallel,
    embed_threads,
};
use mutr_ai_server::models;
use mutr_ai_server::server::{self, ModelSource, ServerConfig};
use mutr_ai_server::service::Limits;
use mutr_proto::{AnalysisRequest, AnalysisServiceClient};
use tokio::net::TcpListener;

/// Concurrent clients per level; `MUTR_BENCH_LEVELS` (comma-separated) picks others.
fn levels() -> Vec<usize> {
    std::env::var("MUTR_BENCH_LEVELS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect::<Vec<usize>>()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| vec![1, 4, 8, 16])
}
/// Turns per level and server; each turn sends `requests / ROUNDS` requests.
const ROUNDS: usize = 3;
/// The servers: the baseline and the batched default.
const PARALLEL: [u32; 2] = [1, 8];

fn requests(n: usize, korean: bool) -> Vec<AnalysisRequest> {
    let (subjects, places): (&[&str], &[&str]) = if korean {
        (
            &[
                "지민",
                "할머니",
                "작은 새",
                "빵집 주인",
                "우리 강아지",
                "민수",
                "여우",
                "선생님",
            ],
            &["공원", "강가", "조용한 마을", "숲", "바닷가", "정원"],
        )
    } else {
        (
            &[
                "Lily",
                "Tom",
                "the old dog",
                "a small bird",
                "the baker",
                "Grandma",
                "the fox",
                "Ben",
            ],
            &[
                "the park",
                "the river",
                "a quiet town",
                "the forest",
                "the sea",
                "the garden",
            ],
        )
    };
    (0..n)
        .map(|i| {
            let s = subjects[i % subjects.len()];
            let p = places[(i / subjects.len()) % places.len()];
            let (content, parent, baseline, context) = if korean {
                let content = format!("{s}와 함께 {p}에 가서 {i}번째 날에 새로운 것을 찾았다.");
                (
                    content.clone(),
                    format!("{p}에서의 하루"),
                    "작은 모험".to_owned(),
                    format!("{s}는 일찍 일어났다.\n{p} 위 하늘이 맑았다.\n{content}"),
                )
            } else {
                let content = format!("{s} walked to {p} and found something new on day {i}.");
                (
                    content.clone(),
                    format!("A day at {p}"),
                    "Small adventures".to_owned(),
                    format!("{s} woke up early.\nThe sky was clear over {p}.\n{content}"),
                )
            };
            AnalysisRequest {
                content,
                parent_topic: if i % 4 == 0 { String::new() } else { parent },
                baseline_topic: baseline,
                full_context: context,
            }
        })
        .collect()
}

struct Server {
    parallel: u32,
    layout: Layout,
    embed_threads: i32,
    embed_parallel: u32,
    client: AnalysisServiceClient<tonic::transport::Channel>,
    metrics: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
}

async fn start(parallel: u32, models: &(LoadedModel, LoadedModel), korean: bool) -> Server {
    let threads = common::threads();
    let generate = GenSettings {
        parallel,
        n_ctx: 1024,
        n_batch: 512,
        n_threads: threads,
        // Only to try other layouts by hand; `make bench` leaves the choice to the server.
        contexts: common::env_number("MUTR_GEN_CONTEXTS").filter(|_| parallel > 1),
    };
    // The layout the server chooses (the same function, the same inputs).
    let layout = generate.layout(available_cores(), models.0.shape());
    let embed_threads = threads.unwrap_or_else(|| embed_threads(available_cores()));
    let embed = EmbedSettings {
        parallel: common::env_number("MUTR_EMBED_PARALLEL")
            .unwrap_or_else(|| default_embed_parallel(parallel, common::gpu_layers())),
        n_batch: 2048,
        n_threads: embed_threads,
        text_prefix: std::env::var("MUTR_EMBED_PREFIX").unwrap_or_default(),
    };
    let embed_parallel = embed.parallel;
    let config = ServerConfig {
        models: ModelSource::Loaded {
            generate: models.0.clone(),
            embed: models.1.clone(),
        },
        generate,
        embed,
        limits: Limits {
            max_content_chars: 4000,
            max_context_chars: 8000,
            max_topic_chars: 200,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(300),
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
    let deadline = Instant::now() + Duration::from_secs(300);
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
    for r in requests(4, korean) {
        client
            .clone()
            .analyze_node(r)
            .await
            .expect("warm-up request");
    }
    Server {
        parallel,
        layout,
        embed_threads,
        embed_parallel,
        client,
        metrics: format!("http://{metrics_addr}/metrics"),
        stop,
        task,
    }
}

/// Counters of the server's work (process-wide: the servers take turns, so a difference across
/// one server's turn is that server's).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    prompt: f64,
    steps: f64,
    sequences: f64,
    fillers: f64,
    texts: f64,
    text_tokens: f64,
    history: f64,
}

impl Counters {
    async fn read(url: &str) -> Self {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let prefixes = ["topic", "emotion"]
            .map(|k| sum(&format!("mutr_ai_shared_prompt_tokens{{kind=\"{k}\"}}")));
        Self {
            prompt: sum("mutr_ai_sequence_tokens_total{phase=\"prompt\"}"),
            steps: sum("mutr_ai_sequence_tokens_total{phase=\"step\"}"),
            sequences: sum("mutr_ai_sequences_ended_total{worker=\"generate\",outcome=\"done\"}"),
            fillers: sum("mutr_ai_filler_tokens_total"),
            texts: sum("mutr_ai_batch_sequences_sum{worker=\"embed\",phase=\"prefill\"}"),
            text_tokens: sum("mutr_ai_batch_tokens_sum{worker=\"embed\",phase=\"prefill\"}"),
            history: (prefixes[0] + prefixes[1]) / 2.0,
        }
    }

    fn minus(self, o: Self) -> Self {
        Self {
            prompt: self.prompt - o.prompt,
            steps: self.steps - o.steps,
            sequences: self.sequences - o.sequences,
            fillers: self.fillers - o.fillers,
            texts: self.texts - o.texts,
            text_tokens: self.text_tokens - o.text_tokens,
            history: self.history,
        }
    }

    fn plus(self, o: Self) -> Self {
        Self {
            prompt: self.prompt + o.prompt,
            steps: self.steps + o.steps,
            sequences: self.sequences + o.sequences,
            fillers: self.fillers + o.fillers,
            texts: self.texts + o.texts,
            text_tokens: self.text_tokens + o.text_tokens,
            history: o.history,
        }
    }

    /// The work of one request, over `requests` requests.
    fn per_request(self, requests: usize) -> RequestWork {
        let per_seq = |x: f64| x / self.sequences.max(1.0);
        RequestWork {
            sequences: self.sequences / requests as f64,
            prompt: per_seq(self.prompt),
            steps: per_seq(self.steps),
            history: self.history,
            texts: self.texts / requests as f64,
            text_tokens: self.text_tokens / self.texts.max(1.0),
        }
    }
}

/// What one server did at one level.
#[derive(Default)]
struct Measured {
    elapsed: Duration,
    latencies: Vec<Duration>,
    requests: usize,
    work: Counters,
}

/// `n` requests through `clients` concurrent clients: elapsed time and each latency.
async fn run_level(
    client: &AnalysisServiceClient<tonic::transport::Channel>,
    clients: usize,
    n: usize,
    korean: bool,
) -> (Duration, Vec<Duration>) {
    let work = std::sync::Arc::new(tokio::sync::Mutex::new(requests(n, korean)));
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

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// The probe's layout for a server at `clients` clients: its contexts and threads, with as many
/// sequences in flight as the clients can keep busy (two per request), spread as the server
/// spreads them.
fn probe_layout(s: &Server, clients: usize) -> ProbeLayout {
    let mut left = (2 * clients).min(s.parallel as usize);
    let mut in_flight = vec![0usize; s.layout.sequences.len()];
    while left > 0 {
        let Some(c) = (0..in_flight.len())
            .filter(|c| in_flight[*c] < s.layout.sequences[*c] as usize)
            .min_by_key(|c| in_flight[*c])
        else {
            break;
        };
        in_flight[c] += 1;
        left -= 1;
    }
    in_flight.retain(|n| *n > 0);
    ProbeLayout {
        threads: s.layout.threads,
        in_flight,
        embed_threads: s.embed_threads,
        embed_in_flight: (2 * clients).min(s.embed_parallel as usize),
    }
}

fn describe(l: &Layout) -> String {
    format!(
        "{} context(s) x {} thread(s), sequences {:?}",
        l.contexts(),
        l.threads,
        l.sequences
    )
}

async fn bench(pair: &ModelPair) {
    let gpu_layers = common::gpu_layers();
    let (g, e) = (pair.generate.clone(), pair.embed.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        let g = LoadedModel::load(&g, gpu_layers, models::fingerprint(&g).unwrap()).unwrap();
        let e = LoadedModel::load(&e, gpu_layers, models::fingerprint(&e).unwrap()).unwrap();
        (g, e)
    })
    .await
    .unwrap();
    let korean = pair.name != "tiny";
    let per_level = common::env_number("MUTR_BENCH_REQUESTS")
        .unwrap_or(if pair.name == "tiny" { 48 } else { 24 })
        .max(ROUNDS);
    let turn = per_level / ROUNDS;
    let mut servers = Vec::new();
    for parallel in PARALLEL {
        servers.push(start(parallel, &loaded, korean).await);
    }
    // measured[level][server]
    let levels = levels();
    let mut measured: Vec<Vec<Measured>> = Vec::new();
    for &clients in &levels {
        let mut row: Vec<Measured> = servers.iter().map(|_| Measured::default()).collect();
        for _ in 0..ROUNDS {
            for (i, s) in servers.iter().enumerate() {
                let before = Counters::read(&s.metrics).await;
                let (elapsed, latencies) = run_level(&s.client, clients, turn, korean).await;
                let after = Counters::read(&s.metrics).await;
                let m = &mut row[i];
                m.elapsed += elapsed;
                m.latencies.extend(latencies);
                m.requests += turn;
                m.work = m.work.plus(after.minus(before));
            }
        }
        measured.push(row);
    }
    let mut layouts = Vec::new();
    for s in servers {
        let probes: Vec<ProbeLayout> = levels.iter().map(|c| probe_layout(&s, *c)).collect();
        layouts.push((s.parallel, describe(&s.layout), probes));
        let _ = s.stop.send(());
        s.task.await.unwrap().expect("clean stop");
    }

    // The ceilings, after the servers are gone, for the work each server did at each level.
    let probe_requests: usize =
        common::env_number("MUTR_BENCH_PROBE_REQUESTS").unwrap_or(per_level);
    let mut ceilings: Vec<Vec<f64>> = Vec::new();
    for (l, level) in measured.iter().enumerate() {
        let mut row = Vec::new();
        for (i, m) in level.iter().enumerate() {
            let work = m.work.per_request(m.requests);
            let layout = layouts[i].2[l].clone();
            let (g, e) = (loaded.0.clone(), loaded.1.clone());
            let took =
                tokio::task::spawn_blocking(move || ceiling(&g, &e, &layout, work, probe_requests))
                    .await
                    .unwrap()
                    .expect("the ceiling probe runs");
            row.push(probe_requests as f64 / took.as_secs_f64());
        }
        ceilings.push(row);
    }

    println!();
    println!(
        "ai-server AnalyzeNode, profile {}: {} + {}, {per_level} requests per level, {} cores. \
         p1: --parallel 1 (baseline: {}); p8: --parallel 8 (default layout: {}). \
         llama.cpp: the same work per request on the same layout, decoded back to back by the \
         same library ({probe_requests} requests).",
        pair.name,
        loaded.0.path().file_name().unwrap().to_string_lossy(),
        loaded.1.path().file_name().unwrap().to_string_lossy(),
        available_cores(),
        layouts[0].1,
        layouts[1].1,
    );
    println!(
        "| clients | p8 req/s | p1 req/s | p8 / p1 | llama.cpp p8 layout | llama.cpp p1 layout \
         | p8 time per request vs llama.cpp | p1 vs llama.cpp | p50 p8 / p1 (ms) | p95 p8 / p1 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (l, clients) in levels.iter().enumerate() {
        let [b, p] = &mut measured[l][..] else {
            unreachable!("two servers")
        };
        let rps = |m: &Measured| m.requests as f64 / m.elapsed.as_secs_f64();
        let (rb, rp) = (rps(b), rps(p));
        let (cb, cp) = (ceilings[l][0], ceilings[l][1]);
        println!(
            "| {clients} | {rp:.1} | {rb:.1} | {:.2}x | {cp:.1} | {cb:.1} | {:.2}x | {:.2}x | {} / {} | {} / {} |",
            rp / rb,
            cp / rp,
            cb / rb,
            ms(percentile(&mut p.latencies, 0.5)),
            ms(percentile(&mut b.latencies, 0.5)),
            ms(percentile(&mut p.latencies, 0.95)),
            ms(percentile(&mut b.latencies, 0.95)),
        );
    }
    // The work behind those figures, from the servers' metrics (at 8 clients when measured).
    let l8 = levels.iter().position(|c| *c == 8).unwrap_or(0);
    for (i, m) in measured[l8].iter().enumerate() {
        let w = m.work.per_request(m.requests);
        println!(
            "p{} at {} clients, per request: {:.1} sequences, each {:.1} prompt tokens after a \
             shared start of {:.0} and {:.1} decode steps; {:.1} throw-away tokens; {:.1} texts \
             of {:.1} tokens embedded",
            PARALLEL[i],
            levels[l8],
            w.sequences,
            w.prompt,
            w.history,
            w.steps,
            m.work.fillers / m.requests as f64,
            w.texts,
            w.text_tokens,
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse. RUST_LOG turns on the server's logs.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for pair in common::model_pairs() {
            bench(&pair).await;
        }
    });
}
