//! Names of the realtime metrics, recorded through the `metrics` facade (the API's exporter
//! serves them on `/metrics`).

/// Gauge: open STOMP sessions, by `transport`.
pub const SESSIONS: &str = "mutr_ws_sessions";
/// Counter: sessions opened, by `transport`.
pub const SESSIONS_OPENED: &str = "mutr_ws_sessions_opened_total";
/// Counter: sessions closed, by `reason`.
pub const SESSIONS_CLOSED: &str = "mutr_ws_sessions_closed_total";
/// Counter: sessions refused because the server holds its maximum.
pub const SESSIONS_REFUSED: &str = "mutr_ws_sessions_refused_total";
/// Counter: events published by this replica, by `destination`.
pub const EVENTS_PUBLISHED: &str = "mutr_realtime_events_published_total";
/// Counter: `MESSAGE` frames written to subscribers.
pub const EVENTS_DELIVERED: &str = "mutr_realtime_events_delivered_total";
/// Counter: events sent to (`direction="out"`) or received from (`"in"`) other replicas.
pub const EVENTS_BRIDGED: &str = "mutr_realtime_events_bridged_total";
/// Counter: pipelines that sent those events to Redis (events out over this is the mean batch).
pub const PUBLISH_PIPELINES: &str = "mutr_realtime_publish_pipelines_total";
/// Counter: events other replicas will not see, by `reason`.
pub const EVENTS_DROPPED: &str = "mutr_realtime_events_dropped_total";
/// Gauge: 1 while a replica of an older release (one that reads only one event per message)
/// listens on the bridge's channel, so that each event is also published there on its own.
pub const LEGACY_READERS: &str = "mutr_realtime_legacy_readers";
/// Gauge: 1 while the Redis `connection` (`publisher`, `subscriber`) is up.
pub const REDIS_CONNECTED: &str = "mutr_realtime_redis_connected";
