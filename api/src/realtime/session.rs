//! One STOMP session, independent of its transport: reads client bytes from a `Stream`, writes
//! frames as text to a `Sink`, and delivers hub events to the session's subscriptions.
//!
//! The session answers `CONNECT`/`STOMP` with `CONNECTED` (negotiating the version and the
//! heart-beats), keeps subscriptions, answers `receipt` headers, and ends on `DISCONNECT`, on an
//! invalid frame (after an `ERROR`), when the client stops sending heart-beats, when it falls too
//! far behind the events (slow consumer), when a write does not complete in time, or on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hub::{Event, Hub};
use super::metrics as m;
use super::stomp::{self, DecodeError, Decoder, Frame, Version};

/// The limits and timings of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest client frame (command, headers and body) in bytes.
    pub max_frame: usize,
    /// How often the server offers to send heart-beats (0: never).
    pub heartbeat_send: Duration,
    /// How often the server wants the client's heart-beats (0: not at all).
    pub heartbeat_receive: Duration,
    /// How many negotiated receive intervals may pass without a byte before the session ends.
    pub heartbeat_tolerance: u32,
    /// How long a new connection may take to send `CONNECT`.
    pub connect_timeout: Duration,
    /// How long one write to the transport may take before the client counts as gone.
    pub send_timeout: Duration,
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Value of the `server` header of `CONNECTED`.
    pub server_name: String,
}

/// Why a session ended; the transport picks its close code from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent `DISCONNECT`.
    Disconnect,
    /// The client closed the transport.
    TransportClosed,
    /// The client sent something invalid; an `ERROR` frame was sent.
    ProtocolError,
    /// No `CONNECT` within the connect timeout.
    ConnectTimeout,
    /// The client's heart-beats stopped.
    HeartbeatTimeout,
    /// The session fell more events behind than its buffer holds.
    SlowConsumer,
    /// A write did not complete within the send timeout.
    SendTimeout,
    /// The server is shutting down or closing every session.
    Shutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Disconnect => "disconnect",
            CloseReason::TransportClosed => "transport_closed",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Heart-beat intervals agreed in `CONNECT`/`CONNECTED`, `None` meaning none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartBeats {
    /// How often this server sends.
    pub send: Option<Duration>,
    /// How often the client promised to send.
    pub receive: Option<Duration>,
}

/// Negotiates heart-beats from the client's `heart-beat: cx,cy` header and the server's wishes,
/// as STOMP 1.1+ defines: each side sends at the larger of what it can and what the other wants.
pub fn negotiate_heartbeats(
    header: Option<&str>,
    server_send: Duration,
    server_receive: Duration,
) -> Result<HeartBeats, &'static str> {
    let (cx, cy) = match header {
        None => (0u64, 0u64),
        Some(h) => {
            let (a, b) = h.split_once(',').ok_or("invalid heart-beat header")?;
            let a = a.trim().parse().map_err(|_| "invalid heart-beat header")?;
            let b = b.trim().parse().map_err(|_| "invalid heart-beat header")?;
            (a, b)
        }
    };
    let pick = |client: u64, server: Duration| {
        let server = u64::try_from(server.as_millis()).unwrap_or(u64::MAX);
        (client != 0 && server != 0).then(|| Duration::from_millis(client.max(server)))
    };
    Ok(HeartBeats {
        send: pick(cy, server_send),
        receive: pick(cx, server_receive),
    })
}

/// The only destinations clients may subscribe to: the broadcast topics.
fn subscribable(destination: &str) -> bool {
    destination.starts_with("/topic/") && destination.len() > "/topic/".len()
}

struct Subscription {
    destination: String,
}

/// The state of one session between frames.
struct State<'a> {
    config: &'a SessionConfig,
    session_id: &'a str,
    hub: &'a Hub,
    decoder: Decoder,
    version: Option<Version>,
    heartbeats: HeartBeats,
    subscriptions: HashMap<String, Subscription>,
    events: Option<broadcast::Receiver<Arc<Event>>>,
    next_message_id: u64,
}

enum Flow {
    Continue,
    Close(CloseReason),
}

