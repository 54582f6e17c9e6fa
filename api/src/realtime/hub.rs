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

/// One event per message, on the bridge's channel: how every release before the batch channel
/// exchanged events, and how replicas of those releases still read them (they subscribe to that
/// channel alone). A batching replica reads it from older replicas, and publishes each event in
/// it too only while such a replica listens (see [`legacy_readers`]).
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<'a> {
    /// The replica that published it, so that it does not deliver its own events twice.
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    destination: Cow<'a, str>,
    #[serde(borrow)]
    body: Cow<'a, str>,
    /// Set on the copies a batching replica publishes for older ones: the same event went out in
    /// a [`BatchEnvelope`] too, so batching replicas skip the copy. Older releases ignore it.
    #[serde(default, skip_serializing_if = "is_false")]
    batched: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

/// The events one replica published while its last message was on the wire, in order, as one
/// message on the batch channel (`{channel}.batch`): one Redis command and one delivery per
/// replica for a burst, instead of one per event.
#[derive(Debug, Serialize, Deserialize)]
struct BatchEnvelope<'a> {
    /// The replica that published it (the first field, as in [`Envelope`], for [`own_echo`]).
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    events: Vec<WireEvent<'a>>,
}

/// One event of a [`BatchEnvelope`].
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent<'a> {
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

impl BridgeConfig {
    /// The channel of [`BatchEnvelope`]s, beside `channel` (which keeps one event per message
    /// for replicas of older releases).
    pub fn batch_channel(&self) -> String {
        format!("{}.batch", self.channel)
    }
}

