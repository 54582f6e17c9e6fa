//! Live push end to end: a node posted on one API replica, and its analysis, reach STOMP
//! subscribers of another replica (through Redis) over a raw WebSocket and over SockJS's WebSocket
//! transport.

mod common;

use std::time::Duration;

use common::{DEADLINE, TestServer, ok, procs::AiServer, wait_until};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How frames travel: bare STOMP text, or wrapped in SockJS frames.
#[derive(Clone, Copy)]
enum Framing {
    Raw,
    SockJs,
}

/// A minimal STOMP 1.2 client for the test.
struct Stomp {
    ws: Ws,
    framing: Framing,
    pending: Vec<String>,
}

impl Stomp {
    async fn connect(base: &str, framing: Framing) -> Self {
        let ws_base = base.replacen("http://", "ws://", 1);
        let url = match framing {
            Framing::Raw => format!("{ws_base}/ws-mutr/websocket"),
            Framing::SockJs => format!(
                "{ws_base}/ws-mutr/123/{}/websocket",
                uuid::Uuid::new_v4().simple()
            ),
        };
        let (ws, _) = connect_async(url).await.expect("websocket");
        let mut client = Self {
            ws,
            framing,
            pending: Vec::new(),
        };
        if let Framing::SockJs = framing {
            let open = client.ws.next().await.unwrap().unwrap();
            assert_eq!(open.into_text().unwrap().as_str(), "o");
        }
        client
            .send("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n")
            .await;
        let connected = client.frame().await;
        assert!(connected.starts_with("CONNECTED\n"), "{connected:?}");
        client
            .send("SUBSCRIBE\nid:0\ndestination:/topic/galaxy/public\nreceipt:sub-0\n\n")
            .await;
        let receipt = client.frame().await;
        assert!(
            receipt.starts_with("RECEIPT\n") && receipt.contains("receipt-id:sub-0"),
            "{receipt:?}"
        );
        client
    }

    async fn send(&mut self, frame: &str) {
        let frame = format!("{frame}\0");
        let text = match self.framing {
            Framing::Raw => frame,
            Framing::SockJs => serde_json::to_string(&[frame]).unwrap(),
        };
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next STOMP frame (heart-beat newlines skipped), failing after a deadline.
    async fn frame(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if !self.pending.is_empty() {
                    return self.pending.remove(0);
                }
                let message = self
                    .ws
                    .next()
                    .await
                    .expect("socket open")
                    .expect("socket ok");
                let Message::Text(text) = message else {
                    continue;
                };
                let frames: Vec<String> = match self.framing {
                    Framing::Raw => vec![text.as_str().to_owned()],
                    Framing::SockJs => match text.as_str().strip_prefix('a') {
                        Some(array) => serde_json::from_str(array).unwrap(),
                        None => continue, // "h" heart-beats
                    },
                };
                self.pending.extend(
                    frames
                        .into_iter()
                        .map(|f| {
                            f.trim_start_matches(['\n', '\r'])
                                .trim_end_matches('\0')
                                .to_owned()
                        })
                        .filter(|f| !f.is_empty()),
                );
            }
        })
        .await
        .expect("a STOMP frame within 10 s")
    }

    /// The body of the next MESSAGE, as JSON.
    async fn message(&mut self) -> Value {
        let frame = self.frame().await;
        assert!(frame.starts_with("MESSAGE\n"), "{frame:?}");
        assert!(
            frame.contains("destination:/topic/galaxy/public"),
            "{frame:?}"
        );
        let body = frame.split_once("\n\n").expect("headers end").1;
        serde_json::from_str(body).expect("MESSAGE body is JSON")
    }
}

