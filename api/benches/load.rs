//! Load bench of the API against a running server on loopback (started by hack/benches/api.sh):
//! first the seed's k6 scenarios replayed with a think time of one second per virtual user (mixed
//! 80% reads at 200 users, read-heavy at 300, write-heavy at 50 and 100, a spike from 20 to 200),
//! each beside the old system's figures; then closed-loop saturation (write-heavy: 100 users
//! posting nodes; mixed: 200 users, one write to four `/viz` reads), then `/viz` on a galaxy grown
//! to 1,000,000 nodes. Prints requests/s, p50/p95/p99 and errors, and a table against the
//! baselines measured in the same run and the targets of issue 15 (creation at least 1.5x
//! pgbench, write p95 under 15 ms, `/viz` p95 under 5 ms at 1,000,000 nodes, no errors):
//! - pgbench's prepared single-row inserts into the same table as the API's (a copy of `nodes`
//!   with its foreign keys, which the API's inserts check too) at its fastest client count
//!   (`--pgbench-sweep`), which the bench runs right before and right after the write-heavy
//!   phase; beside it, the same inserts into a copy without the foreign keys
//!   (`--pgbench-clients`, `--pgbench-script`), or only the rate the script measured for those
//!   (`--pgbench-tps`);
//! - as the ceiling of group commit, pgbench's 64-row inserts (passed in by the script);
//! - under the `/viz` figure, pgbench running the same statement for the same cubes on the same
//!   galaxy with as many clients as readers (`--no-viz-ceiling` skips it).

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;

/// The load generator shares the two cores with the server under test, so what it spends is
/// taken from the figure: mimalloc (as the server uses), one bare HTTP/1.1 connection per user
/// ([`Conn`]), bodies written from plain structs and answers read into the one field it needs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load bench of mutr-api.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the running API.
    #[arg(long, env = "MUTR_BENCH_URL")]
    url: String,
    /// The API's database (to grow the galaxy to the target size for the `/viz` figure).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Length of each of the two load scenarios.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Concurrent users of the write-heavy scenario.
    #[arg(long, default_value_t = 100)]
    write_users: usize,
    /// Concurrent users of the mixed scenario.
    #[arg(long, default_value_t = 200)]
    mixed_users: usize,
    /// Nodes in the galaxy for the `/viz` figure.
    #[arg(long, default_value_t = 1_000_000)]
    galaxy_nodes: i64,
    /// Length of the `/viz` measurement on the large galaxy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    viz_duration: Duration,
    /// Concurrent readers of the `/viz` measurement.
    #[arg(long, default_value_t = 4)]
    viz_users: usize,
    /// pgbench's single-row insert rate (transactions/s), prepared, at its fastest client count.
    #[arg(long)]
    pgbench_tps: Option<f64>,
    /// The client count at which pgbench inserts fastest into the copy without foreign keys (with
    /// `--pgbench-script`): the bench then runs both baselines itself right before and right
    /// after the write-heavy phase, for as long, and compares node creation with their means (a
    /// machine whose speed drifts over the run skews both sides alike), the target's with the
    /// inserts into the copy with foreign keys, rather than only with `--pgbench-tps`.
    #[arg(long, requires = "pgbench_script")]
    pgbench_clients: Option<usize>,
    /// pgbench's single-row insert script (`hack/benches/api.sh` writes it), inserting into
    /// `bench_nodes`, which the bench creates `LIKE nodes INCLUDING ALL` and empties before each
    /// run.
    #[arg(long, requires = "pgbench_clients")]
    pgbench_script: Option<std::path::PathBuf>,
    /// Client counts at which to try the baseline with `nodes`' foreign keys (10 s each, before
    /// the write phase) for its own fastest count; without them it runs at `--pgbench-clients`.
    #[arg(long, value_delimiter = ',', requires = "pgbench_clients")]
    pgbench_sweep: Vec<usize>,
    /// Rows/s pgbench stores with 64 rows per statement and commit into the same table, at its
    /// fastest client count: the ceiling of any group commit on this machine.
    #[arg(long)]
    pgbench_rows_64: Option<f64>,
    /// pgbench's average latency in ms with one client (one insert and its commit, nothing
    /// queued): the floor under any write's latency on this database, same run.
    #[arg(long)]
    commit_floor_ms: Option<f64>,
    /// Length of each seed scenario (think time per user, as the old k6 runs).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    seed_duration: Duration,
    /// Think time of each virtual user in the seed scenarios.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    think: Duration,
    /// Skip the seed scenarios (closed-loop saturation figures only).
    #[arg(long)]
    no_seed: bool,
    /// Skip the `/viz` ceiling (pgbench running the API's `/viz` query on the same galaxy).
    #[arg(long)]
    no_viz_ceiling: bool,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Latencies (µs) and errors of one kind of request.
#[derive(Debug, Default, Clone)]
struct Samples {
    micros: Vec<u64>,
    errors: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    fn total(&self) -> u64 {
        self.micros.len() as u64 + self.errors
    }

    fn percentile_ms(&self, sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
    }
}

/// One line of the results table.
struct Row {
    name: String,
    rps: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    errors: u64,
    total: u64,
}

