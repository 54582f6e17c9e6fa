//! Cross-replica delivery through Redis pub/sub: every replica delivers every event to its own
//! subscribers exactly once, local delivery goes on while Redis is down, and the replicas
//! resubscribe when it is back.

mod realtime_support;

use std::time::{Duration, Instant};

use mutr_api::realtime::{GALAXY_TOPIC, RealtimeArgs};
use realtime_support::{
    DEADLINE, PrivateRedis, Seen, Server, Transport, WsClient, args, redis_url,
};

fn node(id: u64) -> String {
    format!(r#"{{"id":{id},"content":"노드 {id}"}}"#)
}

/// Settings of two replicas on one channel of their own.
fn pair_args() -> (RealtimeArgs, RealtimeArgs) {
    let a = args();
    let mut b = args();
    b.realtime_redis_channel = a.realtime_redis_channel.clone();
    (a, b)
}

/// Two replicas with these settings, both bridges connected.
async fn start_pair((a, b): (RealtimeArgs, RealtimeArgs), redis: String) -> (Server, Server) {
    let one = Server::start(a, Some(redis.clone())).await;
    let two = Server::start(b, Some(redis)).await;
    one.wait_redis().await;
    two.wait_redis().await;
    (one, two)
}

/// Both replicas on one channel of the shared Redis.
async fn two_replicas(redis: String) -> (Server, Server) {
    start_pair(pair_args(), redis).await
}

/// Whether `client` gets a MESSAGE with `body` within `wait` (heart-beats skipped).
async fn receives(client: &mut WsClient, body: &str, wait: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < wait {
        match tokio::time::timeout(wait.saturating_sub(start.elapsed()), client.next()).await {
            Err(_) => return false,
            Ok(Seen::Frame(f)) if f.command == "MESSAGE" => {
                if f.body == body.as_bytes() {
                    return true;
                }
            }
            Ok(Seen::Closed(code)) => panic!("subscriber closed ({code:?})"),
            Ok(_) => {}
        }
    }
    false
}

#[tokio::test]
async fn every_replica_delivers_every_event_exactly_once() {
    let (one, two) = two_replicas(redis_url()).await;
    let mut on_one = WsClient::connected(&one, Transport::RawWebSocket).await;
    on_one.subscribe("s", GALAXY_TOPIC).await;
    let mut on_two = WsClient::connected(&two, Transport::SockJsWebSocket).await;
    on_two.subscribe("s", GALAXY_TOPIC).await;

    one.realtime.publish(GALAXY_TOPIC, node(1)).await;
    two.realtime.publish(GALAXY_TOPIC, node(2)).await;
    for client in [&mut on_one, &mut on_two] {
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let f = client.frame().await;
            assert_eq!(f.command, "MESSAGE");
            bodies.push(String::from_utf8(f.body.to_vec()).unwrap());
        }
        bodies.sort();
        assert_eq!(bodies, [node(1), node(2)]);
        // No duplicate (a replica's own event echoed back by Redis) follows.
        assert!(!receives(client, &node(1), Duration::from_millis(300)).await);
    }
    one.stop().await;
    two.stop().await;
}

/// A burst larger than one publishing pipeline reaches the other replica whole, in order, once.
#[tokio::test]
async fn a_burst_reaches_the_other_replica_in_order_and_once() {
    const BURST: u64 = 600;
    let (a, mut b) = pair_args();
    b.ws_send_buffer = 2 * BURST as usize;
    let (one, two) = start_pair((a, b), redis_url()).await;
    let mut on_two = WsClient::connected(&two, Transport::RawWebSocket).await;
    on_two.subscribe("s", GALAXY_TOPIC).await;

    for id in 0..BURST {
        one.realtime.publish(GALAXY_TOPIC, node(id)).await;
    }
    for id in 0..BURST {
        let f = on_two.frame().await;
        assert_eq!(f.command, "MESSAGE");
        assert_eq!(
            f.body,
            node(id).as_bytes(),
            "event {id} out of order or missing"
        );
    }
    assert!(!receives(&mut on_two, &node(0), Duration::from_millis(300)).await);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn redis_outage_local_delivery_goes_on_and_replicas_resubscribe() {
    let mut redis = PrivateRedis::start().await;
    let (one, two) = two_replicas(redis.url()).await;
    let mut on_one = WsClient::connected(&one, Transport::RawWebSocket).await;
    on_one.subscribe("s", GALAXY_TOPIC).await;
    let mut on_two = WsClient::connected(&two, Transport::RawWebSocket).await;
    on_two.subscribe("s", GALAXY_TOPIC).await;

    redis.kill();
    realtime_support::wait_for("both bridges to notice the outage", || {
        let (a, b) = (one.realtime.clone(), two.realtime.clone());
        async move { a.redis_connected() == Some(false) && b.redis_connected() == Some(false) }
    })
    .await;
    // Local subscribers still get this replica's events.
    one.realtime.publish(GALAXY_TOPIC, node(10)).await;
    assert!(receives(&mut on_one, &node(10), DEADLINE).await);

    redis.restart().await;
    one.wait_redis().await;
    two.wait_redis().await;
    // Both directions work again. A publication racing the resubscription may be missed, so
    // publish until one arrives.
    let mut id = 100;
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "replica two never got events again"
        );
        id += 1;
        one.realtime.publish(GALAXY_TOPIC, node(id)).await;
        if receives(&mut on_two, &node(id), Duration::from_millis(200)).await {
            break;
        }
    }
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "replica one never got events again"
        );
        id += 1;
        two.realtime.publish(GALAXY_TOPIC, node(id)).await;
        if receives(&mut on_one, &node(id), Duration::from_millis(200)).await {
            break;
        }
    }
    one.stop().await;
    two.stop().await;
}