/// Runs the session until it ends, and says why. `incoming` yields the bytes the client sent
/// (an empty chunk only marks activity, such as a WebSocket ping); `outgoing` takes whole frames
/// and heart-beats as text. The caller closes the transport afterwards.
pub async fn run<I, O>(
    mut incoming: I,
    mut outgoing: O,
    hub: &Hub,
    config: &SessionConfig,
    session_id: &str,
    shutdown: CancellationToken,
) -> CloseReason
where
    I: Stream<Item = Bytes> + Unpin,
    O: Sink<String> + Unpin,
{
    let mut state = State {
        config,
        session_id,
        hub,
        decoder: Decoder::new(config.max_frame),
        version: None,
        heartbeats: HeartBeats {
            send: None,
            receive: None,
        },
        subscriptions: HashMap::new(),
        events: None,
        next_message_id: 0,
    };
    let started = Instant::now();
    let mut last_read = started;
    let mut last_write = started;
    // Created once: a fresh cancellation or timer future per event would lock the token tree and
    // touch the timer wheel for every delivery of every session.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut deadline = state.next_deadline(started, last_read, last_write);
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        let next = state.next_deadline(started, last_read, last_write);
        if next != deadline {
            deadline = next;
            timer.as_mut().reset(deadline);
        }
        let flow = tokio::select! {
            biased;
            () = &mut cancelled => Flow::Close(CloseReason::Shutdown),
            data = incoming.next() => match data {
                None => Flow::Close(CloseReason::TransportClosed),
                Some(data) => {
                    last_read = Instant::now();
                    state.on_data(&data, &mut outgoing, &mut last_write).await
                }
            },
            event = recv_event(&mut state.events) => match event {
                Ok(event) => state.deliver(&event, &mut outgoing, &mut last_write).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(session = session_id, missed, "slow STOMP subscriber disconnected");
                    Flow::Close(CloseReason::SlowConsumer)
                }
                Err(broadcast::error::RecvError::Closed) => Flow::Close(CloseReason::Shutdown),
            },
            () = &mut timer => {
                state.on_timer(started, last_read, &mut outgoing, &mut last_write).await
            }
        };
        if let Flow::Close(reason) = flow {
            return reason;
        }
    }
}

/// Sends `item`, failing with `SendError::Timeout` when the sink is not ready or does not flush
/// within `timeout`. A sink that is ready at once costs no timer.
pub async fn send_within<O, T>(out: &mut O, item: T, timeout: Duration) -> Result<(), SendError>
where
    O: Sink<T> + Unpin,
{
    within(
        futures::future::poll_fn(|cx| out.poll_ready_unpin(cx)),
        timeout,
    )
    .await?;
    out.start_send_unpin(item).map_err(|_| SendError::Closed)?;
    within(
        futures::future::poll_fn(|cx| out.poll_flush_unpin(cx)),
        timeout,
    )
    .await
}

/// Runs one step of a write within `timeout`, arming a timer only when it does not complete at
/// once.
pub(crate) async fn within<F, E>(mut fut: F, timeout: Duration) -> Result<(), SendError>
where
    F: Future<Output = Result<(), E>> + Unpin,
{
    let result = match (&mut fut).now_or_never() {
        Some(r) => r,
        None => tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| SendError::Timeout)?,
    };
    result.map_err(|_| SendError::Closed)
}

/// Why [`send_within`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    Closed,
    Timeout,
}

