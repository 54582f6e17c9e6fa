//! Live push to browsers: STOMP 1.2 over SockJS and raw WebSocket, fanned out through Redis.
//!
//! Layout: [`stomp`] is the frame codec, [`session`] the transport-independent STOMP session,
//! [`sockjs`] the SockJS framing, [`hub`] local fan-out and the Redis bridge; `ws` and `xhr`
//! adapt axum's WebSocket and the SockJS HTTP transports to a session.
//!
//! Routes (all under `/ws-mutr`, see [`Realtime::router`]): `GET /info`, the SockJS WebSocket
//! transport `GET /{server}/{session}/websocket`, xhr-streaming and xhr-polling
//! (`POST /{server}/{session}/xhr_streaming`, `/xhr`, `/xhr_send`), and a raw STOMP WebSocket at
//! `GET /websocket`.
//!
//! Wiring: [`Realtime::start`] takes a token that stops the Redis bridge and closes every
//! session, so cancel it at the end of the drain (events published while draining still reach
//! the other replicas); merge [`Realtime::router`] outside any CORS layer (SockJS answers its
//! own CORS); when the server stops taking connections, call [`Realtime::close_all`] and await
//! [`Realtime::closed`] with a timeout, since upgraded connections do not hold up axum's
//! graceful shutdown.
//!
//! Client credentials (`Authorization`, `X-Guest-Token` in `CONNECT`) are accepted and not
//! required: the only destinations are public topics. Clients cannot `SEND`.

pub mod hub;
pub mod metrics;
pub mod session;
pub mod sockjs;
pub mod stomp;
mod ws;
mod xhr;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::hub::{Bridge, BridgeConfig, Event, Hub};
use self::metrics as m;
use self::session::{CloseReason, SessionConfig};

/// The STOMP destination every client subscribes to for node events.
pub const GALAXY_TOPIC: &str = "/topic/galaxy/public";

/// Limits and timings of the realtime push (flattened into `mutr-api serve`).
#[derive(clap::Args, Debug, Clone)]
pub struct RealtimeArgs {
    /// Largest STOMP frame a client may send (command, headers and body), in bytes.
    #[arg(long, env = "MUTR_WS_MAX_FRAME_SIZE", default_value_t = 64 * 1024)]
    pub ws_max_frame_size: usize,

    /// Events a subscriber may fall behind before it is disconnected as a slow consumer.
    #[arg(long, env = "MUTR_WS_SEND_BUFFER", default_value_t = 256)]
    pub ws_send_buffer: usize,

    /// How long one write to a client may take before the client counts as gone.
    #[arg(long, env = "MUTR_WS_SEND_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ws_send_timeout: Duration,

    /// Interval at which the server offers to send STOMP heart-beats (0s: none).
    #[arg(long, env = "MUTR_WS_HEARTBEAT_SEND", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ws_heartbeat_send: Duration,

    /// Interval at which the server asks clients for STOMP heart-beats (0s: none).
    #[arg(long, env = "MUTR_WS_HEARTBEAT_RECEIVE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ws_heartbeat_receive: Duration,

    /// Negotiated client heart-beat intervals that may pass in silence before the session ends.
    #[arg(long, env = "MUTR_WS_HEARTBEAT_TOLERANCE", default_value_t = 3)]
    pub ws_heartbeat_tolerance: u32,

    /// How long a new connection may take to send STOMP CONNECT.
    #[arg(long, env = "MUTR_WS_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ws_connect_timeout: Duration,

    /// Most concurrent STOMP sessions (all transports) this replica accepts.
    #[arg(long, env = "MUTR_WS_MAX_SESSIONS", default_value_t = 10_000)]
    pub ws_max_sessions: usize,

    /// Most subscriptions one STOMP session may hold.
    #[arg(long, env = "MUTR_WS_MAX_SUBSCRIPTIONS", default_value_t = 16)]
    pub ws_max_subscriptions: usize,

    /// Browser origins allowed to open sessions, comma-separated (`*`: any). Unset: the API's
    /// CORS origins (`MUTR_CORS_ORIGINS`) when those are set, else any. A page of the API's own
    /// origin and requests without an Origin header (non-browser clients) are always allowed.
    #[arg(long, env = "MUTR_WS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub ws_allowed_origins: Vec<String>,

    /// Interval of SockJS `h` frames on idle sessions, which keep proxies from closing them.
    #[arg(long, env = "MUTR_SOCKJS_HEARTBEAT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub sockjs_heartbeat: Duration,