/// The next message a reader of the plain channel gets within `wait`, as JSON.
async fn next_plain(
    stream: &mut (impl futures::Stream<Item = redis::Msg> + Unpin),
    wait: Duration,
) -> Option<serde_json::Value> {
    use futures::StreamExt;
    let msg = tokio::time::timeout(wait, stream.next()).await.ok()??;
    Some(serde_json::from_slice(msg.get_payload_bytes()).expect("a JSON envelope"))
}

/// Expand/contract of the bridge's format. A replica of the release before the batch channel
/// reads and publishes one event per message on the plain channel. While one listens, a batching
/// replica publishes each event there too: the older replica gets each of its events once, in
/// order and in the format it reads, its own events reach the batching replicas once, and a
/// batching replica does not get the copies as well as the batch. Once it is gone, the copies stop.
#[tokio::test]
async fn a_replica_of_the_previous_release_still_gets_and_sends_every_event() {
    let settings = pair_args();
    let channel = settings.0.realtime_redis_channel.clone();
    let (one, two) = start_pair(settings, redis_url()).await;
    let mut on_two = WsClient::connected(&two, Transport::RawWebSocket).await;
    on_two.subscribe("s", GALAXY_TOPIC).await;
    let mut on_one = WsClient::connected(&one, Transport::RawWebSocket).await;
    on_one.subscribe("s", GALAXY_TOPIC).await;

    // Only batching replicas listen: after its first publication, replica one knows it.
    one.realtime.publish(GALAXY_TOPIC, node(0)).await;
    assert!(receives(&mut on_two, &node(0), DEADLINE).await);
    realtime_support::wait_for("replica one to see no older reader", || {
        let rt = one.realtime.clone();
        async move { rt.redis_legacy_readers() == Some(false) }
    })
    .await;

    // A replica of the previous release subscribes to the plain channel alone.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut old_reader = client.get_async_pubsub().await.unwrap();
    old_reader.subscribe(&channel).await.unwrap();
    let mut old_stream = old_reader.into_on_message();
    // Publishing until it gets one: the publication that first notices it may go without a copy.
    let mut id = 1;
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "the older replica never got an event"
        );
        one.realtime.publish(GALAXY_TOPIC, node(id)).await;
        assert!(receives(&mut on_two, &node(id), DEADLINE).await);
        if let Some(envelope) = next_plain(&mut old_stream, Duration::from_millis(200)).await {
            assert_eq!(envelope["body"], node(id));
            break;
        }
        id += 1;
    }
    assert_eq!(one.realtime.redis_legacy_readers(), Some(true));
    for id in 100..150 {
        one.realtime.publish(GALAXY_TOPIC, node(id)).await;
    }
    for id in 100..150 {
        let envelope = next_plain(&mut old_stream, DEADLINE)
            .await
            .unwrap_or_else(|| panic!("event {id} did not reach the older replica"));
        assert_eq!(envelope["destination"], GALAXY_TOPIC);
        assert_eq!(
            envelope["body"],
            node(id),
            "event {id} out of order or missing"
        );
        assert!(envelope["origin"].is_string());
    }
    // Replica two got each of them once: the batch, not the copies too.
    for id in 100..150 {
        let f = on_two.frame().await;
        assert_eq!(
            f.body,
            node(id).as_bytes(),
            "event {id} out of order or missing"
        );
    }
    assert!(!receives(&mut on_two, &node(149), Duration::from_millis(300)).await);

    // The older replica publishes: both batching replicas deliver it, once.
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let old_event = serde_json::json!({
        "origin": "a-replica-of-the-previous-release",
        "destination": GALAXY_TOPIC,
        "body": node(7000),
    });
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(old_event.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    for client in [&mut on_one, &mut on_two] {
        // Replica one's own events before it reach its own subscriber too.
        assert!(receives(client, &node(7000), DEADLINE).await);
        assert!(!receives(client, &node(7000), Duration::from_millis(300)).await);
    }

    // The older replica is gone: the copies stop.
    drop(old_stream);
    let start = Instant::now();
    let mut id = 8000;
    while one.realtime.redis_legacy_readers() != Some(false) {
        assert!(
            start.elapsed() < DEADLINE,
            "replica one kept publishing copies"
        );
        one.realtime.publish(GALAXY_TOPIC, node(id)).await;
        assert!(receives(&mut on_two, &node(id), DEADLINE).await);
        id += 1;
    }
    one.stop().await;
    two.stop().await;
}
