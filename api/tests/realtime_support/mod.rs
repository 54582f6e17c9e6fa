//! Helpers of the realtime tests: the realtime router served on `127.0.0.1:0`, STOMP clients over
//! a raw WebSocket, SockJS's WebSocket transport and xhr-polling, and a private `redis-server`
//! that a test may stop and restart.

#![allow(dead_code)] // each test binary uses a different part of these helpers

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use mutr_api::realtime::stomp::{Decoder, Frame};
use mutr_api::realtime::{Realtime, RealtimeArgs};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

#[path = "../common/services.rs"]
mod services;
#[allow(unused_imports)] // not every realtime test binary breaks Redis
pub use services::PrivateRedis;

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Limits small enough that the tests run fast; each test changes what it exercises.
pub fn args() -> RealtimeArgs {
    RealtimeArgs {
        ws_max_frame_size: 4096,
        ws_send_buffer: 64,
        ws_send_timeout: Duration::from_secs(2),
        ws_heartbeat_send: Duration::from_secs(10),
        ws_heartbeat_receive: Duration::from_secs(10),
        ws_heartbeat_tolerance: 3,
        ws_connect_timeout: Duration::from_secs(5),
        ws_max_sessions: 100,
        ws_max_subscriptions: 8,
        ws_allowed_origins: vec!["*".to_owned()],
        sockjs_heartbeat: Duration::from_secs(25),
        sockjs_disconnect_delay: Duration::from_secs(5),
        sockjs_streaming_limit: 128 * 1024,
        // A channel of its own, so that tests sharing one Redis do not see each other's events.
        realtime_redis_channel: format!("mutr:test:{}", uuid::Uuid::new_v4().simple()),
        realtime_publish_queue: 1024,
        realtime_redis_timeout: Duration::from_millis(500),
        realtime_redis_ping_interval: Duration::from_millis(500),
        realtime_redis_retry_min: Duration::from_millis(20),
        realtime_redis_retry_max: Duration::from_millis(200),
    }
}

/// `REDIS_URL` from the environment (make test and CI export it).
#[track_caller]
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").expect("REDIS_URL must point at a Redis for the realtime tests")
}

/// The realtime router of one replica, served on a free loopback port.
pub struct Server {
    pub addr: SocketAddr,
    pub realtime: Realtime,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(args: RealtimeArgs, redis_url: Option<String>) -> Server {
        // RUST_LOG=mutr_api=debug shows the server's side of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let shutdown = CancellationToken::new();
        let realtime = Realtime::start(args, redis_url, shutdown.clone())
            .await
            .expect("realtime starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let router = realtime.router();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .expect("server");
        });
        Server {
            addr,
            realtime,
            shutdown,
            task,
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Waits until the Redis bridge is both publishing and subscribed.
    pub async fn wait_redis(&self) {
        let rt = self.realtime.clone();
        wait_for("the Redis bridge to connect", || {
            let rt = rt.clone();
            async move { rt.redis_connected() == Some(true) }
        })
        .await;
    }

    pub async fn wait_sessions(&self, n: usize) {
        let rt = self.realtime.clone();
        wait_for(&format!("{n} open sessions"), || {
            let rt = rt.clone();
            async move { rt.session_count() == n }
        })
        .await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(DEADLINE, self.task).await;
    }
}

/// Polls `condition` until it holds, failing after [`DEADLINE`].
#[track_caller]
pub fn wait_for<'a, F, Fut>(what: &'a str, mut condition: F) -> impl Future<Output = ()> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = bool> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let start = Instant::now();
        while !condition().await {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what} (at {caller})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How a STOMP client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// STOMP frames as WebSocket messages at `/ws-mutr/websocket`.
    RawWebSocket,
    /// SockJS framing at `/ws-mutr/{server}/{session}/websocket`.
    SockJsWebSocket,
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Frame(Frame),
    /// A STOMP heart-beat (a bare EOL).
    HeartBeat,
    /// A SockJS `h` frame.
    SockJsHeartBeat,
    /// The connection closed: the WebSocket close code, or the SockJS close frame's.
    Closed(Option<u16>),
}