    /// How long an xhr session lives without a receiving request before it is closed.
    #[arg(long, env = "MUTR_SOCKJS_DISCONNECT_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub sockjs_disconnect_delay: Duration,

    /// Bytes one xhr-streaming response carries before the client is made to open a new one.
    #[arg(long, env = "MUTR_SOCKJS_STREAMING_LIMIT", default_value_t = 128 * 1024)]
    pub sockjs_streaming_limit: usize,

    /// Redis pub/sub channel the replicas exchange events on.
    #[arg(
        long,
        env = "MUTR_REALTIME_REDIS_CHANNEL",
        default_value = "mutr:realtime:events"
    )]
    pub realtime_redis_channel: String,

    /// Events waiting to be published to Redis; beyond it, events reach local clients only.
    #[arg(long, env = "MUTR_REALTIME_PUBLISH_QUEUE", default_value_t = 1024)]
    pub realtime_publish_queue: usize,

    /// Timeout of Redis connection attempts and commands of the realtime bridge.
    #[arg(long, env = "MUTR_REALTIME_REDIS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub realtime_redis_timeout: Duration,

    /// Interval of pings on the Redis subscription, which detect a silently broken connection.
    #[arg(long, env = "MUTR_REALTIME_REDIS_PING_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub realtime_redis_ping_interval: Duration,

    /// First delay before reconnecting to Redis; it doubles up to the maximum.
    #[arg(long, env = "MUTR_REALTIME_REDIS_RETRY_MIN", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub realtime_redis_retry_min: Duration,

    /// Longest delay between attempts to reconnect to Redis.
    #[arg(long, env = "MUTR_REALTIME_REDIS_RETRY_MAX", default_value = "5s", value_parser = humantime::parse_duration)]
    pub realtime_redis_retry_max: Duration,
}

impl RealtimeArgs {
    /// These settings with the push's allowed origins defaulted to the API's CORS origins: a
    /// deployment that names its browser clients for the API names them for the push too.
    #[must_use]
    pub fn with_default_origins(mut self, cors_origins: &[String]) -> Self {
        if self.ws_allowed_origins.iter().all(|o| o.trim().is_empty()) {
            self.ws_allowed_origins = cors_origins.to_vec();
        }
        self
    }
}

/// Why the realtime push cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("invalid Redis URL for the realtime bridge")]
    RedisUrl(#[source] redis::RedisError),
    #[error("invalid realtime setting: {0}")]
    Config(&'static str),
}

/// The realtime push of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    inner: Arc<Inner>,
}

struct Inner {
    args: RealtimeArgs,
    session_config: SessionConfig,
    hub: Hub,
    bridge: Option<Bridge>,
    sessions: AtomicUsize,
    sessions_changed: Notify,
    /// Cancelled by [`Realtime::close_all`] or the shutdown token: ends every session and
    /// refuses new ones.
    close: CancellationToken,
    xhr: xhr::Registry,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("sessions", &self.session_count())
            .field("redis", &self.inner.bridge.is_some())
            .finish_non_exhaustive()
    }
}

