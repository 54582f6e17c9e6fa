//! Live push end to end: a node posted on one API replica reaches STOMP subscribers of another
//! replica (through Redis) over a raw WebSocket and over SockJS's WebSocket transport.

mod common;

use std::time::Duration;

use common::{TestServer, ok};
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

#[sqlx::test]
async fn created_node_reaches_subscribers_of_every_replica(pool: PgPool) {
    let channel = format!("mutr:test:{}", uuid::Uuid::new_v4().simple());
    let a = TestServer::start_live(pool.clone(), &channel).await;
    let b = TestServer::start_live(pool, &channel).await;

    let mut on_a = Stomp::connect(&a.base, Framing::Raw).await;
    let mut on_b_raw = Stomp::connect(&b.base, Framing::Raw).await;
    let mut on_b_sockjs = Stomp::connect(&b.base, Framing::SockJs).await;

    let (token, _) = a.guest().await;
    let node = ok(a
        .post_node(&token, json!({"content": "실시간으로 보이나요?"}))
        .await)
    .await;

    assert_eq!(on_a.message().await, node, "same replica");
    assert_eq!(
        on_b_raw.message().await,
        node,
        "other replica, raw WebSocket"
    );
    assert_eq!(on_b_sockjs.message().await, node, "other replica, SockJS");

    // Exactly once per subscriber: a second node is the next message everywhere.
    let second = ok(a
        .post_node(&token, json!({"content": "둘째", "parentId": node["id"]}))
        .await)
    .await;
    assert_eq!(on_b_raw.message().await, second);
    assert_eq!(on_a.message().await, second);
    a.stop().await;
    b.stop().await;
}

#[sqlx::test]
async fn shutdown_closes_live_sessions(pool: PgPool) {
    let channel = format!("mutr:test:{}", uuid::Uuid::new_v4().simple());
    let a = TestServer::start_live(pool, &channel).await;
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
