//! Event fan-out: local delivery to this replica's sessions, and a Redis pub/sub bridge so that
//! every replica delivers every event. The bridge reconnects with backoff; while Redis is down,
//! local delivery goes on and remote events are missed (the database stays the source of truth).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::metrics as m;

/// One event for the subscribers of a destination. Shared by every session that delivers it.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub destination: String,
    pub body: String,
}

/// Local fan-out. A session that falls more than the channel's capacity behind gets
/// `RecvError::Lagged` and is disconnected; memory stays bounded by that capacity.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Hub { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Hands the event to every local session that listens; none listening is fine.
    pub fn deliver(&self, event: Arc<Event>) {
        let _ = self.tx.send(event);
    }
}

/// What replicas exchange over Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<'a> {
    /// The replica that published it, so that it does not deliver its own events twice.
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    destination: Cow<'a, str>,
    #[serde(borrow)]
    body: Cow<'a, str>,
}

/// Settings of the Redis bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub channel: String,
    pub publish_queue: usize,
    pub timeout: Duration,
    pub ping_interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// The publishing side of the bridge, and whether both connections are up.
#[derive(Debug)]
pub struct Bridge {
    replica_id: String,
    queue: mpsc::Sender<String>,
    publisher_up: Arc<AtomicBool>,
    subscriber_up: Arc<AtomicBool>,
}

impl Bridge {
    /// Starts the publisher and the subscriber tasks; they connect (and reconnect) in the
    /// background until `shutdown`.
    pub fn start(
        client: redis::Client,
        config: BridgeConfig,
        replica_id: String,
        hub: Hub,
        shutdown: CancellationToken,
    ) -> Bridge {
        let (queue, rx) = mpsc::channel(config.publish_queue.max(1));
        let publisher_up = Arc::new(AtomicBool::new(false));
        let subscriber_up = Arc::new(AtomicBool::new(false));
        tokio::spawn(run_publisher(
            client.clone(),
            config.clone(),
            rx,
            publisher_up.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(run_subscriber(
            client,
            config,
            replica_id.clone(),
            hub,
            subscriber_up.clone(),
            shutdown,
        ));
        Bridge {
            replica_id,
            queue,
            publisher_up,
            subscriber_up,
        }
    }

    /// Queues the event for the other replicas; drops it (and counts that) when the queue is full,
    /// which happens only while Redis is slow or down.
    pub fn publish(&self, event: &Event) {
        let payload = match serde_json::to_string(&Envelope {
            origin: Cow::Borrowed(&self.replica_id),
            destination: Cow::Borrowed(&event.destination),
            body: Cow::Borrowed(&event.body),
        }) {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(%error, "cannot encode a realtime event for Redis");
                return;
            }
        };
        if self.queue.try_send(payload).is_err() {
            metrics::counter!(m::EVENTS_DROPPED, "reason" => "redis_queue_full").increment(1);
            tracing::warn!(
                destination = %event.destination,
                "Redis publish queue full: event delivered locally only"
            );
        }
    }

    /// Whether both the publishing and the subscribed connection are up.
    pub fn connected(&self) -> bool {
        self.publisher_up.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed)
    }
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max: max.max(min),
        }
    }
    fn reset(&mut self) {
        self.next = self.min;
    }
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Waits for the backoff delay; false when shutting down.
async fn wait_retry(backoff: &mut Backoff, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(backoff.next_delay()) => true,
    }
}

fn set_connected(flag: &AtomicBool, up: bool, other: &str) {
    flag.store(up, Ordering::Relaxed);
    metrics::gauge!(m::REDIS_CONNECTED, "connection" => other.to_owned())
        .set(f64::from(u8::from(up)));
}

/// Most events one pipeline publishes (a burst larger than this goes out in several).
const PUBLISH_BATCH: usize = 128;

async fn run_publisher(
    client: redis::Client,
    config: BridgeConfig,
    mut rx: mpsc::Receiver<String>,
    up: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.retry_min, config.retry_max);
    let conn_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout));
    // Messages taken from the queue whose publication failed are published first on the next
    // connection, so that a broken connection loses none; newer ones wait in the bounded queue.
    let mut batch: Vec<String> = Vec::new();
    loop {
        let connect = client.get_multiplexed_async_connection_with_config(&conn_config);
        let mut conn = tokio::select! {
            () = shutdown.cancelled() => return,
            c = connect => match c {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "realtime: Redis publisher cannot connect; retrying");
                    if !wait_retry(&mut backoff, &shutdown).await { return; }
                    continue;
                }
            },
        };
        tracing::info!("realtime: Redis publisher connected");
        set_connected(&up, true, "publisher");
        backoff.reset();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => batch.push(p), None => return },
                }
            }
            // What queued up while the last batch was on the wire goes out with this one, in
            // order, as one pipeline: one write and one read for a burst instead of one round
            // trip per event. At light load a batch is one event, sent at once.
            while batch.len() < PUBLISH_BATCH
                && let Ok(p) = rx.try_recv()
            {
                batch.push(p);
            }
            let mut pipe = redis::pipe();
            for payload in &batch {
                pipe.cmd("PUBLISH")
                    .arg(&config.channel)
                    .arg(payload)
                    .ignore();
            }
            let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            match result {
                Ok(()) => {
                    metrics::counter!(m::EVENTS_BRIDGED, "direction" => "out")
                        .increment(batch.len() as u64);
                    metrics::counter!(m::PUBLISH_PIPELINES).increment(1);
                    batch.clear();
                }
                Err(error) => {
                    tracing::warn!(%error, events = batch.len(), "realtime: Redis publish failed; reconnecting");
                    set_connected(&up, false, "publisher");
                    break;
                }
            }
        }
        if !wait_retry(&mut backoff, &shutdown).await {
            return;
        }
    }
}