/// Two replicas on one live-push channel and one AI server, both ready with their push linked.
async fn two_replicas(pool: PgPool, ai: &AiServer) -> (TestServer, TestServer) {
    let channel = format!("mutr:test:{}", uuid::Uuid::new_v4().simple());
    let flags = ["--realtime-redis-channel", channel.as_str()];
    let a = TestServer::start_with_ai(pool.clone(), &ai.url(), &flags).await;
    let b = TestServer::start_with_ai(pool, &ai.url(), &flags).await;
    for s in [&a, &b] {
        wait_until("the push to link to Redis", DEADLINE, || async {
            let r = s.http.get(s.url("/readyz")).send().await.unwrap();
            r.json::<Value>().await.unwrap()["data"]["push"] == "connected"
        })
        .await;
    }
    (a, b)
}

/// Reads messages until `want` (id, status) pairs were seen, each exactly once.
async fn expect_events(client: &mut Stomp, want: &[(i64, &str)], what: &str) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < want.len() {
        let m = client.message().await;
        let key = (
            m["id"].as_i64().unwrap(),
            m["analysisStatus"].as_str().unwrap().to_owned(),
        );
        assert!(
            want.iter().any(|(id, st)| *id == key.0 && *st == key.1),
            "{what}: unexpected event {m}"
        );
        assert!(
            !seen
                .iter()
                .any(|s| s["id"] == m["id"] && s["analysisStatus"] == m["analysisStatus"]),
            "{what}: event twice: {m}"
        );
        seen.push(m);
    }
    seen
}

/// Every replica delivers every event to its own subscribers, whichever replica produced it:
/// once when the node is created and once when its analysis ends.
#[sqlx::test]
async fn created_and_analysed_nodes_reach_subscribers_of_every_replica(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let (a, b) = two_replicas(pool, &ai).await;

    let mut on_a = Stomp::connect(&a.base, Framing::Raw).await;
    let mut on_b_raw = Stomp::connect(&b.base, Framing::Raw).await;
    let mut on_b_sockjs = Stomp::connect(&b.base, Framing::SockJs).await;

    let (token, _) = a.guest().await;
    let node = ok(a
        .post_node(&token, json!({"content": "실시간으로 보이나요?"}))
        .await)
    .await;
    let second = ok(a
        .post_node(&token, json!({"content": "둘째", "parentId": node["id"]}))
        .await)
    .await;
    let (first_id, second_id) = (node["id"].as_i64().unwrap(), second["id"].as_i64().unwrap());
    let want = [
        (first_id, "PENDING"),
        (first_id, "COMPLETED"),
        (second_id, "PENDING"),
        (second_id, "COMPLETED"),
    ];
    for (client, what) in [
        (&mut on_a, "same replica"),
        (&mut on_b_raw, "other replica, raw WebSocket"),
        (&mut on_b_sockjs, "other replica, SockJS"),
    ] {
        let seen = expect_events(client, &want, what).await;
        let created = seen
            .iter()
            .find(|m| m["id"] == node["id"] && m["analysisStatus"] == "PENDING")
            .unwrap();
        assert_eq!(
            *created, node,
            "{what}: the created event is the node as answered"
        );
        let analysed = seen
            .iter()
            .find(|m| m["id"] == second["id"] && m["analysisStatus"] == "COMPLETED")
            .unwrap();
        assert!(
            analysed["topic"].as_str().is_some_and(|t| !t.is_empty()),
            "{what}: {analysed}"
        );
        assert!(analysed["mutationFilter"].is_string(), "{what}: {analysed}");
        // A parent's analysis ends before its child's.
        let at = |id: i64, st: &str| {
            seen.iter()
                .position(|m| m["id"] == id && m["analysisStatus"] == st)
                .unwrap()
        };
        assert!(
            at(first_id, "COMPLETED") < at(second_id, "COMPLETED"),
            "{what}"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[sqlx::test]
async fn shutdown_closes_live_sessions(pool: PgPool) {
    let a = TestServer::start(pool).await;
    let mut client = Stomp::connect(&a.base, Framing::Raw).await;
    a.shutdown.cancel();
    // The session ends cleanly (an ERROR or a close frame, then the end of the stream).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = client.ws.next().await {
            if let Message::Close(_) = message {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "session still open 10 s after shutdown");
    a.stop().await;
}