fn row(name: &str, samples: &Samples, elapsed: Duration) -> Row {
    let mut sorted = samples.micros.clone();
    sorted.sort_unstable();
    Row {
        name: name.to_owned(),
        rps: samples.total() as f64 / elapsed.as_secs_f64(),
        p50: samples.percentile_ms(&sorted, 50.0),
        p95: samples.percentile_ms(&sorted, 95.0),
        p99: samples.percentile_ms(&sorted, 99.0),
        errors: samples.errors,
        total: samples.total(),
    }
}

/// Where the API listens; cheap to clone. Each virtual user opens its own [`Conn`].
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    /// The `Host` header of every request.
    host: HeaderValue,
}

/// One virtual user's HTTP/1.1 keep-alive connection, as a browser tab or a k6 virtual user holds
/// one: hyper's connection API straight on a TCP socket, without a client pool, URL parsing or
/// redirect handling per request (with reqwest the load generator spent three quarters of the
/// server's CPU per request, on the same two cores; now about a third). Reconnects after an
/// error; a request that fails counts as an error.
struct Conn {
    client: Client,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// Longest wait for one answer (connecting included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    async fn new(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().context("--url")?;
        if uri.scheme_str() != Some("http") {
            bail!("--url: only http:// is supported (the bench runs on loopback)");
        }
        let authority = uri.authority().context("--url has no host")?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await?
            .next()
            .context("--url: the host has no address")?;
        let host = HeaderValue::from_str(authority.as_str())?;
        Ok(Self { addr, host })
    }

    fn conn(&self) -> Conn {
        Conn {
            client: self.clone(),
            sender: None,
        }
    }
}

impl Conn {
    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.client.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends a request on this user's connection and reads the whole answer.
    async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            sender.ready().await?;
            let mut request = Request::builder()
                .method(method)
                .uri(path_and_query)
                .header(header::HOST, self.client.host.clone());
            if !body.is_empty() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = sender.send_request(request.body(Full::new(body))?).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            // Kept only after a whole answer, so a failed request never leaves a half-read
            // connection behind.
            self.sender = Some(sender);
            anyhow::Ok((status, bytes))
        })
        .await;
        answer.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")))
    }

    async fn guest(&mut self) -> anyhow::Result<String> {
        let (status, body) = self
            .send(Method::POST, "/api/v1/auth/guest", &[], Bytes::new())
            .await?;
        if !status.is_success() {
            bail!("guest sign-in answered {status}");
        }
        let body: Value = serde_json::from_slice(&body)?;
        body["data"]["guestToken"]
            .as_str()
            .map(str::to_owned)
            .context("no guest token")
    }

    /// Posts a node; its id on success.
    async fn post(&mut self, token: &str, body: &NodeBody) -> Option<i64> {
        let body = Bytes::from(serde_json::to_vec(body).ok()?);
        let (status, answer) = self
            .send(
                Method::POST,
                "/api/v1/nodes",
                &[("x-guest-token", token)],
                body,
            )
            .await
            .ok()?;
        if !status.is_success() {
            return None;
        }
        serde_json::from_slice::<Created>(&answer)
            .ok()
            .map(|c| c.data.id)
    }

    /// `/viz` around (x, y, z); the answer's body when it succeeded. Timed to the last byte, as
    /// k6 (the old figures' tool) times a request.
    async fn viz(&mut self, x: f64, y: f64, z: f64) -> Option<Bytes> {
        let path = format!("/api/v1/nodes/viz?x={x:.2}&y={y:.2}&z={z:.2}&range={VIZ_RANGE}");
        match self.send(Method::GET, &path, &[], Bytes::new()).await {
            Ok((status, body)) if status.is_success() => Some(body),
            _ => None,
        }
    }
}

/// A node to post: a root at a position, or an answer to a parent in a direction.
#[derive(Serialize)]
#[serde(untagged)]
enum NodeBody {
    Root {
        content: String,
        x: f64,
        y: f64,
        z: f64,
    },
    #[serde(rename_all = "camelCase")]
    Child {
        content: String,
        parent_id: i64,
        dir_x: f64,
        dir_y: f64,
        dir_z: f64,
    },
}

/// The one field of a creation's answer the bench reads.
#[derive(Deserialize)]
struct Created {
    data: CreatedId,
}

#[derive(Deserialize)]
struct CreatedId {
    id: i64,
}

const WORDS: &[&str] = &[
    "오늘", "하늘", "구름", "바다", "기억", "마음", "바람", "여행", "커피", "음악", "책", "친구",
    "산책", "저녁", "아침", "생각", "꿈", "노래",
];

fn content(rng: &mut StdRng) -> String {
    let n = rng.random_range(4..40);
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn node_body(rng: &mut StdRng, own: &[i64]) -> NodeBody {
    // A quarter new roots somewhere in the galaxy, the rest answers to one of this user's nodes.
    if own.is_empty() || rng.random_bool(0.25) {
        let content = content(rng);
        let mut c = || rng.random_range(-2000.0..2000.0_f64).round();
        let (x, y, z) = (c(), c(), c());
        NodeBody::Root { content, x, y, z }
    } else {
        let parent_id = own[rng.random_range(0..own.len())];
        let content = content(rng);
        let mut d = || rng.random_range(-1.0..1.0_f64);
        let (dir_x, dir_y, dir_z) = (d(), d(), d());
        NodeBody::Child {
            content,
            parent_id,
            dir_x,
            dir_y,
            dir_z,
        }
    }
}

/// How users behave in one scenario.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// 1: every request is a write; 5: one write, then four `/viz` reads; 0: reads only.
    writes_every: u64,
    /// Pause after each answer (0 for a closed loop that saturates the server).
    think: Duration,
}

