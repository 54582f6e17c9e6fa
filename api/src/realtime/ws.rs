//! WebSocket adapters: the raw STOMP WebSocket (`/ws-mutr/websocket`) and SockJS's WebSocket
//! transport (`/ws-mutr/{server}/{session}/websocket`), both driving a [`super::session`].

use std::future::ready;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::poll_fn;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

use super::Realtime;
use super::session::{CloseReason, within};
use super::sockjs::{self, Close};

/// Frames the session's output may queue ahead of the socket writer.
const WRITE_QUEUE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// STOMP frames are WebSocket messages.
    Raw,
    /// STOMP frames travel in SockJS `a[...]` frames, with `o`, `h` and `c[...]`.
    SockJs,
}

impl Framing {
    fn transport(self) -> &'static str {
        match self {
            Framing::Raw => "websocket",
            Framing::SockJs => "sockjs-websocket",
        }
    }
}

/// `GET /ws-mutr/websocket`: STOMP directly over WebSocket, as `@stomp/stompjs` with a
/// `brokerURL` speaks it.
pub async fn raw(State(rt): State<Realtime>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    upgrade(rt, &headers, ws, Framing::Raw)
}

/// `GET /ws-mutr/{server}/{session}/websocket`: SockJS's WebSocket transport.
pub async fn sockjs(
    State(rt): State<Realtime>,
    Path((server, session)): Path<(String, String)>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !sockjs::valid_id(&server) || !sockjs::valid_id(&session) {
        return StatusCode::NOT_FOUND.into_response();
    }
    upgrade(rt, &headers, ws, Framing::SockJs)
}

/// Bytes tungstenite reserves for each read from a client. It zero-fills the whole reservation
/// on every read attempt, including the ones that find nothing: the session polls its socket each
/// time an event wakes it, so with the default 128 KiB a fan-out of one event to 500 subscribers
/// cleared 64 MB (`memset` was 15% of the push bench's CPU in `perf`). Clients send small frames
/// (CONNECT, SUBSCRIBE, heart-beats); a larger one still arrives whole, over several reads.
const READ_BUFFER: usize = 4 * 1024;

fn upgrade(rt: Realtime, headers: &HeaderMap, ws: WebSocketUpgrade, framing: Framing) -> Response {
    if !rt.origin_allowed(headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if rt.closing() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    // The decoder enforces the STOMP frame limit; this bounds what one WebSocket message may
    // buffer, allowing for SockJS's JSON escaping (at most 6 bytes per byte).
    let max_message = rt
        .args()
        .ws_max_frame_size
        .saturating_mul(6)
        .saturating_add(1024);
    ws.protocols(["v12.stomp", "v11.stomp", "v10.stomp"])
        .read_buffer_size(READ_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| run_socket(rt, socket, framing))
}

async fn run_socket(rt: Realtime, socket: WebSocket, framing: Framing) {
    let (mut ws_tx, ws_rx) = socket.split();
    let Some(guard) = rt.open_session(framing.transport()) else {
        let (close, code) = if rt.closing() {
            (Close::SHUTDOWN, 1001)
        } else {
            (Close::TOO_MANY, 1013)
        };
        if framing == Framing::SockJs {
            let _ = ws_tx.send(Message::Text(close.frame().into())).await;
        }
        let _ = ws_tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: close.reason.into(),
            })))
            .await;
        return;
    };
    let incoming = ws_rx
        .map(move |m| match m {
            Ok(Message::Text(t)) => match framing {
                Framing::Raw => Some(Bytes::from(t)),
                // An empty message is ignored; one that is not SockJS JSON ends the session, as
                // SockJS servers do.
                Framing::SockJs => match sockjs::decode_messages(t.as_bytes()) {
                    Ok(msgs) => Some(Bytes::from(msgs.concat())),
                    Err(sockjs::PayloadError::Empty) => Some(Bytes::new()),
                    Err(sockjs::PayloadError::BrokenJson) => None,
                },
            },
            Ok(Message::Binary(b)) if framing == Framing::Raw => Some(b),
            Ok(Message::Close(_)) | Err(_) => None,
            // Pings, pongs (and binary SockJS data, which the protocol has none of) only show
            // that the client is alive.
            Ok(_) => Some(Bytes::new()),
        })
        .take_while(|m| ready(m.is_some()))
        .filter_map(ready);
    let (out_tx, out_rx) = mpsc::channel::<String>(WRITE_QUEUE);
    let (reason_tx, reason_rx) = oneshot::channel();
    let session = async {
        let reason = rt
            .drive(Box::pin(incoming), PollSender::new(out_tx), &guard)
            .await;
        let _ = reason_tx.send(reason);
    };
    tokio::join!(session, write_loop(&rt, ws_tx, out_rx, reason_rx, framing));
}

