//! SockJS over plain HTTP, for clients whose proxies break WebSockets: `GET /info`, the
//! xhr-streaming and xhr-polling receivers and `xhr_send`, plus the CORS answers SockJS needs.
//!
//! An xhr session is a STOMP session whose input arrives through `xhr_send` and whose output
//! waits in a bounded queue for the next receiving request. Only one receiving request may be
//! attached at a time; a session with none for the disconnect delay is closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedMutexGuard, mpsc};
use tokio::time::Instant;
use tokio_util::sync::PollSender;

use super::Realtime;
use super::session::CloseReason;
use super::sockjs::{self, Close};

/// Client messages (each one `xhr_send` element) queued ahead of the STOMP session; a full
/// queue makes `xhr_send` wait, so a client cannot pile up input.
const INPUT_QUEUE: usize = 8;
/// Frames the STOMP session may queue for the next receiving request; beyond it, its writes
/// wait and eventually time out (a slow or vanished client).
const OUTPUT_QUEUE: usize = 64;
/// Most frames one polling response carries.
const MAX_BATCH: usize = 64;

const JAVASCRIPT: &str = "application/javascript; charset=UTF-8";
const PLAIN: &str = "text/plain; charset=UTF-8";
const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";

/// The open xhr sessions of this replica, by SockJS session id.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<XhrSession>>>,
}

impl Registry {
    fn get(&self, id: &str) -> Option<Arc<XhrSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn remove(&self, id: &str, session: &Arc<XhrSession>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.get(id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(id);
        }
    }
}

struct XhrSession {
    input: mpsc::Sender<Bytes>,
    output: Arc<tokio::sync::Mutex<mpsc::Receiver<String>>>,
    /// Set once the STOMP session has ended: what later requests are answered.
    closed: Mutex<Option<Close>>,
    attached: AtomicBool,
    last_seen: Mutex<Instant>,
}

impl XhrSession {
    fn close_frame(&self) -> Close {
        self.closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(Close::GO_AWAY)
    }

    fn touch(&self) {
        *self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}

/// Marks a session as having a receiving request while it lives.
struct Attached {
    session: Arc<XhrSession>,
    output: OwnedMutexGuard<mpsc::Receiver<String>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.session.touch();
        self.session.attached.store(false, Ordering::Release);
    }
}

/// How a receiving request found its session.
enum Found {
    Created,
    Attached(Attached),
    /// Another receiving request holds the session.
    Busy,
    /// No session could be opened (closing or at the limit).
    Refused(Close),
}

impl Realtime {
    /// Finds or opens the xhr session `id` for a receiving request.
    fn receive(&self, id: &str, transport: &'static str) -> Found {
        let mut sessions = self
            .inner
            .xhr
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = sessions.get(id).cloned() {
            drop(sessions);
            return match session.output.clone().try_lock_owned() {
                Ok(output) => {
                    session.attached.store(true, Ordering::Release);
                    Found::Attached(Attached { session, output })
                }
                Err(_) => Found::Busy,
            };
        }
        let Some(guard) = self.open_session(transport) else {
            return Found::Refused(if self.closing() {
                Close::SHUTDOWN
            } else {
                Close::TOO_MANY
            });
        };
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (output_tx, output_rx) = mpsc::channel(OUTPUT_QUEUE);
        let session = Arc::new(XhrSession {
            input,
            output: Arc::new(tokio::sync::Mutex::new(output_rx)),
            closed: Mutex::new(None),
            attached: AtomicBool::new(false),
            last_seen: Mutex::new(Instant::now()),
        });
        sessions.insert(id.to_owned(), session.clone());
        drop(sessions);
        let rt = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut input_rx = input_rx;
            let incoming = futures::stream::poll_fn(move |cx| input_rx.poll_recv(cx));
            let reason = tokio::select! {
                reason = rt.drive(incoming, PollSender::new(output_tx), &guard) => reason,
                () = abandoned(&session, rt.args().sockjs_disconnect_delay) => {
                    CloseReason::TransportClosed
                }
            };
            drop(guard);
            *session
                .closed
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(if reason == CloseReason::Shutdown {
                    Close::SHUTDOWN
                } else {
                    Close::GO_AWAY
                });
            // Later requests of this client still get the close frame for a while, as SockJS
            // expects; then the session is forgotten.
            tokio::time::sleep(rt.args().sockjs_disconnect_delay).await;
            rt.inner.xhr.remove(&id, &session);
        });
        Found::Created
    }
}