async fn run_subscriber(
    client: redis::Client,
    config: BridgeConfig,
    replica_id: String,
    hub: Hub,
    up: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.retry_min, config.retry_max);
    loop {
        let subscribed = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(config.timeout, subscribe(&client, &config.channel)) => r,
        };
        let (mut sink, mut stream) = match subscribed {
            Ok(Ok(parts)) => parts,
            Ok(Err(error)) => {
                tracing::warn!(%error, "realtime: Redis subscriber cannot subscribe; retrying");
                if !wait_retry(&mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("realtime: Redis subscribe timed out; retrying");
                if !wait_retry(&mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(channel = %config.channel, "realtime: subscribed to Redis");
        set_connected(&up, true, "subscriber");
        backoff.reset();
        let mut ping = tokio::time::interval(config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(msg) => deliver_remote(&hub, &replica_id, msg.get_payload_bytes()),
                    None => {
                        tracing::warn!("realtime: Redis subscription lost; resubscribing");
                        break;
                    }
                },
                _ = ping.tick() => {
                    // A silent network partition never ends the stream; a ping that goes
                    // unanswered does.
                    let alive = tokio::time::timeout(config.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        tracing::warn!("realtime: Redis did not answer a ping; resubscribing");
                        break;
                    }
                }
            }
        }
        set_connected(&up, false, "subscriber");
        if !wait_retry(&mut backoff, &shutdown).await {
            return;
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(channel).await?;
    Ok((sink, stream))
}

/// Whether `payload` is an envelope this replica published, judged from the prefix that
/// [`Bridge::publish`] writes (`origin` is the envelope's first field), without parsing the body:
/// every event a replica publishes comes back to it from Redis.
fn own_echo(payload: &[u8], replica_id: &str) -> bool {
    const PREFIX: &[u8] = br#"{"origin":""#;
    payload
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix(replica_id.as_bytes()))
        .is_some_and(|rest| rest.first() == Some(&b'"'))
}

fn deliver_remote(hub: &Hub, replica_id: &str, payload: &[u8]) {
    if own_echo(payload, replica_id) {
        return;
    }
    let envelope: Envelope<'_> = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(error) => {
            tracing::warn!(%error, "realtime: ignoring a malformed event from Redis");
            return;
        }
    };
    if envelope.origin == replica_id {
        return;
    }
    metrics::counter!(m::EVENTS_BRIDGED, "direction" => "in").increment(1);
    hub.deliver(Arc::new(Event {
        destination: envelope.destination.into_owned(),
        body: envelope.body.into_owned(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        assert_eq!(b.next_delay(), Duration::from_millis(350));
        assert_eq!(b.next_delay(), Duration::from_millis(350));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn an_own_echo_is_known_by_its_prefix() {
        let payload = serde_json::to_vec(&Envelope {
            origin: Cow::Borrowed("4f2a"),
            destination: Cow::Borrowed("/topic/a"),
            body: Cow::Borrowed(r#"{"origin":"other"}"#),
        })
        .unwrap();
        assert!(own_echo(&payload, "4f2a"));
        // Another replica, one whose id starts with ours, and no prefix at all are not ours.
        assert!(!own_echo(&payload, "4f2"));
        assert!(!own_echo(&payload, "4f2ab"));
        assert!(!own_echo(&payload, "other"));
        assert!(!own_echo(
            br#"{"destination":"/topic/a","origin":"4f2a"}"#,
            "4f2a"
        ));
        assert!(!own_echo(b"", "4f2a"));
    }

    #[tokio::test]
    async fn remote_events_are_delivered_but_own_echoes_are_not() {
        let hub = Hub::new(8);
        let mut rx = hub.subscribe();
        let own = br#"{"origin":"me","destination":"/topic/a","body":"1"}"#;
        let other = br#"{"origin":"other","destination":"/topic/a","body":"{\"k\":\"\ud55c\"}"}"#;
        deliver_remote(&hub, "me", own);
        deliver_remote(&hub, "me", b"not json");
        deliver_remote(&hub, "me", other);
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.body, r#"{"k":"한"}"#);
        assert!(rx.try_recv().is_err());
    }
}
