//! Bench of the analysis pipeline (issue 12), against a release AI server and API started by
//! `hack/benches/pipeline.sh`. Four figures, each beside what it is measured against in the same
//! run:
//!
//! 1. **Throughput**: nodes created over HTTP and analysed through the pipeline per second, against
//!    the same AI server called directly with the same requests at the same concurrency.
//! 2. **Overhead at light load**: one node at a time, from the POST to the analysed event on a
//!    STOMP subscription, minus the time the AI call itself took (recorded by the pipeline in
//!    `analysis_attempts.ai_ms`).
//! 3. **Sweep with nothing to do** on a galaxy of 1,000,000 analysed nodes: the sweeper's claim
//!    statement and its gauge refresh, timed through the library functions the sweeper calls.
//! 4. **Recovery**: a forest of 10,000 orphans (half `PROCESSING` under a colour that is gone, half
//!    `PENDING`); `recover --from-color` returns the former, then a fresh API process starts:
//!    seconds until every orphan is claimed or parked in Redis behind its parent, and until all
//!    are analysed.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::{SinkExt as _, StreamExt as _, stream};
use mutr_api::analysis::{
    claims::{self, Owner},
    recovery,
};
use mutr_proto::{AnalysisRequest, AnalysisServiceClient};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio_tungstenite::tungstenite::Message;

/// Bench of the analysis pipeline.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the running API (throughput and overhead).
    #[arg(long)]
    api_url: String,
    /// The running AI server (the same one the API calls).
    #[arg(long)]
    ai_url: String,
    /// The running API's database.
    #[arg(long, hide_env_values = true)]
    database_url: String,
    /// A database URL whose server may create the bench's own databases.
    #[arg(long, hide_env_values = true)]
    admin_database_url: String,
    /// Redis, for the recovery phase's API process.
    #[arg(long, hide_env_values = true)]
    redis_url: String,
    /// The `mutr-api` binary, for the recovery phase.
    #[arg(long)]
    api_bin: String,
    /// The AI server's Prometheus endpoint: what each half of the throughput phase cost it.
    #[arg(long)]
    ai_metrics_url: Option<String>,
    /// AI calls in flight: the API's `MUTR_ANALYSIS_CONCURRENCY`, and the direct baseline's.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Nodes of the throughput phase (each side takes 10-15 s at the default, so the ramp at the
    /// start and the last poll at the end weigh little).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Rounds of the throughput phase, each the direct baseline then the API, one after the
    /// other; the ratio reported is the median round's, so that a drift of the machine (other
    /// load, clock) between the two halves of one round weighs on one round only.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Nodes of the overhead phase (one at a time).
    #[arg(long, default_value_t = 60)]
    overhead_samples: usize,
    /// Analysed nodes in the galaxy the sweep runs on.
    #[arg(long, default_value_t = 1_000_000)]
    sweep_galaxy: i64,
    /// Orphans of the recovery phase.
    #[arg(long, default_value_t = 10_000)]
    recovery_nodes: usize,
    /// Phases to run (comma-separated: throughput, overhead, sweep, recovery).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,overhead,sweep,recovery"
    )]
    phases: Vec<String>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const WORDS: [&str; 16] = [
    "Once", "upon", "a", "time", "there", "was", "a", "little", "girl", "named", "Lily", "who",
    "loved", "the", "park", "sun",
];