/// The publishing side of the bridge, and whether both connections are up.
#[derive(Debug)]
pub struct Bridge {
    queue: mpsc::Sender<Arc<Event>>,
    publisher_up: Arc<AtomicBool>,
    subscriber_up: Arc<AtomicBool>,
    legacy_readers: Arc<AtomicBool>,
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
        // Until Redis says otherwise, an older replica may be listening.
        let legacy_readers = Arc::new(AtomicBool::new(true));
        tokio::spawn(run_publisher(
            client.clone(),
            config.clone(),
            replica_id.clone(),
            rx,
            Publisher {
                up: publisher_up.clone(),
                legacy_readers: legacy_readers.clone(),
            },
            shutdown.clone(),
        ));
        tokio::spawn(run_subscriber(
            client,
            config,
            replica_id,
            hub,
            subscriber_up.clone(),
            shutdown,
        ));
        Bridge {
            queue,
            publisher_up,
            subscriber_up,
            legacy_readers,
        }
    }

    /// Queues the event for the other replicas; drops it (and counts that) when the queue is full,
    /// which happens only while Redis is slow or down.
    pub fn publish(&self, event: &Arc<Event>) {
        if self.queue.try_send(event.clone()).is_err() {
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

    /// Whether, as Redis last said, a replica of an older release listens on the channel, so that
    /// each event is also published there on its own.
    pub fn legacy_readers(&self) -> bool {
        self.legacy_readers.load(Ordering::Relaxed)
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

/// What the publisher tells the rest of the bridge.
struct Publisher {
    up: Arc<AtomicBool>,
    legacy_readers: Arc<AtomicBool>,
}

impl Publisher {
    fn set_legacy_readers(&self, present: bool, channel: &str) {
        if self.legacy_readers.swap(present, Ordering::Relaxed) != present {
            if present {
                tracing::info!(%channel, "realtime: a replica of an older release listens; publishing each event on its own too");
            } else {
                tracing::info!(%channel, "realtime: no replica of an older release listens; publishing batches only");
            }
        }
        metrics::gauge!(m::LEGACY_READERS).set(f64::from(u8::from(present)));
    }
}

/// Whether a reader of one event per message (a replica of an older release) listens, from the
/// answer to `PUBSUB NUMSUB channel batch_channel`. Every batching replica subscribes to both
/// channels in one command, so the plain channel has more subscribers only while another reader
/// listens there. None when the answer is not the expected one. RESP2 answers a flat array of
/// names and counts, RESP3 a map of them (both in the order asked).
fn legacy_readers(numsub: &redis::Value) -> Option<bool> {
    let count = |v: &redis::Value| match v {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    };
    let (plain, batched) = match numsub {
        redis::Value::Array(items) => match items.as_slice() {
            [_, plain, _, batched] => (plain, batched),
            _ => return None,
        },
        redis::Value::Map(pairs) => match pairs.as_slice() {
            [(_, plain), (_, batched)] => (plain, batched),
            _ => return None,
        },
        _ => return None,
    };
    Some(count(plain)? > count(batched)?)
}

/// A value as JSON, or None (logged) when it cannot be: never for these string-only envelopes.
fn encode(value: &impl Serialize) -> Option<String> {
    serde_json::to_string(value)
        .inspect_err(|error| tracing::error!(%error, "cannot encode realtime events for Redis"))
        .ok()
}

/// One pipeline for `batch`: the batch as one message on the batch channel; while older replicas
/// listen, each event on its own on the plain channel too; then the question whether they still
/// do, so that a replica of an older release that subscribes misses at most one pipeline.
fn publishing(
    config: &BridgeConfig,
    batch_channel: &str,
    replica_id: &str,
    batch: &[Arc<Event>],
    legacy_readers: bool,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let batched = BatchEnvelope {
        origin: Cow::Borrowed(replica_id),
        events: batch
            .iter()
            .map(|e| WireEvent {
                destination: Cow::Borrowed(&e.destination),
                body: Cow::Borrowed(&e.body),
            })
            .collect(),
    };
    if let Some(payload) = encode(&batched) {
        pipe.cmd("PUBLISH").arg(batch_channel).arg(payload).ignore();
    }
    if legacy_readers {
        for event in batch {
            let single = Envelope {
                origin: Cow::Borrowed(replica_id),
                destination: Cow::Borrowed(&event.destination),
                body: Cow::Borrowed(&event.body),
                batched: true,
            };
            if let Some(payload) = encode(&single) {
                pipe.cmd("PUBLISH")
                    .arg(&config.channel)
                    .arg(payload)
                    .ignore();
            }
        }
    }
    pipe.cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&config.channel)
        .arg(batch_channel);
    pipe
}

async fn run_publisher(
    client: redis::Client,
    config: BridgeConfig,
    replica_id: String,
    mut rx: mpsc::Receiver<Arc<Event>>,
    publisher: Publisher,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.retry_min, config.retry_max);
    let batch_channel = config.batch_channel();
    let conn_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout));
    // Events taken from the queue whose publication failed are published first on the next
    // connection, so that a broken connection loses none; newer ones wait in the bounded queue.
    let mut batch: Vec<Arc<Event>> = Vec::new();
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
        set_connected(&publisher.up, true, "publisher");
        backoff.reset();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    e = rx.recv() => match e { Some(e) => batch.push(e), None => return },
                }
            }
            // What queued up while the last batch was on the wire goes out with this one, in
            // order, as one message. At light load a batch is one event, sent at once.
            while batch.len() < PUBLISH_BATCH
                && let Ok(e) = rx.try_recv()
            {
                batch.push(e);
            }
            let legacy = publisher.legacy_readers.load(Ordering::Relaxed);
            let pipe = publishing(&config, &batch_channel, &replica_id, &batch, legacy);
            let result: redis::RedisResult<(redis::Value,)> = pipe.query_async(&mut conn).await;
            match result {
                Ok((numsub,)) => {
                    metrics::counter!(m::EVENTS_BRIDGED, "direction" => "out")
                        .increment(batch.len() as u64);
                    metrics::counter!(m::PUBLISH_PIPELINES).increment(1);
                    batch.clear();
                    // An answer it cannot read keeps the older replicas served.
                    let present = legacy_readers(&numsub).unwrap_or(true);
                    publisher.set_legacy_readers(present, &config.channel);
                }
                Err(error) => {
                    tracing::warn!(%error, events = batch.len(), "realtime: Redis publish failed; reconnecting");
                    set_connected(&publisher.up, false, "publisher");
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
    let batch_channel = config.batch_channel();
    let channels = [config.channel.as_str(), batch_channel.as_str()];
    loop {
        let subscribed = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(config.timeout, subscribe(&client, &channels)) => r,
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
        tracing::info!(channel = %config.channel, %batch_channel, "realtime: subscribed to Redis");
        set_connected(&up, true, "subscriber");
        backoff.reset();
        let mut ping = tokio::time::interval(config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(msg) if msg.get_channel_name() == batch_channel => {
                        deliver_batch(&hub, &replica_id, msg.get_payload_bytes());
                    }
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

/// Subscribes to `channels` in one command, so that no `PUBSUB NUMSUB` sees this replica on one
/// and not the other (see [`legacy_readers`]).
async fn subscribe(
    client: &redis::Client,
    channels: &[&str],
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(channels).await?;
    Ok((sink, stream))
}

/// Whether `payload` is an envelope this replica published, judged from the prefix that the
/// publisher writes (`origin` is the first field of both envelopes), without parsing the events:
/// every message a replica publishes comes back to it from Redis.
fn own_echo(payload: &[u8], replica_id: &str) -> bool {
    const PREFIX: &[u8] = br#"{"origin":""#;
    payload
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix(replica_id.as_bytes()))
        .is_some_and(|rest| rest.first() == Some(&b'"'))
}

/// A message from another replica, parsed; None for this replica's own echo, and (logged) for
/// one that is not a `what`.
fn from_other<'a, T: Deserialize<'a>>(
    payload: &'a [u8],
    replica_id: &str,
    what: &str,
) -> Option<T> {
    if own_echo(payload, replica_id) {
        return None;
    }
    serde_json::from_slice(payload)
        .inspect_err(
            |error| tracing::warn!(%error, "realtime: ignoring a malformed {what} from Redis"),
        )
        .ok()
}

/// An event from the plain channel: a replica of an older release published it, or a batching
/// replica published a copy of it for those (skipped: the batch brought it).
fn deliver_remote(hub: &Hub, replica_id: &str, payload: &[u8]) {
    let Some(envelope) = from_other::<Envelope<'_>>(payload, replica_id, "event") else {
        return;
    };
    if envelope.batched || envelope.origin == replica_id {
        return;
    }
    metrics::counter!(m::EVENTS_BRIDGED, "direction" => "in").increment(1);
    hub.deliver(Arc::new(Event {
        destination: envelope.destination.into_owned(),
        body: envelope.body.into_owned(),
    }));
}

/// The events of a message from the batch channel, in order.
fn deliver_batch(hub: &Hub, replica_id: &str, payload: &[u8]) {
    let Some(envelope) = from_other::<BatchEnvelope<'_>>(payload, replica_id, "batch of events")
    else {
        return;
    };
    if envelope.origin == replica_id {
        return;
    }
    metrics::counter!(m::EVENTS_BRIDGED, "direction" => "in")
        .increment(envelope.events.len() as u64);
    for event in envelope.events {
        hub.deliver(Arc::new(Event {
            destination: event.destination.into_owned(),
            body: event.body.into_owned(),
        }));
    }
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
            batched: false,
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

    #[tokio::test]
    async fn a_batch_is_delivered_in_order_unless_it_is_our_own() {
        let hub = Hub::new(8);
        let mut rx = hub.subscribe();
        let batch = |origin: &str| {
            serde_json::to_vec(&BatchEnvelope {
                origin: Cow::Borrowed(origin),
                events: vec![
                    WireEvent {
                        destination: Cow::Borrowed("/topic/a"),
                        body: Cow::Borrowed("1"),
                    },
                    WireEvent {
                        destination: Cow::Borrowed("/topic/b"),
                        body: Cow::Borrowed("\"두\""),
                    },
                ],
            })
            .unwrap()
        };
        deliver_batch(&hub, "me", &batch("me"));
        deliver_batch(
            &hub,
            "me",
            br#"{"origin":"other","events":[{"destination":1}]}"#,
        );
        deliver_batch(&hub, "me", &batch("other"));
        let first = rx.recv().await.unwrap();
        assert_eq!((&*first.destination, &*first.body), ("/topic/a", "1"));
        let second = rx.recv().await.unwrap();
        assert_eq!(
            (&*second.destination, &*second.body),
            ("/topic/b", "\"두\"")
        );
        assert!(rx.try_recv().is_err());
    }

    /// The copies published for older replicas keep their format (which they parse with the
    /// three fields alone), and batching replicas skip them: the batch brought the event.
    #[tokio::test]
    async fn copies_for_older_replicas_are_read_by_them_and_skipped_by_batching_ones() {
        let copy = serde_json::to_string(&Envelope {
            origin: Cow::Borrowed("4f2a"),
            destination: Cow::Borrowed("/topic/a"),
            body: Cow::Borrowed("{}"),
            batched: true,
        })
        .unwrap();
        assert_eq!(
            copy,
            r#"{"origin":"4f2a","destination":"/topic/a","body":"{}","batched":true}"#
        );
        let plain = serde_json::to_string(&Envelope {
            origin: Cow::Borrowed("4f2a"),
            destination: Cow::Borrowed("/topic/a"),
            body: Cow::Borrowed("{}"),
            batched: false,
        })
        .unwrap();
        assert_eq!(
            plain,
            r#"{"origin":"4f2a","destination":"/topic/a","body":"{}"}"#
        );
        let hub = Hub::new(8);
        let mut rx = hub.subscribe();
        deliver_remote(&hub, "me", copy.as_bytes());
        assert!(rx.try_recv().is_err());
        deliver_remote(&hub, "me", plain.as_bytes());
        assert_eq!(rx.recv().await.unwrap().body, "{}");
    }

    #[test]
    fn older_readers_are_those_the_batch_channel_lacks() {
        use redis::Value::{Array, BulkString, Int};
        let numsub = |plain, batched| {
            Array(vec![
                BulkString(b"c".to_vec()),
                Int(plain),
                BulkString(b"c.batch".to_vec()),
                Int(batched),
            ])
        };
        assert_eq!(legacy_readers(&numsub(2, 2)), Some(false));
        assert_eq!(legacy_readers(&numsub(0, 0)), Some(false));
        assert_eq!(legacy_readers(&numsub(3, 2)), Some(true));
        let resp3 = redis::Value::Map(vec![
            (BulkString(b"c".to_vec()), Int(3)),
            (BulkString(b"c.batch".to_vec()), Int(2)),
        ]);
        assert_eq!(legacy_readers(&resp3), Some(true));
        assert_eq!(legacy_readers(&Array(vec![Int(1)])), None);
        assert_eq!(legacy_readers(&Int(1)), None);
    }
}