/// When one user is active, as offsets from the start of the scenario.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Duration,
    until: Duration,
}

/// Runs users for `duration`, every one of `tokens` active over the whole scenario. Returns
/// (writes, reads, elapsed).
async fn scenario(
    client: &Client,
    tokens: &[String],
    duration: Duration,
    writes_every: u64,
) -> (Samples, Samples, Duration) {
    let shape = Shape {
        writes_every,
        think: Duration::ZERO,
    };
    let windows = vec![
        Window {
            from: Duration::ZERO,
            until: duration,
        };
        tokens.len()
    ];
    scenario_in_windows(client, tokens, &windows, shape).await
}

/// Runs one user per token over its window (users start and stop on their own clock, which is how
/// a spike is shaped). Returns (writes, reads, elapsed).
async fn scenario_in_windows(
    client: &Client,
    tokens: &[String],
    windows: &[Window],
    shape: Shape,
) -> (Samples, Samples, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (token, window)) in tokens.iter().zip(windows).enumerate() {
        let mut conn = client.conn();
        let token = token.clone();
        let window = *window;
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let (mut writes, mut reads) = (Samples::default(), Samples::default());
            let mut own: Vec<i64> = Vec::new();
            let mut n: u64 = i as u64; // stagger the write/read cycle across users
            // Users with a think time start spread over their first second, as k6's do.
            let jitter = if shape.think.is_zero() {
                Duration::ZERO
            } else {
                shape.think.mul_f64(rng.random_range(0.0..1.0))
            };
            tokio::time::sleep_until((started + window.from + jitter).into()).await;
            while started.elapsed() < window.until {
                let t = Instant::now();
                if shape.writes_every > 0 && n.is_multiple_of(shape.writes_every) {
                    let body = node_body(&mut rng, &own);
                    match conn.post(&token, &body).await {
                        Some(id) => {
                            writes.micros.push(t.elapsed().as_micros() as u64);
                            if own.len() < 64 {
                                own.push(id);
                            } else {
                                let k = rng.random_range(0..own.len());
                                own[k] = id;
                            }
                        }
                        None => writes.errors += 1,
                    }
                } else {
                    let mut c = || rng.random_range(-2000.0..2000.0_f64);
                    let (x, y, z) = (c(), c(), c());
                    if conn.viz(x, y, z).await.is_some() {
                        reads.micros.push(t.elapsed().as_micros() as u64);
                    } else {
                        reads.errors += 1;
                    }
                }
                n += 1;
                if !shape.think.is_zero() {
                    tokio::time::sleep(shape.think).await;
                }
            }
            (writes, reads)
        }));
    }
    let (mut writes, mut reads) = (Samples::default(), Samples::default());
    for task in tasks {
        let (w, r) = task.await.expect("user task");
        writes.merge(w);
        reads.merge(r);
    }
    (writes, reads, started.elapsed())
}

/// One of the seed's k6 scenarios and what the old system measured under it.
struct Seed {
    name: &'static str,
    users: usize,
    writes_every: u64,
    /// Users at rest before and after the spike (0: all users over the whole run).
    spike_base: usize,
    old_p95_ms: f64,
    old_errors: &'static str,
}

const SEEDS: &[Seed] = &[
    Seed {
        name: "mixed 80% reads",
        users: 200,
        writes_every: 5,
        spike_base: 0,
        old_p95_ms: 80.0,
        old_errors: "4.4%",
    },
    Seed {
        name: "read-heavy",
        users: 300,
        writes_every: 0,
        spike_base: 0,
        old_p95_ms: 265.0,
        old_errors: "-",
    },
    Seed {
        name: "write-heavy",
        users: 50,
        writes_every: 1,
        spike_base: 0,
        old_p95_ms: 127.0,
        old_errors: "7.6%",
    },
    Seed {
        name: "write-heavy",
        users: 100,
        writes_every: 1,
        spike_base: 0,
        old_p95_ms: 1578.0,
        old_errors: "17.4%",
    },
    Seed {
        name: "spike (mixed)",
        users: 200,
        writes_every: 5,
        spike_base: 20,
        old_p95_ms: 625.0,
        old_errors: "-",
    },
];

/// Replays the seed scenarios with `think` per user and prints their table beside the old
/// figures and the target (0 errors, p95 under 10 ms).
async fn seed_scenarios(
    client: &Client,
    tokens: &[String],
    duration: Duration,
    think: Duration,
) -> Vec<(String, Row)> {
    println!();
    println!(
        "{:<28} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>8}",
        "seed scenario (think 1 s)",
        "users",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "old p95",
        "old err",
        "target"
    );
    let mut rows = Vec::new();
    for seed in SEEDS {
        let windows: Vec<Window> = (0..seed.users)
            .map(|i| {
                if seed.spike_base == 0 || i < seed.spike_base {
                    Window {
                        from: Duration::ZERO,
                        until: duration,
                    }
                } else {
                    // The spike: the other users arrive together after a third of the run
                    // and leave after two thirds.
                    Window {
                        from: duration / 3,
                        until: duration * 2 / 3,
                    }
                }
            })
            .collect();
        let shape = Shape {
            writes_every: seed.writes_every,
            think,
        };
        let (mut all, reads, elapsed) =
            scenario_in_windows(client, &tokens[..seed.users], &windows, shape).await;
        all.merge(reads);
        let r = row(seed.name, &all, elapsed);
        let met = r.errors == 0 && r.p95 < 10.0;
        println!(
            "{:<28} {:>6} {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>10.0} {:>9} {:>8}",
            seed.name,
            seed.users,
            r.rps,
            r.p50,
            r.p95,
            r.p99,
            format!("{}/{}", r.errors, r.total),
            seed.old_p95_ms,
            seed.old_errors,
            if met { "met" } else { "not met" }
        );
        rows.push((format!("{} ({} users)", seed.name, seed.users), r));
    }
    rows
}