async fn recv_event(
    events: &mut Option<broadcast::Receiver<Arc<Event>>>,
) -> Result<Arc<Event>, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl State<'_> {
    /// When the timer must next fire: the connect deadline before `CONNECT`, then the earlier of
    /// the next heart-beat to send and the moment the client's silence ends the session.
    fn next_deadline(&self, started: Instant, last_read: Instant, last_write: Instant) -> Instant {
        if self.version.is_none() {
            return started + self.config.connect_timeout;
        }
        let far = last_read + Duration::from_secs(24 * 3600);
        let send = self.heartbeats.send.map_or(far, |d| last_write + d);
        let receive = self.receive_deadline(last_read).unwrap_or(far);
        send.min(receive)
    }

    fn receive_deadline(&self, last_read: Instant) -> Option<Instant> {
        self.heartbeats
            .receive
            .map(|d| last_read + d * self.config.heartbeat_tolerance.max(1))
    }

    async fn on_timer<O: Sink<String> + Unpin>(
        &mut self,
        started: Instant,
        last_read: Instant,
        out: &mut O,
        last_write: &mut Instant,
    ) -> Flow {
        let now = Instant::now();
        if self.version.is_none() {
            if now >= started + self.config.connect_timeout {
                return Flow::Close(CloseReason::ConnectTimeout);
            }
            return Flow::Continue;
        }
        if self.receive_deadline(last_read).is_some_and(|d| now >= d) {
            tracing::debug!(
                session = self.session_id,
                "STOMP client heart-beats stopped"
            );
            return Flow::Close(CloseReason::HeartbeatTimeout);
        }
        if self.heartbeats.send.is_some_and(|d| now >= *last_write + d) {
            return self.write(out, "\n".to_owned(), last_write).await;
        }
        Flow::Continue
    }

    async fn write<O: Sink<String> + Unpin>(
        &self,
        out: &mut O,
        text: String,
        last_write: &mut Instant,
    ) -> Flow {
        match send_within(out, text, self.config.send_timeout).await {
            Ok(()) => {
                *last_write = Instant::now();
                Flow::Continue
            }
            Err(SendError::Closed) => Flow::Close(CloseReason::TransportClosed),
            Err(SendError::Timeout) => Flow::Close(CloseReason::SendTimeout),
        }
    }

    async fn send_frame<O: Sink<String> + Unpin>(
        &self,
        out: &mut O,
        frame: &Frame,
        last_write: &mut Instant,
    ) -> Flow {
        let text = frame.encode(self.version.unwrap_or(Version::V1_2));
        self.write(out, text, last_write).await
    }

    /// Sends `ERROR` and ends the session.
    async fn error<O: Sink<String> + Unpin>(
        &self,
        out: &mut O,
        message: &str,
        detail: &str,
        request: Option<&Frame>,
        last_write: &mut Instant,
    ) -> Flow {
        tracing::debug!(session = self.session_id, message, "STOMP ERROR");
        let mut frame = Frame::new("ERROR")
            .header("message", message)
            .header("content-type", "text/plain");
        if let Some(receipt) = request.and_then(|f| f.get("receipt")) {
            frame = frame.header("receipt-id", receipt);
        }
        if self.version.is_none() {
            frame = frame.header("version", Version::SUPPORTED);
        }
        let frame = frame.body(detail.to_owned());
        // The session ends whether or not the ERROR got through.
        let _ = self.send_frame(out, &frame, last_write).await;
        Flow::Close(CloseReason::ProtocolError)
    }

    async fn on_data<O: Sink<String> + Unpin>(
        &mut self,
        data: &[u8],
        out: &mut O,
        last_write: &mut Instant,
    ) -> Flow {
        self.decoder.push(data);
        loop {
            match self.decoder.next_frame() {
                Ok(None) => return Flow::Continue,
                Ok(Some(frame)) => {
                    if let Flow::Close(reason) = self.on_frame(frame, out, last_write).await {
                        return Flow::Close(reason);
                    }
                }
                Err(e) => {
                    let message = match e {
                        DecodeError::TooLarge { .. } => "frame too large",
                        _ => "malformed frame",
                    };
                    return self
                        .error(out, message, &e.to_string(), None, last_write)
                        .await;
                }
            }
        }
    }

    async fn on_frame<O: Sink<String> + Unpin>(
        &mut self,
        frame: Frame,
        out: &mut O,
        last_write: &mut Instant,
    ) -> Flow {
        if self.version.is_none() {
            return match frame.command.as_str() {
                "CONNECT" | "STOMP" => self.on_connect(&frame, out, last_write).await,
                _ => {
                    self.error(
                        out,
                        "not connected",
                        "The first frame must be CONNECT.",
                        Some(&frame),
                        last_write,
                    )
                    .await
                }
            };
        }
        match frame.command.as_str() {
            "SUBSCRIBE" => {
                let (Some(id), Some(destination)) = (frame.get("id"), frame.get("destination"))
                else {
                    return self
                        .error(
                            out,
                            "invalid SUBSCRIBE",
                            "SUBSCRIBE needs the id and destination headers.",
                            Some(&frame),
                            last_write,
                        )
                        .await;
                };
                if !subscribable(destination) {
                    return self
                        .error(
                            out,
                            "unknown destination",
                            "Only /topic/ destinations can be subscribed to.",
                            Some(&frame),
                            last_write,
                        )
                        .await;
                }
                if self.subscriptions.contains_key(id) {
                    return self
                        .error(
                            out,
                            "duplicate subscription id",
                            "A subscription with this id exists already.",
                            Some(&frame),
                            last_write,
                        )
                        .await;
                }
                if self.subscriptions.len() >= self.config.max_subscriptions {
                    return self
                        .error(
                            out,
                            "too many subscriptions",
                            "This session holds as many subscriptions as allowed.",
                            Some(&frame),
                            last_write,
                        )
                        .await;
                }
                self.subscriptions.insert(
                    id.to_owned(),
                    Subscription {
                        destination: destination.to_owned(),
                    },
                );
                if self.events.is_none() {
                    self.events = Some(self.hub.subscribe());
                }
            }
            "UNSUBSCRIBE" => {
                let Some(id) = frame.get("id") else {
                    return self
                        .error(
                            out,
                            "invalid UNSUBSCRIBE",
                            "UNSUBSCRIBE needs the id header.",
                            Some(&frame),
                            last_write,
                        )
                        .await;
                };
                self.subscriptions.remove(id);
                if self.subscriptions.is_empty() {
                    // Stop buffering events nobody here reads.
                    self.events = None;
                }
            }
            "DISCONNECT" => {
                let _ = self.receipt(&frame, out, last_write).await;
                return Flow::Close(CloseReason::Disconnect);
            }
            // Subscriptions are auto-acknowledged; nothing is redelivered.
            "ACK" | "NACK" => {}
            "SEND" | "BEGIN" | "COMMIT" | "ABORT" => {
                return self
                    .error(
                        out,
                        "not allowed",
                        "Clients only subscribe; events are published by the server.",
                        Some(&frame),
                        last_write,
                    )
                    .await;
            }
            "CONNECT" | "STOMP" => {
                return self
                    .error(
                        out,
                        "already connected",
                        "CONNECT was already received.",
                        Some(&frame),
                        last_write,
                    )
                    .await;
            }
            _ => {
                return self
                    .error(
                        out,
                        "unknown command",
                        "Unknown STOMP command.",
                        Some(&frame),
                        last_write,
                    )
                    .await;
            }
        }
        self.receipt(&frame, out, last_write).await
    }

    async fn receipt<O: Sink<String> + Unpin>(
        &self,
        frame: &Frame,
        out: &mut O,
        last_write: &mut Instant,
    ) -> Flow {
        match frame.get("receipt") {
            Some(receipt) => {
                let reply = Frame::new("RECEIPT").header("receipt-id", receipt);
                self.send_frame(out, &reply, last_write).await
            }
            None => Flow::Continue,
        }
    }

    async fn on_connect<O: Sink<String> + Unpin>(
        &mut self,
        frame: &Frame,
        out: &mut O,
        last_write: &mut Instant,
    ) -> Flow {
        let Some(version) = Version::negotiate(frame.get("accept-version")) else {
            return self
                .error(
                    out,
                    "unsupported protocol version",
                    "Supported protocol versions are 1.0, 1.1 and 1.2.",
                    Some(frame),
                    last_write,
                )
                .await;
        };
        let heartbeats = if version == Version::V1_0 {
            HeartBeats {
                send: None,
                receive: None,
            }
        } else {
            match negotiate_heartbeats(
                frame.get("heart-beat"),
                self.config.heartbeat_send,
                self.config.heartbeat_receive,
            ) {
                Ok(h) => h,
                Err(e) => return self.error(out, e, e, Some(frame), last_write).await,
            }
        };
        // Reads are public: credentials are accepted and not required. They are never logged.
        tracing::debug!(
            session = self.session_id,
            version = version.as_str(),
            member = frame.get("Authorization").is_some(),
            guest = frame.get("X-Guest-Token").is_some(),
            "STOMP CONNECT"
        );
        self.version = Some(version);
        self.heartbeats = heartbeats;
        self.decoder.set_version(version);
        let millis = |d: Option<Duration>| d.map_or(0, |d| d.as_millis());
        let mut reply = Frame::new("CONNECTED")
            .header("version", version.as_str())
            .header(
                "heart-beat",
                format!("{},{}", millis(heartbeats.send), millis(heartbeats.receive)),
            )
            .header("server", self.config.server_name.clone())
            .header("session", self.session_id);
        if version == Version::V1_0 {
            reply.headers.retain(|(n, _)| n != "heart-beat");
        }
        if let Flow::Close(r) = self.send_frame(out, &reply, last_write).await {
            return Flow::Close(r);
        }
        self.receipt(frame, out, last_write).await
    }

    async fn deliver<O: Sink<String> + Unpin>(
        &mut self,
        event: &Event,
        out: &mut O,
        last_write: &mut Instant,
    ) -> Flow {
        let version = self.version.unwrap_or(Version::V1_2);
        let mut texts = Vec::new();
        for (id, sub) in &self.subscriptions {
            if sub.destination != event.destination {
                continue;
            }
            self.next_message_id += 1;
            let message_id = format!("{}-{}", self.session_id, self.next_message_id);
            texts.push(stomp::encode_message(
                version,
                &event.destination,
                id,
                &message_id,
                "application/json",
                &event.body,
            ));
        }
        let count = texts.len() as u64;
        for text in texts {
            if let Flow::Close(r) = self.write(out, text, last_write).await {
                return Flow::Close(r);
            }
        }
        if count > 0 {
            metrics::counter!(m::EVENTS_DELIVERED).increment(count);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    fn config() -> SessionConfig {
        SessionConfig {
            max_frame: 1024,
            heartbeat_send: Duration::from_secs(10),
            heartbeat_receive: Duration::from_secs(10),
            heartbeat_tolerance: 2,
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            max_subscriptions: 2,
            server_name: "mutr/test".to_owned(),
        }
    }

    /// A session driven by channels: bytes in, frames out, and its end.
    struct Harness {
        input: mpsc::UnboundedSender<Bytes>,
        output: mpsc::Receiver<String>,
        decoder: Decoder,
        hub: Hub,
        shutdown: CancellationToken,
        ended: tokio::task::JoinHandle<CloseReason>,
    }

    impl Harness {
        fn start(config: SessionConfig, hub_capacity: usize, out_capacity: usize) -> Self {
            let (input, incoming) = mpsc::unbounded();
            let (outgoing, output) = mpsc::channel(out_capacity);
            let hub = Hub::new(hub_capacity);
            let shutdown = CancellationToken::new();
            let ended = {
                let hub = hub.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(
                    async move { run(incoming, outgoing, &hub, &config, "s1", shutdown).await },
                )
            };
            Harness {
                input,
                output,
                decoder: Decoder::new(1 << 20),
                hub,
                shutdown,
                ended,
            }
        }

        fn send(&self, text: &str) {
            self.input
                .unbounded_send(Bytes::copy_from_slice(text.as_bytes()))
                .expect("session alive");
        }

        /// The next frame the session wrote, skipping heart-beats.
        async fn frame(&mut self) -> Frame {
            loop {
                if let Some(f) = self.decoder.next_frame().expect("valid server frame") {
                    return f;
                }
                let text = self.output.next().await.expect("session wrote a frame");
                self.decoder.push(text.as_bytes());
            }
        }

        async fn connect(&mut self) -> Frame {
            self.send("CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\n\0");
            let f = self.frame().await;
            assert_eq!(f.command, "CONNECTED", "{f:?}");
            f
        }

        async fn ended(self) -> CloseReason {
            self.ended.await.expect("session task")
        }
    }

    fn event(destination: &str, body: &str) -> Arc<Event> {
        Arc::new(Event {
            destination: destination.to_owned(),
            body: body.to_owned(),
        })
    }

    #[tokio::test]
    async fn connect_subscribe_receive_disconnect() {
        let mut h = Harness::start(config(), 16, 16);
        let connected = h.connect().await;
        assert_eq!(connected.get("version"), Some("1.2"));
        assert_eq!(connected.get("heart-beat"), Some("10000,10000"));
        assert_eq!(connected.get("session"), Some("s1"));

        h.send("SUBSCRIBE\nid:sub-0\ndestination:/topic/galaxy/public\nreceipt:r1\n\n\0");
        let receipt = h.frame().await;
        assert_eq!(receipt.command, "RECEIPT");
        assert_eq!(receipt.get("receipt-id"), Some("r1"));

        h.hub.deliver(event("/topic/other", "{}"));
        h.hub
            .deliver(event("/topic/galaxy/public", r#"{"id":1,"content":"한"}"#));
        let msg = h.frame().await;
        assert_eq!(msg.command, "MESSAGE");
        assert_eq!(msg.get("destination"), Some("/topic/galaxy/public"));
        assert_eq!(msg.get("subscription"), Some("sub-0"));
        assert_eq!(msg.get("content-type"), Some("application/json"));
        assert_eq!(msg.get("message-id"), Some("s1-1"));
        assert_eq!(&msg.body[..], r#"{"id":1,"content":"한"}"#.as_bytes());

        h.send("DISCONNECT\nreceipt:bye\n\n\0");
        let receipt = h.frame().await;
        assert_eq!(receipt.command, "RECEIPT");
        assert_eq!(receipt.get("receipt-id"), Some("bye"));
        assert_eq!(h.ended().await, CloseReason::Disconnect);
    }

    #[tokio::test]
    async fn unsubscribe_stops_delivery() {
        let mut h = Harness::start(config(), 16, 16);
        h.connect().await;
        h.send("SUBSCRIBE\nid:a\ndestination:/topic/x\n\n\0");
        h.send("SUBSCRIBE\nid:b\ndestination:/topic/y\n\n\0");
        h.send("UNSUBSCRIBE\nid:a\nreceipt:r\n\n\0");
        assert_eq!(h.frame().await.command, "RECEIPT");
        h.hub.deliver(event("/topic/x", "x"));
        h.hub.deliver(event("/topic/y", "y"));
        let msg = h.frame().await;
        assert_eq!(msg.get("subscription"), Some("b"));
        assert_eq!(&msg.body[..], b"y");
    }

    #[tokio::test]
    async fn frame_before_connect_is_an_error() {
        let mut h = Harness::start(config(), 16, 16);
        h.send("SUBSCRIBE\nid:a\ndestination:/topic/x\nreceipt:77\n\n\0");
        let err = h.frame().await;
        assert_eq!(err.command, "ERROR");
        assert_eq!(err.get("message"), Some("not connected"));
        assert_eq!(err.get("receipt-id"), Some("77"));
        assert_eq!(h.ended().await, CloseReason::ProtocolError);
    }

    #[tokio::test]
    async fn malformed_frame_gets_error_and_closes() {
        let mut h = Harness::start(config(), 16, 16);
        h.connect().await;
        h.send("SUBSCRIBE\nno colon here\n\n\0");
        let err = h.frame().await;
        assert_eq!(err.command, "ERROR");
        assert_eq!(err.get("message"), Some("malformed frame"));
        assert_eq!(h.ended().await, CloseReason::ProtocolError);
    }

    #[tokio::test]
    async fn oversized_frame_gets_error_and_closes() {
        let mut h = Harness::start(config(), 16, 16);
        h.connect().await;
        h.send(&format!("SEND\ndestination:/x\n\n{}", "a".repeat(2000)));
        let err = h.frame().await;
        assert_eq!(err.get("message"), Some("frame too large"));
        assert_eq!(h.ended().await, CloseReason::ProtocolError);
    }

    #[tokio::test]
    async fn invalid_subscriptions_are_errors() {
        for (frame, message) in [
            ("SUBSCRIBE\nid:a\n\n\0", "invalid SUBSCRIBE"),
            (
                "SUBSCRIBE\nid:a\ndestination:/queue/x\n\n\0",
                "unknown destination",
            ),
            (
                "SEND\ndestination:/topic/galaxy/public\n\nhi\0",
                "not allowed",
            ),
            ("FROB\n\n\0", "unknown command"),
        ] {
            let mut h = Harness::start(config(), 16, 16);
            h.connect().await;
            h.send(frame);
            let err = h.frame().await;
            assert_eq!(err.command, "ERROR");
            assert_eq!(err.get("message"), Some(message), "{frame:?}");
            assert_eq!(h.ended().await, CloseReason::ProtocolError);
        }
    }

    #[tokio::test]
    async fn subscription_limit_and_duplicate_ids() {
        let mut h = Harness::start(config(), 16, 16);
        h.connect().await;
        h.send("SUBSCRIBE\nid:a\ndestination:/topic/x\n\n\0");
        h.send("SUBSCRIBE\nid:a\ndestination:/topic/y\n\n\0");
        assert_eq!(
            h.frame().await.get("message"),
            Some("duplicate subscription id")
        );

        let mut h = Harness::start(config(), 16, 16);
        h.connect().await;
        for id in ["a", "b", "c"] {
            h.send(&format!("SUBSCRIBE\nid:{id}\ndestination:/topic/x\n\n\0"));
        }
        assert_eq!(
            h.frame().await.get("message"),
            Some("too many subscriptions")
        );
    }

    #[tokio::test]
    async fn unsupported_version_is_refused() {
        let mut h = Harness::start(config(), 16, 16);
        h.send("CONNECT\naccept-version:2.0\n\n\0");
        let err = h.frame().await;
        assert_eq!(err.command, "ERROR");
        assert_eq!(err.get("version"), Some("1.0,1.1,1.2"));
        assert_eq!(h.ended().await, CloseReason::ProtocolError);
    }

    #[tokio::test]
    async fn stomp_command_and_version_1_0_without_heartbeats() {
        let mut h = Harness::start(config(), 16, 16);
        h.send("STOMP\n\n\0");
        let f = h.frame().await;
        assert_eq!(f.command, "CONNECTED");
        assert_eq!(f.get("version"), Some("1.0"));
        assert_eq!(f.get("heart-beat"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_heartbeats_and_ends_when_the_client_falls_silent() {
        let mut h = Harness::start(config(), 16, 16);
        h.connect().await;
        // The server sends a bare EOL every 10 s while idle.
        let beat = h.output.next().await.expect("heart-beat");
        assert_eq!(beat, "\n");
        // The client's heart-beats keep it alive...
        h.send("\n");
        let beat = h.output.next().await.expect("heart-beat");
        assert_eq!(beat, "\n");
        // ...and without them the session ends after 2 x 10 s.
        assert_eq!(h.ended().await, CloseReason::HeartbeatTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn connect_timeout() {
        let h = Harness::start(config(), 16, 16);
        assert_eq!(h.ended().await, CloseReason::ConnectTimeout);
    }

    #[test]
    fn heartbeat_negotiation() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(
            negotiate_heartbeats(Some("10000,10000"), s(5), s(20)),
            Ok(HeartBeats {
                send: Some(s(10)),
                receive: Some(s(20))
            })
        );
        assert_eq!(
            negotiate_heartbeats(Some("0,500"), s(5), s(20)),
            Ok(HeartBeats {
                send: Some(s(5)),
                receive: None
            })
        );
        assert_eq!(
            negotiate_heartbeats(Some("4000,0"), s(0), ms(10)),
            Ok(HeartBeats {
                send: None,
                receive: Some(s(4))
            })
        );
        assert_eq!(
            negotiate_heartbeats(None, s(5), s(5)),
            Ok(HeartBeats {
                send: None,
                receive: None
            })
        );
        assert!(negotiate_heartbeats(Some("x,1"), s(5), s(5)).is_err());
    }

    #[tokio::test]
    async fn slow_consumer_is_disconnected_with_bounded_memory() {
        // The transport takes nothing (capacity 1 and nobody reads), the hub holds 4 events.
        let mut cfg = config();
        cfg.send_timeout = Duration::from_secs(3600);
        let mut h = Harness::start(cfg, 4, 1);
        h.connect().await;
        h.send("SUBSCRIBE\nid:a\ndestination:/topic/x\nreceipt:r\n\n\0");
        assert_eq!(h.frame().await.command, "RECEIPT");
        // Take one message so the session blocks on the next write, then flood the hub.
        h.hub.deliver(event("/topic/x", "0"));
        assert_eq!(h.frame().await.command, "MESSAGE");
        for i in 1..100 {
            h.hub.deliver(event("/topic/x", &i.to_string()));
        }
        // Drain what the session can still write; it must end as a slow consumer.
        while h.output.next().await.is_some() {}
        assert_eq!(h.ended().await, CloseReason::SlowConsumer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_completes_ends_the_session() {
        let mut h = Harness::start(config(), 16, 1);
        h.connect().await;
        h.send("SUBSCRIBE\nid:a\ndestination:/topic/x\nreceipt:r\n\n\0");
        assert_eq!(h.frame().await.command, "RECEIPT");
        h.hub.deliver(event("/topic/x", "1"));
        h.hub.deliver(event("/topic/x", "2"));
        h.hub.deliver(event("/topic/x", "3"));
        // Nobody reads the output: the second write waits past the send timeout.
        let h_ended = h.ended;
        assert_eq!(h_ended.await.unwrap(), CloseReason::SendTimeout);
    }

    #[tokio::test]
    async fn shutdown_ends_the_session() {
        let mut h = Harness::start(config(), 16, 16);
        h.connect().await;
        h.shutdown.cancel();
        assert_eq!(h.ended().await, CloseReason::Shutdown);
    }
}