/// A STOMP client over a real WebSocket (tokio-tungstenite).
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    transport: Transport,
    decoder: Decoder,
    pending: std::collections::VecDeque<Seen>,
}

impl WsClient {
    pub async fn open(server: &Server, transport: Transport) -> WsClient {
        WsClient::open_with(server, transport, None).await
    }

    /// Opens a client whose socket receive buffer is `recv_buffer` bytes, so that a client that
    /// stops reading fills it quickly whatever the kernel's autotuning allows.
    pub async fn open_with(
        server: &Server,
        transport: Transport,
        recv_buffer: Option<u32>,
    ) -> WsClient {
        let url = match transport {
            Transport::RawWebSocket => server.ws("/ws-mutr/websocket"),
            Transport::SockJsWebSocket => server.ws(&format!(
                "/ws-mutr/{}/{}/websocket",
                rand::random_range(100..1000),
                uuid::Uuid::new_v4().simple()
            )),
        };
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = socket.connect(server.addr).await.expect("TCP connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("WebSocket upgrade");
        let mut client = WsClient {
            ws,
            transport,
            decoder: Decoder::new(1 << 22),
            pending: Default::default(),
        };
        if transport == Transport::SockJsWebSocket {
            let open = client.raw_text().await;
            assert_eq!(open.as_deref(), Some("o"), "SockJS open frame");
        }
        client
    }

    /// Opens and completes CONNECT.
    pub async fn connected(server: &Server, transport: Transport) -> WsClient {
        WsClient::connected_with(server, transport, None).await
    }

    pub async fn connected_with(
        server: &Server,
        transport: Transport,
        recv_buffer: Option<u32>,
    ) -> WsClient {
        let mut c = WsClient::open_with(server, transport, recv_buffer).await;
        c.send("CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:0,0\n\n\0")
            .await;
        let f = c.frame().await;
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        c
    }

    /// Subscribes and waits for the receipt, so that events published afterwards arrive.
    pub async fn subscribe(&mut self, id: &str, destination: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:sub-{id}\n\n\0"
        ))
        .await;
        let receipt = self.frame().await;
        assert_eq!(receipt.command, "RECEIPT", "{receipt:?}");
        assert_eq!(
            receipt.get("receipt-id"),
            Some(format!("sub-{id}").as_str())
        );
    }

    /// Sends STOMP text, framed for the transport.
    pub async fn send(&mut self, stomp: &str) {
        let text = match self.transport {
            Transport::RawWebSocket => stomp.to_owned(),
            Transport::SockJsWebSocket => serde_json::to_string(&[stomp]).expect("json"),
        };
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a text message as it is, without SockJS framing.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next text message, or `None` when the connection closed (with its close code kept).
    async fn raw_text(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("timed out waiting for a WebSocket message")
            {
                Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                Some(Ok(Message::Binary(b))) => {
                    return Some(String::from_utf8(b.to_vec()).expect("UTF-8"));
                }
                Some(Ok(Message::Close(frame))) => {
                    self.pending
                        .push_back(Seen::Closed(frame.map(|f| u16::from(f.code))));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    self.pending.push_back(Seen::Closed(None));
                    return None;
                }
            }
        }
    }

    /// The next thing the server sent.
    pub async fn next(&mut self) -> Seen {
        loop {
            if let Some(f) = self
                .decoder
                .next_frame()
                .expect("valid STOMP from the server")
            {
                return Seen::Frame(f);
            }
            if let Some(seen) = self.pending.pop_front() {
                return seen;
            }
            let Some(text) = self.raw_text().await else {
                continue;
            };
            match self.transport {
                Transport::RawWebSocket => self.push_stomp(&text),
                Transport::SockJsWebSocket => {
                    if text == "h" {
                        self.pending.push_back(Seen::SockJsHeartBeat);
                    } else if let Some(array) = text.strip_prefix('a') {
                        let messages: Vec<String> =
                            serde_json::from_str(array).expect("SockJS message array");
                        for m in messages {
                            self.push_stomp(&m);
                        }
                    } else if let Some(close) = text.strip_prefix('c') {
                        let (code, _reason): (u16, String) =
                            serde_json::from_str(close).expect("SockJS close frame");
                        self.pending.push_back(Seen::Closed(Some(code)));
                    } else {
                        panic!("unexpected SockJS frame {text:?}");
                    }
                }
            }
        }
    }

    fn push_stomp(&mut self, text: &str) {
        if text.chars().all(|c| c == '\n' || c == '\r') {
            self.pending.push_back(Seen::HeartBeat);
        } else {
            self.decoder.push(text.as_bytes());
        }
    }

    /// The next STOMP frame, skipping heart-beats; panics if the connection closes first.
    pub async fn frame(&mut self) -> Frame {
        loop {
            match self.next().await {
                Seen::Frame(f) => return f,
                Seen::HeartBeat | Seen::SockJsHeartBeat => continue,
                Seen::Closed(code) => panic!("connection closed ({code:?}) before a frame"),
            }
        }
    }

    /// Waits for the connection to close, skipping anything else; the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Seen::Closed(code) = self.next().await {
                return code;
            }
        }
    }
}