/// Replaces the nodes with a galaxy of `target` nodes: clusters of about 100 nodes, 300 units across, around
/// 10,000 centres spread over a 10,000-unit cube (the shape trees of 15-unit steps take).
async fn grow_galaxy(database_url: &str, target: i64) -> anyhow::Result<()> {
    use sqlx::{Connection as _, Executor as _};
    let mut db = sqlx::PgConnection::connect(database_url).await?;
    // The galaxy is only the clusters: the nodes the write phases stored sit densely in the
    // ±2000 cube, and how many there are depends on how fast writing was, which would make the
    // `/viz` figure depend on it too.
    db.execute("TRUNCATE analysis_attempts, nodes").await?;
    if target <= 0 {
        return Ok(());
    }
    let author: i64 = sqlx::query_scalar(
        "INSERT INTO users (nickname, role, guest_token_hash) VALUES ('벤치_작가_0000', 'ROLE_GUEST', gen_random_uuid()::text::bytea) RETURNING id",
    )
    .fetch_one(&mut db)
    .await?;
    let started = Instant::now();
    db.execute("SELECT setseed(0.42)").await?;
    db.execute(
        "CREATE TEMP TABLE centres AS
         SELECT g AS c, (random() - 0.5) * 10000 AS x, (random() - 0.5) * 10000 AS y, (random() - 0.5) * 10000 AS z
         FROM generate_series(0, 9999) g",
    )
    .await?;
    sqlx::query(
        "INSERT INTO nodes (id, content, author_id, root_id, x, y, z, analysis_status, topic, emotion, mutation_filter, mutation_score)
         SELECT s.id, 'galaxy node ' || s.id, $1, s.id,
                round((c.x + (random() - 0.5) * 300)::numeric, 2)::float8,
                round((c.y + (random() - 0.5) * 300)::numeric, 2)::float8,
                round((c.z + (random() - 0.5) * 300)::numeric, 2)::float8,
                'COMPLETED', '벤치', 'neutral', 'ORIGIN', 0.0
         FROM (SELECT nextval(pg_get_serial_sequence('nodes', 'id')) AS id, g FROM generate_series(1, $2) g) s
         JOIN centres c ON c.c = s.g % 10000",
    )
    .bind(author)
    .bind(target)
    .execute(&mut db)
    .await?;
    // A served galaxy is not freshly bulk-loaded: set hint bits and the visibility map and
    // refresh statistics, as autovacuum would, so the figure measures queries, not clean-up.
    db.execute("VACUUM (ANALYZE) nodes").await?;
    eprintln!(
        "replaced the nodes with a galaxy of {target} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Half the edge of every `/viz` cube the bench asks for.
const VIZ_RANGE: f64 = 200.0;

/// Up to 2,000 nodes of the large galaxy, sampled, to centre `/viz` cubes on.
async fn centres(database_url: &str) -> anyhow::Result<Arc<Vec<(f64, f64, f64)>>> {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(database_url).await?;
    let mut points: Vec<(f64, f64, f64)> =
        sqlx::query_as("SELECT x, y, z FROM nodes TABLESAMPLE SYSTEM (1) LIMIT 2000")
            .fetch_all(&mut db)
            .await?;
    // `SYSTEM` picks whole pages, 1% of them: a small galaxy (`hack/bench-ab.sh`'s 20,000 nodes
    // fill about 440 pages) gets none now and then (5 samples of 1,000 were empty), which failed
    // an A/B run; such a table is cheap to read whole.
    if points.is_empty() {
        points = sqlx::query_as("SELECT x, y, z FROM nodes ORDER BY random() LIMIT 2000")
            .fetch_all(&mut db)
            .await?;
    }
    if points.is_empty() {
        bail!("no nodes to centre /viz on");
    }
    Ok(Arc::new(points))
}

/// `/viz` around `points`, nodes of the large galaxy.
async fn viz_at_scale(
    client: &Client,
    points: &Arc<Vec<(f64, f64, f64)>>,
    users: usize,
    duration: Duration,
) -> anyhow::Result<(Samples, Duration, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..users {
        let (mut conn, points, stop) = (client.conn(), Arc::clone(points), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(1000 + i as u64);
            let mut samples = Samples::default();
            let mut returned = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let (x, y, z) = points[rng.random_range(0..points.len())];
                let t = Instant::now();
                // Timed to the last byte of the answer, as k6 (the old figures' tool) times a
                // request: parsing ~35 KB of JSON into a tree here took this machine's CPU from
                // the server under test and counted in its latency. The nodes are counted by
                // their `"id":` keys (one per node; the others are `parentId`, `rootId`).
                match conn.viz(x, y, z).await {
                    Some(body) => {
                        samples.micros.push(t.elapsed().as_micros() as u64);
                        returned += body.windows(5).filter(|w| w == b"\"id\":").count() as u64;
                    }
                    None => samples.errors += 1,
                }
            }
            (samples, returned)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Samples::default();
    let mut returned = 0;
    for task in tasks {
        let (s, r) = task.await.expect("viz task");
        all.merge(s);
        returned += r;
    }
    let per_answer = returned as f64 / all.micros.len().max(1) as f64;
    Ok((all, started.elapsed(), per_answer))
}

/// Runs pgbench on `database_url`: `script` with `clients` (on at most two threads, as the load
/// generator has one) for `duration`, prepared statements, no vacuum, then `extra` options; its
/// output, once it succeeded.
async fn pgbench(
    database_url: &str,
    clients: usize,
    duration: Duration,
    script: &std::path::Path,
    extra: Vec<String>,
) -> anyhow::Result<std::process::Output> {
    let (url, script) = (database_url.to_owned(), script.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("pgbench")
            .args(["-n", "-M", "prepared"])
            .args([
                "-c",
                &clients.to_string(),
                "-j",
                &clients.clamp(1, 2).to_string(),
            ])
            .args(["-T", &duration.as_secs().max(1).to_string()])
            .args(&extra)
            .arg("-f")
            .arg(&script)
            .arg(&url)
            .output()
    })
    .await?
    .context("running pgbench")?;
    if !output.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// The single-row insert of `hack/benches/api.sh`'s `insert.sql` into a `bench_nodes` with
/// `nodes`' foreign keys: the same text and coordinates, but each row is the child of one of
/// `:users` roots, the root of user i having id -i and author i, as each of the write phase's users
/// posts under their own nodes (with one shared parent and author, every insert's key-share locks
/// would pile onto the same two rows, a multixact each that every concurrent insert extends).
const KEYED_INSERT: &str = r"\set u random(1, :users)
\set p 0 - :u
\set x random(-2000, 2000)
\set y random(-2000, 2000)
\set z random(-2000, 2000)
INSERT INTO bench_nodes (content, author_id, parent_id, root_id, x, y, z)
VALUES ('오늘 하늘 구름 바다 기억 마음 바람 여행 커피 음악 친구 산책', :u, :p, :p, :x, :y, :z);
";

/// pgbench's single-row inserts (the write figure's baseline) with `clients` for `duration`,
/// on an empty `bench_nodes` shaped like `nodes`, as `hack/benches/api.sh` runs them (`script`);
/// the transactions per second. `LIKE` copies no foreign keys. With `keyed_for` (a number of
/// users), the table also gets `nodes`' own (read from the catalogue, a reference to `nodes`
/// made one to `bench_nodes`) and one root per user, and pgbench runs [`KEYED_INSERT`], so each
/// insert checks its author and its parent as the API's do.
async fn pgbench_inserts(
    database_url: &str,
    clients: usize,
    script: &std::path::Path,
    duration: Duration,
    keyed_for: Option<usize>,
) -> anyhow::Result<f64> {
    use sqlx::{Connection as _, Executor as _};
    let mut db = sqlx::PgConnection::connect(database_url).await?;
    db.execute(
        "DROP TABLE IF EXISTS bench_nodes;
         CREATE TABLE bench_nodes (LIKE nodes INCLUDING ALL)",
    )
    .await?;
    let mut extra = Vec::new();
    let keyed_script;
    let script = match keyed_for {
        None => script,
        Some(users) => {
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint
                 WHERE conrelid = 'nodes'::regclass AND contype = 'f' ORDER BY conname",
            )
            .fetch_all(&mut db)
            .await?;
            for key in keys {
                let key = key.replace("REFERENCES nodes(", "REFERENCES bench_nodes(");
                // The definition comes from the catalogue, not from outside.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE bench_nodes ADD {key}"
                )))
                .execute(&mut db)
                .await?;
            }
            sqlx::query(
                "INSERT INTO bench_nodes (id, content, author_id, root_id, x, y, z)
                 SELECT -u.id, 'root', u.id, -u.id, 0, 0, 0 FROM users u WHERE u.id BETWEEN 1 AND $1",
            )
            .bind(users as i64)
            .execute(&mut db)
            .await?;
            let roots: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_nodes")
                .fetch_one(&mut db)
                .await?;
            if roots != users as i64 {
                bail!("the baseline with foreign keys needs users 1 to {users}; found {roots}");
            }
            extra = vec!["-D".to_owned(), format!("users={users}")];
            keyed_script = script.with_file_name("insert-keyed.sql");
            std::fs::write(&keyed_script, KEYED_INSERT)?;
            &keyed_script
        }
    };
    checkpoint(database_url).await;
    let output = pgbench(database_url, clients, duration, script, extra).await;
    db.execute("DROP TABLE bench_nodes").await?;
    let stdout = String::from_utf8_lossy(&output?.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .context("no tps in pgbench's output")
}