impl Realtime {
    /// Starts the push. With a Redis URL, the bridge connects in the background and keeps
    /// retrying while Redis is down, so this fails only on an invalid URL or setting. The
    /// `shutdown` token stops the bridge and closes every session.
    pub async fn start(
        args: RealtimeArgs,
        redis_url: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<Realtime, RealtimeError> {
        if args.ws_max_frame_size < 64 {
            return Err(RealtimeError::Config(
                "ws-max-frame-size must be at least 64",
            ));
        }
        if args.ws_send_buffer == 0 || args.realtime_publish_queue == 0 {
            return Err(RealtimeError::Config(
                "buffers must hold at least one event",
            ));
        }
        if args.sockjs_heartbeat.is_zero() || args.realtime_redis_ping_interval.is_zero() {
            return Err(RealtimeError::Config(
                "heartbeat and ping intervals must be positive",
            ));
        }
        let hub = Hub::new(args.ws_send_buffer);
        let replica_id = uuid::Uuid::new_v4().simple().to_string();
        let bridge = match redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url).map_err(RealtimeError::RedisUrl)?;
                Some(Bridge::start(
                    client,
                    BridgeConfig {
                        channel: args.realtime_redis_channel.clone(),
                        publish_queue: args.realtime_publish_queue,
                        timeout: args.realtime_redis_timeout,
                        ping_interval: args.realtime_redis_ping_interval,
                        retry_min: args.realtime_redis_retry_min,
                        retry_max: args.realtime_redis_retry_max,
                    },
                    replica_id,
                    hub.clone(),
                    shutdown.clone(),
                ))
            }
        };
        let session_config = SessionConfig {
            max_frame: args.ws_max_frame_size,
            heartbeat_send: args.ws_heartbeat_send,
            heartbeat_receive: args.ws_heartbeat_receive,
            heartbeat_tolerance: args.ws_heartbeat_tolerance,
            connect_timeout: args.ws_connect_timeout,
            send_timeout: args.ws_send_timeout,
            max_subscriptions: args.ws_max_subscriptions,
            server_name: concat!("mutr-api/", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        Ok(Realtime {
            inner: Arc::new(Inner {
                args,
                session_config,
                hub,
                bridge,
                sessions: AtomicUsize::new(0),
                sessions_changed: Notify::new(),
                close: shutdown.child_token(),
                xhr: xhr::Registry::default(),
            }),
        })
    }

    /// Every `/ws-mutr` route, with its state applied, to be merged into the application. The
    /// routes answer SockJS's CORS headers themselves: do not put another CORS layer on them.
    pub fn router(&self) -> Router {
        // A refused upgrade (no WebSocket headers, a foreign origin, shutting down) is an HTTP
        // answer a client may read: it gets the API's error envelope. The SockJS routes keep
        // SockJS's own framing.
        let websocket = Router::new()
            .route("/ws-mutr/websocket", get(ws::raw))
            .route("/ws-mutr/{server}/{session}/websocket", get(ws::sockjs))
            .route_layer(axum::middleware::from_fn(crate::error::envelope_errors));
        Router::new()
            .route("/ws-mutr", get(xhr::welcome))
            .route("/ws-mutr/", get(xhr::welcome))
            .route("/ws-mutr/info", get(xhr::info).options(xhr::info_options))
            .merge(websocket)
            .route(
                "/ws-mutr/{server}/{session}/xhr",
                post(xhr::polling).options(xhr::options),
            )
            .route(
                "/ws-mutr/{server}/{session}/xhr_streaming",
                post(xhr::streaming).options(xhr::options),
            )
            .route(
                "/ws-mutr/{server}/{session}/xhr_send",
                post(xhr::send).options(xhr::options),
            )
            .with_state(self.clone())
    }

    /// Delivers an event to this replica's subscribers of `destination` and, through Redis, to
    /// every other replica's. Never fails: without Redis, other replicas miss it (counted in
    /// `mutr_realtime_events_dropped_total`).
    pub async fn publish(&self, destination: &str, body: String) {
        let event = Arc::new(Event {
            destination: destination.to_owned(),
            body,
        });
        ::metrics::counter!(m::EVENTS_PUBLISHED, "destination" => destination.to_owned())
            .increment(1);
        if let Some(bridge) = &self.inner.bridge {
            bridge.publish(&event);
        }
        self.inner.hub.deliver(event);
    }

    /// Closes every session (clients see a normal close and reconnect, to another replica when
    /// this one is draining) and refuses new ones from now on.
    pub fn close_all(&self) {
        self.inner.close.cancel();
    }

    /// Resolves once no session is open (after [`Realtime::close_all`], sessions end within
    /// the send timeout).
    pub async fn closed(&self) {
        loop {
            let changed = self.inner.sessions_changed.notified();
            if self.session_count() == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Open STOMP sessions on this replica, all transports together.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.load(Ordering::Relaxed)
    }

    /// Whether the Redis bridge is connected (both publishing and subscribed); `None` without
    /// Redis.
    pub fn redis_connected(&self) -> Option<bool> {
        self.inner.bridge.as_ref().map(Bridge::connected)
    }

    /// Whether, as Redis last said, a replica of an older release (one event per message)
    /// listens on the bridge's channel; None without Redis.
    pub fn redis_legacy_readers(&self) -> Option<bool> {
        self.inner.bridge.as_ref().map(Bridge::legacy_readers)
    }

    fn args(&self) -> &RealtimeArgs {
        &self.inner.args
    }

    fn closing(&self) -> bool {
        self.inner.close.is_cancelled()
    }

    /// Whether a browser request's Origin may open a session: no Origin (not a browser), any
    /// when no origin is configured or `*` is, the request's own host (the page at `/`), or one
    /// of the configured origins.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        origin_allowed(&self.inner.args.ws_allowed_origins, headers)
    }

    /// Counts a new session, or `None` when closing or at the limit.
    fn open_session(&self, transport: &'static str) -> Option<SessionGuard> {
        if self.closing() {
            return None;
        }
        let max = self.inner.args.ws_max_sessions;
        let counted = self
            .inner
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !counted {
            ::metrics::counter!(m::SESSIONS_REFUSED).increment(1);
            tracing::warn!(max, "realtime: session refused, at the session limit");
            return None;
        }
        ::metrics::counter!(m::SESSIONS_OPENED, "transport" => transport).increment(1);
        ::metrics::gauge!(m::SESSIONS, "transport" => transport).increment(1.0);
        Some(SessionGuard {
            realtime: self.clone(),
            transport,
        })
    }

    /// Runs one STOMP session over a transport until it ends.
    async fn drive<I, O>(&self, incoming: I, outgoing: O, guard: &SessionGuard) -> CloseReason
    where
        I: Stream<Item = Bytes> + Unpin,
        O: Sink<String> + Unpin,
    {
        let id = uuid::Uuid::new_v4().simple().to_string();
        tracing::debug!(session = %id, transport = guard.transport, "STOMP session opened");
        let reason = session::run(
            incoming,
            outgoing,
            &self.inner.hub,
            &self.inner.session_config,
            &id,
            self.inner.close.clone(),
        )
        .await;
        ::metrics::counter!(m::SESSIONS_CLOSED, "reason" => reason.as_str()).increment(1);
        tracing::debug!(session = %id, reason = reason.as_str(), "STOMP session closed");
        reason
    }
}

fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    use axum::http::header::{HOST, ORIGIN};
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let mut allowed = allowed
        .iter()
        .map(|a| a.trim().trim_end_matches('/'))
        .filter(|a| !a.is_empty())
        .peekable();
    if allowed.peek().is_none() {
        return true;
    }
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let same_host = origin
        .split_once("://")
        .zip(headers.get(HOST).and_then(|h| h.to_str().ok()))
        .is_some_and(|((_, origin_host), host)| origin_host.eq_ignore_ascii_case(host));
    same_host || allowed.any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Keeps one session counted while it lives.
struct SessionGuard {
    realtime: Realtime,
    transport: &'static str,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.realtime.inner.sessions.fetch_sub(1, Ordering::AcqRel);
        self.realtime.inner.sessions_changed.notify_waiters();
        ::metrics::gauge!(m::SESSIONS, "transport" => self.transport).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        realtime: RealtimeArgs,
    }

    #[test]
    fn defaults_parse_and_lists_split() {
        let cli = Cli::try_parse_from([
            "mutr",
            "--ws-allowed-origins",
            "https://a.example,https://b.example",
            "--ws-send-timeout",
            "250ms",
        ])
        .expect("valid flags");
        let a = cli.realtime;
        assert_eq!(
            a.ws_allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(a.ws_send_timeout, Duration::from_millis(250));
        assert_eq!(a.sockjs_heartbeat, Duration::from_secs(25));
        assert_eq!(a.realtime_redis_channel, "mutr:realtime:events");
    }

    fn request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert("origin", origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn origins_default_to_the_cors_origins_then_to_any() {
        let cli = Cli::try_parse_from(["mutr"]).expect("no flags");
        let cors = ["https://app.example".to_owned()];
        assert!(cli.realtime.ws_allowed_origins.is_empty());
        let from_cors = cli.realtime.clone().with_default_origins(&cors);
        assert_eq!(from_cors.ws_allowed_origins, cors);
        let own = Cli::try_parse_from(["mutr", "--ws-allowed-origins", "https://ws.example"])
            .unwrap()
            .realtime
            .with_default_origins(&cors);
        assert_eq!(own.ws_allowed_origins, ["https://ws.example"]);

        let any = cli.realtime.with_default_origins(&[]);
        assert!(origin_allowed(
            &any.ws_allowed_origins,
            &request(Some("https://evil.example"), "api.example")
        ));
    }

    #[test]
    fn configured_origins_refuse_others_but_not_the_own_host_or_non_browsers() {
        let allowed = [
            "https://app.example/".to_owned(),
            "http://x.example".to_owned(),
        ];
        let check = |origin, host| origin_allowed(&allowed, &request(origin, host));
        assert!(check(Some("https://app.example"), "api.example"));
        assert!(check(Some("HTTP://X.example"), "api.example"));
        assert!(check(Some("https://api.example:8443"), "api.example:8443"));
        assert!(check(None, "api.example"));
        assert!(!check(Some("https://evil.example"), "api.example"));
        assert!(!check(Some("null"), "api.example"));
        assert!(!check(Some("https://app.example.evil"), "api.example"));
        assert!(!check(Some("https://api.example:8443"), "api.example"));
        assert!(origin_allowed(
            &["*".to_owned()],
            &request(Some("https://evil.example"), "api.example")
        ));
    }
}
