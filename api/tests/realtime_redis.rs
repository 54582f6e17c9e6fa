//! Cross-replica delivery through Redis pub/sub: every replica delivers every event to its own
//! subscribers exactly once, local delivery goes on while Redis is down, and the replicas
//! resubscribe when it is back.

mod realtime_support;

use std::time::{Duration, Instant};

use mutr_api::realtime::GALAXY_TOPIC;
use realtime_support::{
    DEADLINE, PrivateRedis, Seen, Server, Transport, WsClient, args, redis_url,
};

fn node(id: u64) -> String {
    format!(r#"{{"id":{id},"content":"노드 {id}"}}"#)
}

/// Both replicas on one channel of the shared Redis.
async fn two_replicas(redis: String) -> (Server, Server) {
    let a = args();
    let mut b = args();
    b.realtime_redis_channel = a.realtime_redis_channel.clone();
    let one = Server::start(a, Some(redis.clone())).await;
    let two = Server::start(b, Some(redis)).await;
    one.wait_redis().await;
    two.wait_redis().await;
    (one, two)
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
    let a = args();
    let mut b = args();
    b.realtime_redis_channel = a.realtime_redis_channel.clone();
    b.ws_send_buffer = 2 * BURST as usize;
    let one = Server::start(a, Some(redis_url())).await;
    let two = Server::start(b, Some(redis_url())).await;
    one.wait_redis().await;
    two.wait_redis().await;
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