/// pgbench's single-row inserts per second ([`pgbench_inserts`]) into the table without and
/// with `nodes`' foreign keys.
#[derive(Debug, Clone, Copy)]
struct Inserts {
    plain: f64,
    keyed: f64,
}

/// The client count of `counts` at which the baseline with `nodes`' foreign keys inserts
/// fastest, 10 s each (`api.sh` sweeps the one without them); `fallback` when `counts` is empty.
async fn fastest_keyed(
    args: &Args,
    counts: &[usize],
    script: &std::path::Path,
    fallback: usize,
) -> anyhow::Result<usize> {
    let mut best = (fallback, 0.0);
    for &clients in counts {
        let tps = pgbench_inserts(
            &args.database_url,
            clients,
            script,
            Duration::from_secs(10),
            Some(args.write_users),
        )
        .await?;
        eprintln!(
            "sweep: pgbench, {clients} clients, single-row inserts with foreign keys: {tps:.0} tps"
        );
        if tps > best.1 {
            best = (clients, tps);
        }
    }
    Ok(best.0)
}

/// Writes the database's dirty pages out before a measured run, so that no checkpoint another run
/// caused lands in it (a timed one waits `checkpoint_timeout` after this one): each run starts as
/// clean as the others. Best effort: `CHECKPOINT` needs a superuser or `pg_checkpoint`.
async fn checkpoint(database_url: &str) {
    use sqlx::{Connection as _, Executor as _};
    let result = async {
        let mut db = sqlx::PgConnection::connect(database_url).await?;
        db.execute("CHECKPOINT").await.map(drop)
    }
    .await;
    if let Err(e) = result {
        eprintln!("(no CHECKPOINT before the run: {e})");
    }
}