/// A node text of `words` words, unique by `n` (no result cache can answer it).
fn text(rng: &mut StdRng, n: usize) -> String {
    let len = rng.random_range(6..14);
    let words: Vec<&str> = (0..len)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    format!("{} {n}", words.join(" "))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// One printed line: what, the figure, its baseline or target, and their ratio.
struct Line {
    what: String,
    figure: String,
    against: String,
    ratio: String,
}

fn print_table(lines: &[Line]) {
    println!();
    println!("| measure | figure | baseline / target | ratio / verdict |");
    println!("|---|---|---|---|");
    for l in lines {
        println!(
            "| {} | {} | {} | {} |",
            l.what, l.figure, l.against, l.ratio
        );
    }
    println!();
}

async fn guest(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let body: Value = http
        .post(format!("{base}/api/v1/auth/guest"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["data"]["guestToken"]
        .as_str()
        .map(str::to_owned)
        .context("no guest token")
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    content: &str,
) -> anyhow::Result<i64> {
    let body: Value = http
        .post(format!("{base}/api/v1/nodes"))
        .header("X-Guest-Token", token)
        .json(&json!({ "content": content }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["data"]["id"].as_i64().context("no node id")
}

/// The AI server's counters and histogram sums, by series (name and labels).
async fn ai_metrics(url: Option<&str>) -> HashMap<String, f64> {
    let Some(url) = url else {
        return HashMap::new();
    };
    let Ok(body) = async { reqwest::get(url).await?.text().await }.await else {
        return HashMap::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// What the AI server did between two scrapes, per request: the work each request cost
/// (prompt tokens fed, decode steps, filler) and how full its decode steps were.
fn ai_cost(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> Option<String> {
    // A series counts when its name is `name` and it carries every label of `labels`.
    let delta = |name: &str, labels: &[&str]| -> f64 {
        after
            .iter()
            .filter(|(k, _)| {
                k.split(['{', ' ']).next() == Some(name) && labels.iter().all(|l| k.contains(l))
            })
            .map(|(k, v)| v - before.get(k).copied().unwrap_or(0.0))
            .sum()
    };
    let requests = delta("mutr_ai_requests_total", &[]);
    if requests <= 0.0 {
        return None;
    }
    let generate_decode = ["phase=\"decode\"", "worker=\"generate\""];
    let steps = delta("mutr_ai_batch_sequences_count", &generate_decode);
    let stepped = delta("mutr_ai_batch_sequences_sum", &generate_decode);
    Some(format!(
        "{requests:.0} requests; per request {:.1} prompt + {:.1} step tokens, {:.2} filler; \
         {:.2} sequences per generative decode step over {steps:.0} steps",
        delta("mutr_ai_sequence_tokens_total", &["phase=\"prompt\""]) / requests,
        delta("mutr_ai_sequence_tokens_total", &["phase=\"step\""]) / requests,
        delta("mutr_ai_filler_tokens_total", &[]) / requests,
        if steps > 0.0 { stepped / steps } else { 0.0 },
    ))
}

/// Phase 1: the same requests directly to the AI server, then as nodes through the API.
async fn throughput(args: &Args, pool: &PgPool, lines: &mut Vec<Line>) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(args.ai_url.clone())?
        .connect()
        .await
        .context("AI server")?;
    let client = AnalysisServiceClient::new(channel);
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for _ in 0..POSTERS {
        tokens.push(guest(&http, &args.api_url).await?);
    }
    let rounds = args.rounds.clamp(1, 9);
    let mut results = Vec::new();
    for round in 0..rounds {
        eprintln!("throughput round {} of {rounds}", round + 1);
        results.push(throughput_round(args, pool, &client, &http, &tokens, round).await?);
    }
    let ratios: Vec<f64> = results.iter().map(|(d, e)| e / d).collect();
    let median = |v: Vec<f64>| percentile(&sorted(v), 50.0);
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
    lines.push(Line {
        what: format!(
            "analyses/s through the API ({} nodes, concurrency {}, median of {rounds} rounds)",
            args.nodes, args.concurrency
        ),
        figure: format!("{:.1}/s", median(results.iter().map(|r| r.1).collect())),
        against: format!(
            "{:.1}/s AI server called directly",
            median(results.iter().map(|r| r.0).collect())
        ),
        ratio: format!(
            "{:.2}x (rounds: {}; target >= 0.9x)",
            median(ratios.clone()),
            each.join(", ")
        ),
    });
    Ok(())
}

/// Concurrent posters of the throughput phase (each with a guest token of its own).
const POSTERS: usize = 8;

/// One round of the throughput phase: `args.nodes` analyses from the AI server called directly,
/// then as many nodes created through the API and waited for; the two rates.
async fn throughput_round(
    args: &Args,
    pool: &PgPool,
    client: &AnalysisServiceClient<tonic::transport::Channel>,
    http: &reqwest::Client,
    tokens: &[String],
    round: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut rng = StdRng::seed_from_u64(12 + round as u64);
    // Unique numbers of the same length on both sides and in every round, so that both send as
    // many tokens (a 7-digit number is seven tokens more than a 1-digit one, twice per request).
    let first = args.nodes * round;
    let direct_texts: Vec<String> = (0..args.nodes)
        .map(|n| text(&mut rng, 1_000_000 + first + n))
        .collect();
    let api_texts: Vec<String> = (0..args.nodes)
        .map(|n| text(&mut rng, 2_000_000 + first + n))
        .collect();
    let metrics_url = args.ai_metrics_url.as_deref();
    let ai_before = ai_metrics(metrics_url).await;
    let started = Instant::now();
    let latencies: Vec<f64> = stream::iter(direct_texts)
        .map(|content| {
            let mut client = client.clone();
            async move {
                let request = AnalysisRequest {
                    full_context: content.clone(),
                    content,
                    parent_topic: String::new(),
                    baseline_topic: String::new(),
                };
                let sent = Instant::now();
                client
                    .analyze_node(request)
                    .await
                    .map(|_| sent.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("direct AI calls")?;
    let direct_secs = started.elapsed().as_secs_f64();
    let direct_rate = args.nodes as f64 / direct_secs;
    let direct = sorted(latencies);
    eprintln!(
        "direct: {} calls at concurrency {} in {direct_secs:.1} s ({direct_rate:.1}/s), p50 {:.1} ms",
        args.nodes,
        args.concurrency,
        percentile(&direct, 50.0)
    );
    let ai_between = ai_metrics(metrics_url).await;
    if let Some(cost) = ai_cost(&ai_before, &ai_between) {
        eprintln!("AI server, direct: {cost}");
    }

    // The end is read from PostgreSQL (the last completion's `updated_at`, against the database's
    // clock at the start), so the wait below can poll lazily: a poll every 20 ms cost the
    // machine the AI server runs on a query 50 times a second, a load the direct baseline does
    // not carry. The poll counts the unfinished nodes through their partial index.
    let db_started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    let ids: Vec<i64> = stream::iter(api_texts.into_iter().enumerate())
        .map(|(i, content)| {
            let (http, base, token) = (
                http.clone(),
                args.api_url.clone(),
                tokens[i % POSTERS].clone(),
            );
            async move { post(&http, &base, &token, &content).await }
        })
        .buffer_unordered(POSTERS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let posted = started.elapsed().as_secs_f64();
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM nodes WHERE analysis_status IN ('PENDING', 'PROCESSING')",
        )
        .fetch_one(pool)
        .await?;
        if unfinished == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "the pipeline did not finish {} nodes in 10 minutes",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(updated_at) FROM nodes WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(pool)
            .await?;
    let e2e_secs = (last - db_started).as_seconds_f64();
    let e2e_rate = ids.len() as f64 / e2e_secs;
    eprintln!(
        "through the API: {} nodes posted in {posted:.1} s, all analysed after {e2e_secs:.1} s",
        ids.len()
    );
    if let Some(cost) = ai_cost(&ai_between, &ai_metrics(metrics_url).await) {
        eprintln!("AI server, through the API: {cost}");
    }
    eprintln!(
        "round {}: {e2e_rate:.1}/s through the API, {direct_rate:.1}/s direct, {:.2}x",
        round + 1,
        e2e_rate / direct_rate
    );
    Ok((direct_rate, e2e_rate))
}

/// A raw STOMP-over-WebSocket subscriber to the galaxy topic.
async fn subscribe(
    base: &str,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(Instant, Value)>> {
    let url = format!("{}/ws-mutr/websocket", base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(
        "CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0",
    ))
    .await?;
    ws.send(Message::text(
        "SUBSCRIBE\nid:0\ndestination:/topic/galaxy/public\nreceipt:r\n\n\0",
    ))
    .await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let at = Instant::now();
            let frame = t.as_str().trim_start_matches(['\n', '\r']);
            if frame.starts_with("RECEIPT") || frame.starts_with("CONNECTED") {
                continue;
            }
            if let Some((_, body)) = frame.split_once("\n\n")
                && let Ok(v) = serde_json::from_str::<Value>(body.trim_end_matches('\0'))
                && tx.send((at, v)).is_err()
            {
                return;
            }
        }
    });
    Ok(rx)
}

/// Phase 2: one node at a time; POST to analysed event, minus the AI call's own time.
async fn overhead(args: &Args, pool: &PgPool, lines: &mut Vec<Line>) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let token = guest(&http, &args.api_url).await?;
    let mut events = subscribe(&args.api_url).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rng = StdRng::seed_from_u64(99);
    let mut totals = Vec::new();
    let mut overheads = Vec::new();
    let mut parent: Option<i64> = None;
    for n in 0..args.overhead_samples {
        let content = text(&mut rng, 2_000_000 + n);
        let sent = Instant::now();
        // Half roots, half children of the previous node (the ordering path with a topic hint).
        let body =
            json!({ "content": content, "parentId": if n % 2 == 1 { parent } else { None } });
        let id = http
            .post(format!("{}/api/v1/nodes", args.api_url))
            .header("X-Guest-Token", &token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?["data"]["id"]
            .as_i64()
            .context("no id")?;
        let done_at = loop {
            let (at, v) = tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .context("no analysed event within 30 s")?
                .context("subscription ended")?;
            if v["id"] == id && v["analysisStatus"] == "COMPLETED" {
                break at;
            }
        };
        let total_ms = done_at.duration_since(sent).as_secs_f64() * 1000.0;
        let ai_ms: f64 = sqlx::query_scalar(
            "SELECT ai_ms FROM analysis_attempts WHERE node_id = $1 AND outcome = 'COMPLETED'",
        )
        .bind(id)
        .fetch_one(pool)
        .await?;
        totals.push(total_ms);
        overheads.push(total_ms - ai_ms);
        parent = Some(id);
    }
    let totals = sorted(totals);
    let overheads = sorted(overheads);
    lines.push(Line {
        what: format!(
            "create-to-analysed, one node at a time ({} nodes)",
            args.overhead_samples
        ),
        figure: format!(
            "p50 {:.1} ms, p95 {:.1} ms",
            percentile(&totals, 50.0),
            percentile(&totals, 95.0)
        ),
        against: "(includes the AI call)".to_owned(),
        ratio: String::new(),
    });
    let p95 = percentile(&overheads, 95.0);
    lines.push(Line {
        what: "pipeline overhead: create-to-analysed minus the AI call".to_owned(),
        figure: format!(
            "p50 {:.1} ms, p95 {p95:.1} ms",
            percentile(&overheads, 50.0)
        ),
        against: "target p95 < 20 ms".to_owned(),
        ratio: if p95 < 20.0 {
            "met".into()
        } else {
            "NOT met".into()
        },
    });
    Ok(())
}

/// A database of the bench's own on the admin URL's server, migrated; dropped by `drop_db`.
async fn scratch_db(args: &Args, name: &str) -> anyhow::Result<(PgPool, String)> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.admin_database_url)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    let base = args
        .admin_database_url
        .split('?')
        .next()
        .unwrap_or_default();
    let url = format!("{}/{name}", base.rsplit_once('/').map_or(base, |(b, _)| b));
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    mutr_api::db::MIGRATOR.run(&pool).await?;
    Ok((pool, url))
}

async fn drop_db(args: &Args, name: &str) {
    if let Ok(admin) = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.admin_database_url)
        .await
    {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}

/// Phase 3: the sweeper's statements on a large galaxy with nothing to do.
async fn sweep(args: &Args, lines: &mut Vec<Line>) -> anyhow::Result<()> {
    let name = format!("mutr_bench_sweep_{}", std::process::id());
    let (pool, _) = scratch_db(args, &name).await?;
    let started = Instant::now();
    sqlx::query("INSERT INTO users (nickname, role, guest_token_hash) VALUES ('bench', 'ROLE_GUEST', '\\x01')")
        .execute(&pool)
        .await?;
    // A galaxy of analysed trees of ten: roots, then their children.
    sqlx::query(
        "INSERT INTO nodes (id, content, author_id, parent_id, root_id, x, y, z, topic, emotion,
                            analysis_status, mutation_filter, mutation_score)
         SELECT g, 'galaxy node ' || g, 1,
                CASE WHEN g % 10 = 1 THEN NULL ELSE g - 1 END,
                g - ((g - 1) % 10),
                (random() * 4000 - 2000)::numeric(10,2), (random() * 4000 - 2000)::numeric(10,2),
                (random() * 4000 - 2000)::numeric(10,2),
                'topic', 'neutral', 'COMPLETED', 'CLUSTER', 0.1
         FROM generate_series(1, $1) g",
    )
    .bind(args.sweep_galaxy)
    .execute(&pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT setval('nodes_id_seq', {})",
        args.sweep_galaxy
    )))
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE nodes").execute(&pool).await?;
    eprintln!(
        "sweep: galaxy of {} analysed nodes in {:.1} s",
        args.sweep_galaxy,
        started.elapsed().as_secs_f64()
    );
    let owner = Owner {
        pod: "bench".into(),
        color: "blue".into(),
    };
    let mut claim_ms = Vec::new();
    let mut gauge_ms = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let claimed = claims::claim_ready(&pool, &owner, Duration::from_secs(30), 264).await?;
        claim_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if !claimed.is_empty() {
            bail!("the sweep found work in an analysed galaxy");
        }
        let t = Instant::now();
        claims::unfinished(&pool).await?;
        gauge_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let claim_ms = sorted(claim_ms);
    let gauge_ms = sorted(gauge_ms);
    let both95 = percentile(&claim_ms, 95.0) + percentile(&gauge_ms, 95.0);
    lines.push(Line {
        what: format!(
            "sweep with nothing to do, {} nodes (claim + gauges)",
            args.sweep_galaxy
        ),
        figure: format!(
            "claim p50 {:.2} / p95 {:.2} ms; gauges p50 {:.2} / p95 {:.2} ms",
            percentile(&claim_ms, 50.0),
            percentile(&claim_ms, 95.0),
            percentile(&gauge_ms, 50.0),
            percentile(&gauge_ms, 95.0)
        ),
        against: "target < 5 ms".to_owned(),
        ratio: if both95 < 5.0 {
            format!("met ({both95:.2} ms p95)")
        } else {
            format!("NOT met ({both95:.2} ms p95)")
        },
    });
    drop(pool);
    drop_db(args, &name).await;
    Ok(())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Phase 4: a forest of orphans, `recover`, then a fresh API process picks them up.
async fn recovery(args: &Args, lines: &mut Vec<Line>) -> anyhow::Result<()> {
    let name = format!("mutr_bench_recovery_{}", std::process::id());
    let (pool, url) = scratch_db(args, &name).await?;
    sqlx::query("INSERT INTO users (nickname, role, guest_token_hash) VALUES ('bench', 'ROLE_GUEST', '\\x01')")
        .execute(&pool)
        .await?;
    // A forest: trees of 50 (one root, then each node answers a random earlier node of its tree,
    // so chains and fans both occur). Odd ids are PROCESSING under the gone colour `dead`, with a
    // lease that has not expired (only `recover` can return them); even ids are PENDING.
    let n = args.recovery_nodes as i64;
    let mut rng = StdRng::seed_from_u64(5);
    let parents: Vec<i64> = (1..=n)
        .map(|id| {
            let pos = (id - 1) % 50;
            if pos == 0 {
                0
            } else {
                id - rng.random_range(1..=pos)
            }
        })
        .collect();
    sqlx::query(
        "INSERT INTO nodes (id, content, author_id, parent_id, root_id, x, y, z, analysis_status,
                            claim_owner, claim_color, lease_expires_at, claim_token)
         SELECT g, 'Once upon a time ' || g, 1, NULLIF(p, 0), g - ((g - 1) % 50), 0, 0, 0,
                CASE WHEN g % 2 = 1 THEN 'PROCESSING' ELSE 'PENDING' END,
                CASE WHEN g % 2 = 1 THEN 'dead-0' END,
                CASE WHEN g % 2 = 1 THEN 'dead' END,
                CASE WHEN g % 2 = 1 THEN now() + interval '1 hour' END,
                CASE WHEN g % 2 = 1 THEN nextval('analysis_claim_token') END
         FROM unnest($1::bigint[]) WITH ORDINALITY AS t(p, g)",
    )
    .bind(&parents)
    .execute(&pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT setval('nodes_id_seq', {n})"
    )))
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO analysis_attempts (node_id, owner, color, token)
         SELECT id, claim_owner, claim_color, claim_token FROM nodes WHERE claim_token IS NOT NULL",
    )
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE nodes").execute(&pool).await?;
    let recovered = recovery::recover(&pool, "dead", false).await?;
    eprintln!(
        "recovery: {} orphans, recover --from-color dead returned {}",
        n, recovered.returned
    );

    let prefix = format!("mutr:bench:{}:", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let _api = Killed(
        Command::new(&args.api_bin)
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env("REDIS_URL", &args.redis_url)
            .env("MUTR_AI_URL", &args.ai_url)
            .env("MUTR_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("MUTR_ANALYSIS_REDIS_PREFIX", &prefix)
            .env("MUTR_REALTIME_REDIS_CHANNEL", format!("{prefix}events"))
            .env("MUTR_ANALYSIS_CONCURRENCY", args.concurrency.to_string())
            .env("MUTR_POD_NAME", "bench-recovery")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mutr-api")?,
    );
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let mut redis = redis::aio::ConnectionManager::new(redis).await?;
    let parent_of: HashMap<i64, i64> = (1..=n)
        .zip(parents.iter().copied())
        .filter(|(_, p)| *p != 0)
        .collect();
    let parent_of = Arc::new(parent_of);
    let mut dispatched_at = None;
    loop {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT id, analysis_status, claim_owner FROM nodes
             WHERE analysis_status IN ('PENDING', 'PROCESSING')",
        )
        .fetch_all(&pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        if dispatched_at.is_none() {
            let status: HashMap<i64, bool> = rows.iter().map(|r| (r.0, true)).collect();
            let mut pending_ready = 0usize;
            let mut to_check = Vec::new();
            for (id, st, owner) in &rows {
                if st == "PROCESSING" && owner.as_deref() == Some("bench-recovery") {
                    continue;
                }
                match parent_of.get(id) {
                    Some(p) if status.contains_key(p) => to_check.push((*id, *p)),
                    _ => pending_ready += 1,
                }
            }
            let mut parked = 0usize;
            if pending_ready == 0 && !to_check.is_empty() {
                let mut pipe = redis::pipe();
                for (id, p) in &to_check {
                    pipe.cmd("SISMEMBER")
                        .arg(format!("{prefix}waiting:{p}"))
                        .arg(id);
                }
                let answers: Vec<bool> = pipe.query_async(&mut redis).await?;
                parked = answers.iter().filter(|a| **a).count();
            }
            if pending_ready == 0 && parked == to_check.len() {
                dispatched_at = Some(started.elapsed());
                eprintln!(
                    "recovery: every orphan claimed or parked after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("recovery did not finish in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(if dispatched_at.is_none() {
            20
        } else {
            500
        }))
        .await;
    }
    let done = started.elapsed();
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM nodes WHERE analysis_status = 'FAILED'")
            .fetch_one(&pool)
            .await?;
    let dispatched = dispatched_at.map_or(f64::NAN, |d| d.as_secs_f64());
    lines.push(Line {
        what: format!("recovery of {n} orphans: until all claimed or parked (from process start)"),
        figure: format!("{dispatched:.2} s"),
        against: "target < 2 s".to_owned(),
        ratio: if dispatched < 2.0 {
            "met".into()
        } else {
            "NOT met".into()
        },
    });
    lines.push(Line {
        what: format!("recovery of {n} orphans: until all analysed"),
        figure: format!(
            "{:.1} s ({:.1}/s, {failed} failed)",
            done.as_secs_f64(),
            n as f64 / done.as_secs_f64()
        ),
        against: "(bound by the AI server)".to_owned(),
        ratio: String::new(),
    });
    drop(pool);
    drop_db(args, &name).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&args.database_url)
        .await?;
    let mut lines = Vec::new();
    let phases: Vec<&str> = args.phases.iter().map(String::as_str).collect();
    if phases.contains(&"throughput") {
        throughput(&args, &pool, &mut lines).await?;
    }
    if phases.contains(&"overhead") {
        overhead(&args, &pool, &mut lines).await?;
    }
    if phases.contains(&"sweep") {
        sweep(&args, &mut lines).await?;
    }
    if phases.contains(&"recovery") {
        recovery(&args, &mut lines).await?;
    }
    println!(
        "Analysis pipeline (issue 12): release builds, tiny models, loopback, 2 cores shared by"
    );
    println!("PostgreSQL, Redis, the AI server, the API and this bench.");
    print_table(&lines);
    Ok(())
}