/// Resolves once the session has had no receiving request for `delay`.
async fn abandoned(session: &XhrSession, delay: std::time::Duration) {
    loop {
        let last_seen = *session
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let deadline = last_seen + delay;
        if !session.attached.load(Ordering::Acquire) && Instant::now() >= deadline {
            return;
        }
        let wake = if session.attached.load(Ordering::Acquire) {
            Instant::now() + delay
        } else {
            deadline
        };
        tokio::time::sleep_until(wake).await;
    }
}

/// The CORS headers of every SockJS HTTP answer: the request's origin is echoed with
/// credentials allowed (what `sockjs-client` needs for cross-origin XHR), else `*`.
fn cors(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    match headers.get(header::ORIGIN) {
        Some(origin) if origin.as_bytes() != b"null" => {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            out.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        _ => {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    out
}

fn no_cache(mut headers: HeaderMap) -> HeaderMap {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    headers
}

fn preflight(headers: &HeaderMap, methods: &'static str) -> Response {
    let mut out = cors(headers);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("31536000"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    (StatusCode::NO_CONTENT, out).into_response()
}

/// `GET /ws-mutr`: SockJS's greeting.
pub async fn welcome() -> Response {
    ([(header::CONTENT_TYPE, PLAIN)], "Welcome to SockJS!\n").into_response()
}

/// `GET /ws-mutr/info`: what `sockjs-client` asks before choosing a transport.
pub async fn info(headers: HeaderMap) -> Response {
    let body = serde_json::to_string(&sockjs::Info::new(rand::random()))
        .unwrap_or_else(|_| String::from("{}"));
    let mut out = no_cache(cors(&headers));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    (out, body).into_response()
}

/// `OPTIONS /ws-mutr/info`.
pub async fn info_options(headers: HeaderMap) -> Response {
    preflight(&headers, "OPTIONS, GET")
}

/// `OPTIONS` of the xhr transports.
pub async fn options(headers: HeaderMap) -> Response {
    preflight(&headers, "OPTIONS, POST")
}

/// Checks the path ids and the origin; the error response otherwise.
fn check(rt: &Realtime, server: &str, session: &str, headers: &HeaderMap) -> Option<Response> {
    if !sockjs::valid_id(server) || !sockjs::valid_id(session) {
        return Some(StatusCode::NOT_FOUND.into_response());
    }
    if !rt.origin_allowed(headers) {
        return Some((StatusCode::FORBIDDEN, cors(headers)).into_response());
    }
    None
}

fn javascript(headers: &HeaderMap, body: impl Into<Body>) -> Response {
    let mut out = no_cache(cors(headers));
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(JAVASCRIPT));
    (out, body.into()).into_response()
}

/// The next chunk for a receiving request: messages, a heart-beat after the SockJS heart-beat
/// interval, or the close frame (and `true`) once the session has ended.
async fn next_chunk(rt: &Realtime, attached: &mut Attached) -> (String, bool) {
    let heartbeat = rt.args().sockjs_heartbeat;
    tokio::select! {
        msg = attached.output.recv() => match msg {
            Some(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH
                    && let Ok(more) = attached.output.try_recv()
                {
                    batch.push(more);
                }
                (sockjs::message_frame(&batch) + "\n", false)
            }
            None => (attached.session.close_frame().frame() + "\n", true),
        },
        () = tokio::time::sleep(heartbeat) => (format!("{}\n", sockjs::HEARTBEAT), false),
    }
}

/// `POST /ws-mutr/{server}/{session}/xhr`: xhr-polling. Opens the session (`o`), or answers
/// with what is queued, waiting up to the heart-beat interval for something to send.
pub async fn polling(
    State(rt): State<Realtime>,
    Path((server, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check(&rt, &server, &session, &headers) {
        return refused;
    }
    let body = match rt.receive(&session, "xhr-polling") {
        Found::Created => format!("{}\n", sockjs::OPEN),
        Found::Busy => Close::ANOTHER_CONNECTION.frame() + "\n",
        Found::Refused(close) => close.frame() + "\n",
        Found::Attached(mut attached) => next_chunk(&rt, &mut attached).await.0,
    };
    javascript(&headers, body)
}

/// `POST /ws-mutr/{server}/{session}/xhr_streaming`: one long response carrying frames as they
/// come, ended after the streaming limit so that the client opens a fresh one.
pub async fn streaming(
    State(rt): State<Realtime>,
    Path((server, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check(&rt, &server, &session, &headers) {
        return refused;
    }
    let mut prelude = sockjs::streaming_prelude();
    let attached = match rt.receive(&session, "xhr-streaming") {
        Found::Created => {
            prelude.push_str(sockjs::OPEN);
            prelude.push('\n');
            match rt.receive(&session, "xhr-streaming") {
                Found::Attached(a) => Some(a),
                _ => None,
            }
        }
        Found::Attached(a) => Some(a),
        Found::Busy => {
            prelude.push_str(&(Close::ANOTHER_CONNECTION.frame() + "\n"));
            None
        }
        Found::Refused(close) => {
            prelude.push_str(&(close.frame() + "\n"));
            None
        }
    };
    let first = futures::stream::once(std::future::ready(Ok::<_, Infallible>(Bytes::from(
        prelude,
    ))));
    let Some(attached) = attached else {
        return javascript(&headers, Body::from_stream(first));
    };
    let limit = rt.args().sockjs_streaming_limit;
    let rest = futures::stream::unfold(
        (rt, attached, 0usize, false),
        move |(rt, mut attached, sent, done)| async move {
            if done || sent >= limit {
                return None;
            }
            let (chunk, closed) = next_chunk(&rt, &mut attached).await;
            let sent = sent + chunk.len();
            Some((
                Ok::<_, Infallible>(Bytes::from(chunk)),
                (rt, attached, sent, closed),
            ))
        },
    );
    javascript(&headers, Body::from_stream(first.chain(rest)))
}

/// `POST /ws-mutr/{server}/{session}/xhr_send`: the client's messages, a JSON array of strings.
pub async fn send(
    State(rt): State<Realtime>,
    Path((server, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = check(&rt, &server, &session, &headers) {
        return refused;
    }
    let Some(xhr) = rt.inner.xhr.get(&session) else {
        return (StatusCode::NOT_FOUND, cors(&headers)).into_response();
    };
    let limit = rt
        .args()
        .ws_max_frame_size
        .saturating_mul(6)
        .saturating_add(1024);
    let Ok(payload) = axum::body::to_bytes(body, limit).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, cors(&headers)).into_response();
    };
    let messages = match sockjs::decode_messages(&payload) {
        Ok(m) => m,
        Err(e) => {
            let mut out = cors(&headers);
            out.insert(header::CONTENT_TYPE, HeaderValue::from_static(PLAIN));
            return (StatusCode::INTERNAL_SERVER_ERROR, out, e.to_string()).into_response();
        }
    };
    xhr.touch();
    for message in messages {
        if xhr.input.send(Bytes::from(message)).await.is_err() {
            return (StatusCode::NOT_FOUND, cors(&headers)).into_response();
        }
    }
    let mut out = no_cache(cors(&headers));
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(PLAIN));
    (StatusCode::NO_CONTENT, out).into_response()
}