/// Runs both baselines of [`Inserts`] right before the write phase (plain, then keyed) or right
/// after it (`after_writes`: keyed, then plain), so that a steady drift of the machine's speed
/// weighs on both alike; each at its own fastest client count (`clients`: plain, keyed).
async fn inserts(
    args: &Args,
    clients: (usize, usize),
    script: &std::path::Path,
    after_writes: bool,
) -> anyhow::Result<Inserts> {
    eprintln!(
        "baselines: pgbench, {} / {} clients, without / with foreign keys, right {} the write \
         phase",
        clients.0,
        clients.1,
        if after_writes { "after" } else { "before" }
    );
    let mut runs = [false, true];
    if after_writes {
        runs.reverse();
    }
    let mut result = Inserts {
        plain: 0.0,
        keyed: 0.0,
    };
    for keyed in runs {
        let keyed_for = keyed.then_some(args.write_users);
        let tps = pgbench_inserts(
            &args.database_url,
            if keyed { clients.1 } else { clients.0 },
            script,
            args.duration,
            keyed_for,
        )
        .await?;
        if keyed {
            result.keyed = tps;
        } else {
            result.plain = tps;
        }
    }
    Ok(result)
}

/// The `/viz` query of `mutr_api::db::nodes::in_cube`, as a pgbench script: each transaction
/// reads one cube's bounds and Morton key ranges (computed here by the API's own code) from
/// `bench_viz_centres`, then runs the API's statement with them as parameters. Keep the
/// statement in step with `in_cube`.
const VIZ_PGBENCH: &str = r"\set i random(1, :centres)
SELECT x0, x1, y0, y1, z0, z1, first, last, lim FROM bench_viz_centres WHERE i = :i \gset
WITH inside AS MATERIALIZED (
    SELECT n.* FROM unnest(:first::int8[], :last::int8[]) AS k(first, last)
    CROSS JOIN LATERAL (
        SELECT id, content, author_id, topic, emotion, mutation_filter, mutation_score,
               x, y, z, parent_id, root_id, created_at, analysis_status
        FROM nodes
        WHERE mutr_viz_key(x, y, z) BETWEEN k.first AND k.last
          AND x BETWEEN :x0 AND :x1 AND y BETWEEN :y0 AND :y1 AND z BETWEEN :z0 AND :z1
        OFFSET 0
    ) n
),
newest AS (SELECT * FROM inside ORDER BY id DESC LIMIT :lim)
SELECT n.id, n.content, u.nickname AS author_nickname, n.topic, n.emotion, n.mutation_filter,
       n.mutation_score, n.x, n.y, n.z, n.parent_id, n.root_id, n.created_at, n.analysis_status
FROM newest n CROSS JOIN LATERAL (
    SELECT nickname FROM users WHERE users.id = n.author_id LIMIT 1
) u
ORDER BY n.id DESC;
";