/// A STOMP client over SockJS xhr-polling (`POST .../xhr` and `.../xhr_send`).
pub struct XhrClient {
    http: reqwest::Client,
    base: String,
    decoder: Decoder,
    pending: std::collections::VecDeque<Seen>,
}

impl XhrClient {
    pub async fn open(server: &Server) -> XhrClient {
        let base = server.http(&format!(
            "/ws-mutr/{}/{}",
            rand::random_range(100..1000),
            uuid::Uuid::new_v4().simple()
        ));
        let mut c = XhrClient {
            http: reqwest::Client::new(),
            base,
            decoder: Decoder::new(1 << 22),
            pending: Default::default(),
        };
        assert_eq!(c.poll_raw().await, "o\n", "SockJS open frame");
        c
    }

    pub async fn poll_raw(&mut self) -> String {
        let r = self
            .http
            .post(format!("{}/xhr", self.base))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("xhr poll");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            "application/javascript; charset=UTF-8"
        );
        r.text().await.expect("xhr body")
    }

    pub async fn send(&mut self, stomp: &str) {
        let r = self
            .http
            .post(format!("{}/xhr_send", self.base))
            .header("content-type", "text/plain")
            .body(serde_json::to_string(&[stomp]).expect("json"))
            .send()
            .await
            .expect("xhr_send");
        assert_eq!(r.status(), 204, "xhr_send");
    }

    pub async fn next(&mut self) -> Seen {
        loop {
            if let Some(f) = self.decoder.next_frame().expect("valid STOMP") {
                return Seen::Frame(f);
            }
            if let Some(s) = self.pending.pop_front() {
                return s;
            }
            let body = self.poll_raw().await;
            let body = body
                .strip_suffix('\n')
                .expect("xhr frames end with a newline");
            if body == "h" {
                self.pending.push_back(Seen::SockJsHeartBeat);
            } else if let Some(array) = body.strip_prefix('a') {
                let messages: Vec<String> = serde_json::from_str(array).expect("array");
                for m in messages {
                    if m.chars().all(|c| c == '\n') {
                        self.pending.push_back(Seen::HeartBeat);
                    } else {
                        self.decoder.push(m.as_bytes());
                    }
                }
            } else if let Some(close) = body.strip_prefix('c') {
                let (code, _): (u16, String) = serde_json::from_str(close).expect("close");
                self.pending.push_back(Seen::Closed(Some(code)));
            } else {
                panic!("unexpected SockJS frame {body:?}");
            }
        }
    }

    pub async fn frame(&mut self) -> Frame {
        loop {
            match self.next().await {
                Seen::Frame(f) => return f,
                Seen::HeartBeat | Seen::SockJsHeartBeat => continue,
                Seen::Closed(code) => panic!("closed ({code:?}) before a frame"),
            }
        }
    }
}
