//! Fan-out of node events to many STOMP subscribers over real loopback WebSockets.
//!
//! Figure: the realtime push (`/ws-mutr/websocket`, STOMP framing per subscriber, hub, session
//! state machine). Baseline, in the same run and with the same clients: a bare axum WebSocket
//! server that forwards one pre-encoded frame per event from a broadcast channel, the floor any
//! WebSocket fan-out pays. Prints deliveries per second and publish-to-receive latency.
//!
//! `MUTR_BENCH_SUBSCRIBERS` (default 500) and `MUTR_BENCH_EVENTS` (default 200) size the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use mutr_api::realtime::{GALAXY_TOPIC, Realtime, RealtimeArgs};
use tokio::sync::broadcast;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// The allocator `mutr-api` serves the push with (`src/main.rs`), so that the push is measured
/// as it runs in production; the bare server and the clients share it. Under glibc's allocator
/// `malloc`, `free`, `realloc` and `malloc_consolidate` were 13% of the push's own samples.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    realtime: RealtimeArgs,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An event body shaped like a node, carrying its publication time.
fn body(start: Instant) -> String {
    let t = start.elapsed().as_nanos();
    format!(
        r#"{{"t":{t},"id":1,"content":"{}","authorNickname":"차분한_구름_4821","topic":null,"emotion":"neutral","x":1.5,"y":-3.25,"z":12.0,"analysisStatus":"PENDING"}}"#,
        "별빛 ".repeat(40)
    )
}

fn sent_at(text: &str) -> Option<u128> {
    let rest = &text[text.find("{\"t\":")? + 5..];
    rest[..rest.find(',')?].parse().ok()
}

/// Reads `events` messages; the latency of each, in microseconds.
async fn read_events<S>(ws: &mut S, events: usize, start: Instant) -> Vec<u64>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut latencies = Vec::with_capacity(events);
    while latencies.len() < events {
        let msg = ws.next().await.expect("open").expect("message");
        let Message::Text(text) = msg else { continue };
        if let Some(t) = sent_at(&text) {
            let now = start.elapsed().as_nanos();
            latencies.push(u64::try_from((now - t) / 1000).unwrap_or(u64::MAX));
        }
    }
    latencies
}

struct Outcome {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn outcome(mut latencies: Vec<u64>, elapsed: Duration) -> Outcome {
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    Outcome {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

async fn realtime_run(subscribers: usize, events: usize) -> Outcome {
    let mut args = Cli::parse_from(["bench"]).realtime;
    args.ws_max_sessions = subscribers + 10;
    args.ws_send_buffer = events.max(256) * 2;
    let shutdown = CancellationToken::new();
    let realtime = Realtime::start(args, None, shutdown.clone())
        .await
        .expect("realtime");
    let addr = serve(realtime.router(), &shutdown).await;
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..subscribers {
        let (mut ws, _) = connect_async(format!("ws://{addr}/ws-mutr/websocket"))
            .await
            .expect("connect");
        ws.send(Message::text(
            "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0",
        ))
        .await
        .unwrap();
        ws.send(Message::text(format!(
            "SUBSCRIBE\nid:0\ndestination:{GALAXY_TOPIC}\nreceipt:r\n\n\0"
        )))
        .await
        .unwrap();
        // CONNECTED, then RECEIPT.
        let mut seen = 0;
        while seen < 2 {
            if let Some(Ok(Message::Text(_))) = ws.next().await {
                seen += 1;
            }
        }
        clients.push(tokio::spawn(async move {
            read_events(&mut ws, events, start).await
        }));
    }
    let t0 = Instant::now();
    for _ in 0..events {
        realtime.publish(GALAXY_TOPIC, body(start)).await;
        tokio::task::yield_now().await;
    }
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.expect("client"));
    }
    let elapsed = t0.elapsed();
    shutdown.cancel();
    outcome(latencies, elapsed)
}

async fn bare(State(tx): State<broadcast::Sender<Arc<str>>>, ws: WebSocketUpgrade) -> Response {
    let rx = tx.subscribe();
    ws.on_upgrade(move |socket| forward(socket, rx))
}

async fn forward(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<str>>) {
    while let Ok(frame) = rx.recv().await {
        if socket
            .send(AxumMessage::Text(frame.as_ref().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Serves `router` on a free loopback port until `shutdown` is cancelled.
async fn serve(router: Router, shutdown: &CancellationToken) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    addr
}

async fn baseline_run(subscribers: usize, events: usize) -> Outcome {
    let (tx, _) = broadcast::channel::<Arc<str>>(events.max(256) * 2);
    let router = Router::new().route("/ws", get(bare)).with_state(tx.clone());
    let shutdown = CancellationToken::new();
    let addr = serve(router, &shutdown).await;
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..subscribers {
        let (mut ws, _) = connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("connect");
        clients.push(tokio::spawn(async move {
            read_events(&mut ws, events, start).await
        }));
    }
    while tx.receiver_count() < subscribers {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t0 = Instant::now();
    for _ in 0..events {
        let frame = format!(
            "MESSAGE\ndestination:{GALAXY_TOPIC}\ncontent-type:application/json\nsubscription:0\nmessage-id:1\n\n{}\0",
            body(start)
        );
        let _ = tx.send(frame.into());
        tokio::task::yield_now().await;
    }
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.expect("client"));
    }
    let elapsed = t0.elapsed();
    shutdown.cancel();
    outcome(latencies, elapsed)
}

#[tokio::main]
async fn main() {
    let subscribers = env_usize("MUTR_BENCH_SUBSCRIBERS", 500);
    let events = env_usize("MUTR_BENCH_EVENTS", 200);
    let baseline = baseline_run(subscribers, events).await;
    let figure = realtime_run(subscribers, events).await;
    println!("realtime fan-out: {subscribers} WebSocket subscribers x {events} events (loopback)");
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "figure", "STOMP push", "bare WS", "ratio"
    );
    let row = |name: &str, a: f64, b: f64| {
        println!("{name:<34} {a:>14.1} {b:>14.1} {:>8.2}", a / b);
    };
    row("deliveries/s", figure.per_second, baseline.per_second);
    row(
        "publish-to-receive p50 (ms)",
        figure.p50_ms,
        baseline.p50_ms,
    );
    row(
        "publish-to-receive p99 (ms)",
        figure.p99_ms,
        baseline.p99_ms,
    );
}