/// The ceiling under the `/viz` figure: the database alone running the API's `/viz` statement
/// for the same cubes on the same galaxy with as many clients as the bench has readers, through
/// pgbench (prepared, two threads), for `duration`. What the API adds on top (HTTP, decoding the
/// rows, writing the JSON) is the difference. Each transaction also reads its cube's parameters
/// by primary key, which pgbench cannot compute; that look-up is counted in its latency.
async fn viz_ceiling(
    database_url: &str,
    points: &[(f64, f64, f64)],
    users: usize,
    duration: Duration,
) -> anyhow::Result<(Samples, Duration)> {
    use mutr_api::{db::nodes::VIZ_KEY_RANGES, domain::viz_key, http::Limits};
    use sqlx::{Connection as _, Executor as _};
    let mut db = sqlx::PgConnection::connect(database_url).await?;
    db.execute(
        "DROP TABLE IF EXISTS bench_viz_centres;
         CREATE TABLE bench_viz_centres (i int PRIMARY KEY, x0 float8, x1 float8, y0 float8,
             y1 float8, z0 float8, z1 float8, first int8[], last int8[], lim int8)",
    )
    .await?;
    let limit = i64::from(Limits::default().viz_max_nodes);
    let mut tx = db.begin().await?;
    for (i, &(x, y, z)) in points.iter().enumerate() {
        let lo = [x - VIZ_RANGE, y - VIZ_RANGE, z - VIZ_RANGE];
        let hi = [x + VIZ_RANGE, y + VIZ_RANGE, z + VIZ_RANGE];
        let (first, last): (Vec<i64>, Vec<i64>) =
            viz_key::ranges(lo, hi, VIZ_KEY_RANGES).into_iter().unzip();
        sqlx::query(
            "INSERT INTO bench_viz_centres VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(i as i32 + 1)
        .bind(lo[0])
        .bind(hi[0])
        .bind(lo[1])
        .bind(hi[1])
        .bind(lo[2])
        .bind(hi[2])
        .bind(first)
        .bind(last)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    db.execute("ANALYZE bench_viz_centres").await?;

    let dir = std::env::temp_dir().join(format!("mutr-viz-ceiling-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("viz.sql");
    std::fs::write(&script, VIZ_PGBENCH)?;
    let started = Instant::now();
    let output = pgbench(
        database_url,
        users,
        duration,
        &script,
        vec![
            "-l".into(),
            format!("--log-prefix={}", dir.join("log").display()),
            "-D".into(),
            format!("centres={}", points.len()),
        ],
    )
    .await;
    let elapsed = started.elapsed();
    let result = output.and_then(|_| {
        // One line per transaction: client, transaction, latency in us (or "failed"), ...
        let mut samples = Samples::default();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if !path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("log."))
            {
                continue;
            }
            for line in std::fs::read_to_string(&path)?.lines() {
                match line.split_whitespace().nth(2).map(str::parse::<u64>) {
                    Some(Ok(us)) => samples.micros.push(us),
                    _ => samples.errors += 1,
                }
            }
        }
        if samples.micros.is_empty() {
            bail!("pgbench logged no transactions");
        }
        Ok((samples, elapsed))
    });
    let _ = std::fs::remove_dir_all(&dir);
    db.execute("DROP TABLE bench_viz_centres").await?;
    result
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "scenario", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "requests"
    );
    for r in rows {
        println!(
            "{:<34} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>9}",
            r.name, r.rps, r.p50, r.p95, r.p99, r.errors, r.total
        );
    }
}

/// One thread: the load generator's work per request is small, and on the bench's two cores a
/// second worker thread only adds wake-ups between threads, taken from the server under test.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&args.url).await?;

    let seed_users = if args.no_seed {
        0
    } else {
        SEEDS.iter().map(|s| s.users).max().unwrap_or(0)
    };
    let users = args.write_users.max(args.mixed_users).max(seed_users);
    let mut tokens = Vec::with_capacity(users);
    let mut conn = client.conn();
    for _ in 0..users {
        tokens.push(conn.guest().await?);
    }
    drop(conn);

    if !args.no_seed {
        eprintln!(
            "seed scenarios: {:?} each, think time {:?}",
            args.seed_duration, args.think
        );
        seed_scenarios(&client, &tokens, args.seed_duration, args.think).await;
        if let Some(floor) = args.commit_floor_ms {
            println!(
                "(the floor under a write: one pgbench client's insert and commit on the same \
                 database, same run: {floor:.2} ms average)"
            );
        }
    }

    let bracket = match args.pgbench_clients.zip(args.pgbench_script.as_deref()) {
        Some((plain, script)) => Some((
            (
                plain,
                fastest_keyed(&args, &args.pgbench_sweep, script, plain).await?,
            ),
            script,
        )),
        None => None,
    };
    let before = match bracket {
        Some((clients, script)) => Some(inserts(&args, clients, script, false).await?),
        None => None,
    };
    checkpoint(&args.database_url).await;
    eprintln!(
        "saturation, write-heavy: {} users for {:?}",
        args.write_users, args.duration
    );
    let (w_writes, _, w_elapsed) =
        scenario(&client, &tokens[..args.write_users], args.duration, 1).await;
    let after = match bracket {
        Some((clients, script)) => Some(inserts(&args, clients, script, true).await?),
        None => None,
    };
    let (baseline_tps, keyed_tps) = match (before, after) {
        (Some(b), Some(a)) => (
            Some((b.plain + a.plain) / 2.0),
            Some((b.keyed + a.keyed) / 2.0),
        ),
        _ => (args.pgbench_tps, None),
    };
    eprintln!(
        "mixed: {} users for {:?}, 1 write : 4 /viz",
        args.mixed_users, args.duration
    );
    let (m_writes, m_reads, m_elapsed) =
        scenario(&client, &tokens[..args.mixed_users], args.duration, 5).await;
    let mut mixed = m_writes.clone();
    mixed.merge(m_reads.clone());

    eprintln!("growing the galaxy to {} nodes", args.galaxy_nodes);
    grow_galaxy(&args.database_url, args.galaxy_nodes).await?;
    let points = centres(&args.database_url).await?;
    let (viz, v_elapsed, per_answer) =
        viz_at_scale(&client, &points, args.viz_users, args.viz_duration).await?;
    let ceiling = if args.no_viz_ceiling {
        None
    } else {
        eprintln!(
            "/viz ceiling: pgbench, the same statement and cubes, {} clients",
            args.viz_users
        );
        match viz_ceiling(
            &args.database_url,
            &points,
            args.viz_users,
            args.viz_duration,
        )
        .await
        {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("no /viz ceiling: {e:#}");
                None
            }
        }
    };

    let write_row = row(
        &format!("write-heavy ({} users)", args.write_users),
        &w_writes,
        w_elapsed,
    );
    let mixed_row = row(
        &format!("mixed ({} users), all", args.mixed_users),
        &mixed,
        m_elapsed,
    );
    let mut rows = vec![
        row(
            &format!("write-heavy ({} users)", args.write_users),
            &w_writes,
            w_elapsed,
        ),
        row(
            &format!("mixed ({} users), all", args.mixed_users),
            &mixed,
            m_elapsed,
        ),
        row("  mixed: POST /nodes", &m_writes, m_elapsed),
        row("  mixed: GET /viz", &m_reads, m_elapsed),
        row(
            &format!(
                "/viz at {} nodes ({} users)",
                args.galaxy_nodes, args.viz_users
            ),
            &viz,
            v_elapsed,
        ),
    ];
    let viz_row = rows.last().expect("viz row");
    let total_errors: u64 = rows[..2].iter().map(|r| r.errors).sum::<u64>() + viz_row.errors;
    let total: u64 = rows[..2].iter().map(|r| r.total).sum::<u64>() + viz_row.total;
    let viz_p95 = viz_row.p95;
    let ceiling_row = ceiling.map(|(samples, elapsed)| {
        row(
            &format!("  database alone ({} clients)", args.viz_users),
            &samples,
            elapsed,
        )
    });
    let ceiling_p95 = ceiling_row.as_ref().map(|r| r.p95);
    rows.extend(ceiling_row);
    println!();
    println!("closed loop (no think time): saturation");
    print_rows(&rows);
    println!("(/viz at scale returned {per_answer:.0} nodes per answer on average)");
    if let (Some(b), Some(a), Some((clients, _))) = (before, after, bracket) {
        println!(
            "(pgbench's single-row inserts right before / after the write phase, into the same \
             table (nodes' columns, checks, indexes and foreign keys): {:.0} / {:.0} tps at {} \
             clients, their mean is the baseline; into a copy without the foreign keys: {:.0} / \
             {:.0} tps at {} clients{})",
            b.keyed,
            a.keyed,
            clients.1,
            b.plain,
            a.plain,
            clients.0,
            args.pgbench_tps
                .map(|t| format!(", {t:.0} in the client sweep earlier in the run"))
                .unwrap_or_default(),
        );
    }
    if ceiling_p95.is_some() {
        println!(
            "(database alone: pgbench running /viz's statement for the same cubes, \
             plus a primary-key read of each cube's parameters)"
        );
    }

    println!();
    println!(
        "{:<44} {:>12} {:>26} {:>8}",
        "figure", "value", "baseline", "ratio"
    );
    // The target's baseline is the insert into the same table, foreign keys included, as the
    // API's inserts check them; without a bracket only the rate without them is known.
    if let Some(tps) = keyed_tps {
        println!(
            "{:<44} {:>12.0} {:>26} {:>8.2}",
            "node creation rate, write-heavy (req/s)",
            write_row.rps,
            format!("pgbench {tps:.0}, 1.5x target"),
            write_row.rps / tps
        );
    }
    if let Some(tps) = baseline_tps {
        let (label, baseline) = match keyed_tps {
            Some(_) => (
                "  vs a copy without nodes' foreign keys",
                format!("pgbench {tps:.0}"),
            ),
            None => (
                "node creation rate, write-heavy (req/s)",
                format!("pgbench {tps:.0} (no FKs)"),
            ),
        };
        println!(
            "{:<44} {:>12.0} {:>26} {:>8.2}",
            label,
            write_row.rps,
            baseline,
            write_row.rps / tps
        );
    }
    if let Some(rows) = args.pgbench_rows_64 {
        println!(
            "{:<44} {:>12.0} {:>26} {:>8.2}",
            "node creation vs 64-row inserts (ceiling)",
            write_row.rps,
            format!("pgbench {rows:.0} rows/s"),
            write_row.rps / rows
        );
    }
    println!(
        "{:<44} {:>12.2} {:>26} {:>8.2}",
        "write-heavy p95 (ms)",
        write_row.p95,
        "15 target",
        write_row.p95 / 15.0
    );
    println!(
        "{:<44} {:>12.2} {:>26} {:>8}",
        "mixed p95 (ms)", mixed_row.p95, "no target", "-"
    );
    println!(
        "{:<44} {:>12.2} {:>26} {:>8.2}",
        format!("/viz p95 at {} nodes (ms)", args.galaxy_nodes),
        viz_p95,
        "5 target",
        viz_p95 / 5.0
    );
    if let Some(db_p95) = ceiling_p95 {
        println!(
            "{:<44} {:>12.2} {:>26} {:>8.2}",
            "/viz p95 vs the database alone (ms)",
            viz_p95,
            format!("pgbench {db_p95:.2}"),
            viz_p95 / db_p95
        );
    }
    println!(
        "{:<44} {:>12} {:>26} {:>8}",
        "errors (all scenarios)",
        format!("{total_errors}/{total}"),
        "0 target",
        "-"
    );
    Ok(())
}