type WsSink = futures::stream::SplitSink<WebSocket, Message>;

/// Writes text messages and flushes once; false when a step fails or takes longer than
/// `timeout`.
async fn send_batch(
    ws_tx: &mut WsSink,
    texts: impl IntoIterator<Item = String>,
    timeout: std::time::Duration,
) -> bool {
    for text in texts {
        let ready = within(poll_fn(|cx| ws_tx.poll_ready_unpin(cx)), timeout).await;
        if ready.is_err() || ws_tx.start_send_unpin(Message::Text(text.into())).is_err() {
            return false;
        }
    }
    within(poll_fn(|cx| ws_tx.poll_flush_unpin(cx)), timeout)
        .await
        .is_ok()
}

async fn send_text(ws_tx: &mut WsSink, text: String, timeout: std::time::Duration) -> bool {
    send_batch(ws_tx, [text], timeout).await
}

/// Writes the session's output to the socket (with SockJS framing and heart-beats when asked),
/// then the close frames once the session has ended.
async fn write_loop(
    rt: &Realtime,
    mut ws_tx: WsSink,
    mut out_rx: mpsc::Receiver<String>,
    reason_rx: oneshot::Receiver<CloseReason>,
    framing: Framing,
) {
    let send_timeout = rt.args().ws_send_timeout;
    if framing == Framing::SockJs
        && !send_text(&mut ws_tx, sockjs::OPEN.to_owned(), send_timeout).await
    {
        return;
    }
    let mut heartbeat = tokio::time::interval(rt.args().sockjs_heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        let ok = tokio::select! {
            msg = out_rx.recv() => match msg {
                None => break,
                Some(first) => {
                    // Whatever else is queued goes in the same flush (SockJS: the same frame).
                    let mut batch = vec![first];
                    while batch.len() < WRITE_QUEUE
                        && let Ok(more) = out_rx.try_recv()
                    {
                        batch.push(more);
                    }
                    match framing {
                        Framing::Raw => send_batch(&mut ws_tx, batch, send_timeout).await,
                        Framing::SockJs => {
                            send_text(&mut ws_tx, sockjs::message_frame(&batch), send_timeout)
                                .await
                        }
                    }
                }
            },
            _ = heartbeat.tick(), if framing == Framing::SockJs => {
                send_text(&mut ws_tx, sockjs::HEARTBEAT.to_owned(), send_timeout).await
            }
        };
        if !ok {
            // The session notices through its own failed writes or the closed read side.
            return;
        }
        if framing == Framing::SockJs {
            heartbeat.reset();
        }
    }
    let reason = reason_rx.await.unwrap_or(CloseReason::TransportClosed);
    let (code, text): (u16, &'static str) = match reason {
        CloseReason::Shutdown => (1001, "server shutting down"),
        CloseReason::ProtocolError => (1002, "STOMP protocol error"),
        CloseReason::SlowConsumer | CloseReason::SendTimeout => (1008, "slow consumer"),
        CloseReason::HeartbeatTimeout => (1000, "heart-beat timeout"),
        CloseReason::ConnectTimeout => (1000, "no CONNECT"),
        CloseReason::Disconnect | CloseReason::TransportClosed => (1000, "bye"),
    };
    if framing == Framing::SockJs {
        let close = if reason == CloseReason::Shutdown {
            Close::SHUTDOWN
        } else {
            Close::GO_AWAY
        };
        if !send_text(&mut ws_tx, close.frame(), send_timeout).await {
            return;
        }
    }
    let close = ws_tx.send(Message::Close(Some(CloseFrame {
        code,
        reason: text.into(),
    })));
    let _ = tokio::time::timeout(send_timeout, close).await;
}
