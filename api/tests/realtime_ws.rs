//! The realtime push end to end over real sockets: STOMP over a raw WebSocket and over SockJS's
//! WebSocket and xhr transports, against the realtime router served on `127.0.0.1:0`.

mod realtime_support;

use std::time::Duration;

use futures::StreamExt;
use mutr_api::realtime::GALAXY_TOPIC;
use realtime_support::{PrivateRedis, Seen, Server, Transport, WsClient, XhrClient, args};

const NODE: &str =
    r#"{"id":42,"content":"차분한 밤","authorNickname":"차분한_구름_4821","topic":null}"#;

#[tokio::test]
async fn raw_websocket_connect_subscribe_message_disconnect() {
    let server = Server::start(args(), None).await;
    let mut c = WsClient::open(&server, Transport::RawWebSocket).await;
    c.send(
        "CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\
         Authorization:Bearer not-checked\nX-Guest-Token:abc\n\n\0",
    )
    .await;
    let connected = c.frame().await;
    assert_eq!(connected.command, "CONNECTED");
    assert_eq!(connected.get("version"), Some("1.2"));
    assert_eq!(connected.get("heart-beat"), Some("10000,10000"));
    server.wait_sessions(1).await;

    c.subscribe("sub-0", GALAXY_TOPIC).await;
    server.realtime.publish(GALAXY_TOPIC, NODE.to_owned()).await;
    let msg = c.frame().await;
    assert_eq!(msg.command, "MESSAGE");
    assert_eq!(msg.get("destination"), Some(GALAXY_TOPIC));
    assert_eq!(msg.get("subscription"), Some("sub-0"));
    assert!(msg.get("message-id").is_some());
    assert_eq!(
        msg.get("content-length"),
        Some(NODE.len().to_string().as_str())
    );
    assert_eq!(std::str::from_utf8(&msg.body).unwrap(), NODE);

    c.send("UNSUBSCRIBE\nid:sub-0\n\n\0").await;
    c.send("DISCONNECT\nreceipt:77\n\n\0").await;
    let receipt = c.frame().await;
    assert_eq!(receipt.command, "RECEIPT");
    assert_eq!(receipt.get("receipt-id"), Some("77"));
    assert_eq!(c.closed().await, Some(1000));
    server.wait_sessions(0).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_error_then_close() {
    let server = Server::start(args(), None).await;
    for (bad, message) in [
        ("SUBSCRIBE\nthis line has no colon\n\n\0", "malformed frame"),
        (
            &*format!("SEND\ndestination:/x\n\n{}\0", "x".repeat(5000)),
            "frame too large",
        ),
        (
            "SUBSCRIBE\nid:a\ndestination:/queue/private\n\n\0",
            "unknown destination",
        ),
    ] {
        let mut c = WsClient::connected(&server, Transport::RawWebSocket).await;
        c.send(bad).await;
        let err = c.frame().await;
        assert_eq!(err.command, "ERROR");
        assert_eq!(err.get("message"), Some(message));
        assert_eq!(c.closed().await, Some(1002));
    }
    // Before CONNECT.
    let mut c = WsClient::open(&server, Transport::RawWebSocket).await;
    c.send("SUBSCRIBE\nid:a\ndestination:/topic/x\n\n\0").await;
    assert_eq!(c.frame().await.command, "ERROR");
    server.wait_sessions(0).await;
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_both_ways() {
    let mut a = args();
    a.ws_heartbeat_send = Duration::from_millis(50);
    a.ws_heartbeat_receive = Duration::from_millis(50);
    a.ws_heartbeat_tolerance = 4;
    let server = Server::start(a, None).await;
    let mut c = WsClient::open(&server, Transport::RawWebSocket).await;
    c.send("CONNECT\naccept-version:1.2\nheart-beat:50,50\n\n\0")
        .await;
    assert_eq!(c.frame().await.get("heart-beat"), Some("50,50"));
    // The server beats while idle; the client's beats keep the session open past the tolerance.
    for _ in 0..8 {
        assert_eq!(c.next().await, Seen::HeartBeat);
        c.send("\n").await;
    }
    assert_eq!(server.realtime.session_count(), 1);
    // Silence: the session ends.
    assert_eq!(c.closed().await, Some(1000));
    server.wait_sessions(0).await;
    server.stop().await;
}

#[tokio::test]
async fn slow_subscriber_is_disconnected() {
    let mut a = args();
    a.ws_send_buffer = 8;
    a.ws_send_timeout = Duration::from_millis(500);
    let server = Server::start(a, None).await;
    let mut slow = WsClient::connected_with(&server, Transport::RawWebSocket, Some(4096)).await;
    slow.subscribe("s", GALAXY_TOPIC).await;
    let mut fast = WsClient::connected(&server, Transport::RawWebSocket).await;
    fast.subscribe("f", GALAXY_TOPIC).await;
    // The slow client reads nothing. Events of 8 KiB overflow its small socket buffer and the
    // server's, its session's writes block and it is disconnected, while the fast client, which
    // reads each event before the next is published, gets them all.
    let body = format!("\"{}\"", "x".repeat(8 * 1024));
    let (ack, mut acks) = tokio::sync::mpsc::channel(1);
    let fast_reader = tokio::spawn(async move {
        loop {
            let f = fast.frame().await;
            assert_eq!(f.command, "MESSAGE");
            if ack.send(()).await.is_err() {
                return;
            }
        }
    });
    let start = std::time::Instant::now();
    while server.realtime.session_count() == 2 {
        assert!(
            start.elapsed() < realtime_support::DEADLINE,
            "the slow subscriber was never disconnected"
        );
        server.realtime.publish(GALAXY_TOPIC, body.clone()).await;
        acks.recv().await.expect("fast subscriber got the event");
    }
    server.wait_sessions(1).await;
    drop(acks);
    fast_reader.abort();
    // The slow client finds its connection closed after whatever was in flight.
    slow.closed().await;
    server.stop().await;
}

#[tokio::test]
async fn sockjs_info_and_welcome() {
    let server = Server::start(args(), None).await;
    let http = reqwest::Client::new();
    let r = http
        .get(server.http("/ws-mutr/info?t=1"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["websocket"], true);
    assert_eq!(info["cookie_needed"], false);
    assert_eq!(info["origins"], serde_json::json!(["*:*"]));
    assert!(info["entropy"].is_u64());

    let r = http
        .request(reqwest::Method::OPTIONS, server.http("/ws-mutr/info"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-methods"], "OPTIONS, GET");
    assert_eq!(r.headers()["access-control-allow-headers"], "content-type");

    let r = http.get(server.http("/ws-mutr")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Welcome to SockJS!\n");

    // A plain GET where an upgrade belongs: refused in the API's error envelope.
    for path in ["/ws-mutr/websocket", "/ws-mutr/000/sess/websocket"] {
        let r = http.get(server.http(path)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["success"], false, "{path}: {body}");
        assert!(body["data"].is_null(), "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn sockjs_websocket_transport() {
    let server = Server::start(args(), None).await;
    let mut c = WsClient::connected(&server, Transport::SockJsWebSocket).await;
    c.subscribe("sub-0", GALAXY_TOPIC).await;
    server.realtime.publish(GALAXY_TOPIC, NODE.to_owned()).await;
    let msg = c.frame().await;
    assert_eq!(msg.command, "MESSAGE");
    assert_eq!(std::str::from_utf8(&msg.body).unwrap(), NODE);
    // An empty message is ignored...
    c.send_raw("").await;
    c.send(&format!(
        "SUBSCRIBE\nid:sub-1\ndestination:{GALAXY_TOPIC}\nreceipt:r1\n\n\0"
    ))
    .await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("r1"));
    // ...and a payload that is not SockJS JSON ends the session.
    c.send_raw("not json").await;
    assert!(matches!(c.closed().await, Some(3000) | Some(1000)));
    server.wait_sessions(0).await;

    // DISCONNECT closes with SockJS's close frame.
    let mut c = WsClient::connected(&server, Transport::SockJsWebSocket).await;
    c.send("DISCONNECT\nreceipt:r\n\n\0").await;
    assert_eq!(c.frame().await.command, "RECEIPT");
    assert_eq!(c.closed().await, Some(3000));
    server.stop().await;
}

#[tokio::test]
async fn sockjs_heartbeat_frames() {
    let mut a = args();
    a.sockjs_heartbeat = Duration::from_millis(50);
    let server = Server::start(a, None).await;
    let mut c = WsClient::connected(&server, Transport::SockJsWebSocket).await;
    assert_eq!(c.next().await, Seen::SockJsHeartBeat);
    let mut x = XhrClient::open(&server).await;
    assert_eq!(x.poll_raw().await, "h\n");
    server.stop().await;
}

#[tokio::test]
async fn xhr_polling_transport() {
    let server = Server::start(args(), None).await;
    let mut c = XhrClient::open(&server).await;
    c.send("CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:0,0\n\n\0")
        .await;
    assert_eq!(c.frame().await.command, "CONNECTED");
    c.send(&format!(
        "SUBSCRIBE\nid:sub-0\ndestination:{GALAXY_TOPIC}\nreceipt:r\n\n\0"
    ))
    .await;
    assert_eq!(c.frame().await.command, "RECEIPT");
    server.realtime.publish(GALAXY_TOPIC, NODE.to_owned()).await;
    let msg = c.frame().await;
    assert_eq!(msg.command, "MESSAGE");
    assert_eq!(std::str::from_utf8(&msg.body).unwrap(), NODE);

    c.send("SUBSCRIBE\nbroken\n\n\0").await;
    assert_eq!(c.frame().await.command, "ERROR");
    assert_eq!(c.next().await, Seen::Closed(Some(3000)));
    server.wait_sessions(0).await;
    server.stop().await;
}

#[tokio::test]
async fn xhr_send_errors_and_second_receiver() {
    let server = Server::start(args(), None).await;
    let http = reqwest::Client::new();
    // Unknown session.
    let r = http
        .post(server.http("/ws-mutr/000/nosuch/xhr_send"))
        .body(r#"["x"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Open one, then send broken payloads.
    let base = server.http("/ws-mutr/000/abcdefgh");
    let open = http.post(format!("{base}/xhr")).send().await.unwrap();
    assert_eq!(open.text().await.unwrap(), "o\n");
    for (payload, expected) in [
        ("", "Payload expected."),
        ("[\"x\"", "Broken JSON encoding."),
    ] {
        let r = http
            .post(format!("{base}/xhr_send"))
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(r.text().await.unwrap(), expected);
    }
    // Of two concurrent receiving requests, one waits and the other is refused at once.
    let poll = || http.post(format!("{base}/xhr")).send();
    let refused = tokio::select! {
        r = poll() => r,
        r = poll() => r,
    };
    assert_eq!(
        refused.unwrap().text().await.unwrap(),
        "c[2010,\"Another connection still open\"]\n"
    );
    // Invalid session ids.
    let r = http
        .post(server.http("/ws-mutr/0.0/abc/xhr"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn xhr_streaming_transport() {
    let server = Server::start(args(), None).await;
    let http = reqwest::Client::new();
    let base = server.http("/ws-mutr/123/streaming1");
    let response = http
        .post(format!("{base}/xhr_streaming"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut read_until = async |text: &mut String, needle: &str| {
        while !text.contains(needle) {
            let chunk = tokio::time::timeout(realtime_support::DEADLINE, body.next())
                .await
                .expect("streaming chunk in time")
                .expect("stream open")
                .expect("chunk");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    read_until(&mut text, "\no\n").await;
    assert!(text.starts_with(&"h".repeat(2048)));
    let send = |stomp: String| {
        let http = http.clone();
        let url = format!("{base}/xhr_send");
        async move {
            let r = http
                .post(url)
                .body(serde_json::to_string(&[stomp]).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
    };
    send("CONNECT\naccept-version:1.2\n\n\0".to_owned()).await;
    read_until(&mut text, "CONNECTED").await;
    send(format!(
        "SUBSCRIBE\nid:0\ndestination:{GALAXY_TOPIC}\nreceipt:r\n\n\0"
    ))
    .await;
    read_until(&mut text, "RECEIPT").await;
    server.realtime.publish(GALAXY_TOPIC, NODE.to_owned()).await;
    read_until(&mut text, "MESSAGE").await;
    let frame_line = text.lines().find(|l| l.contains("MESSAGE")).unwrap();
    let messages: Vec<String> = serde_json::from_str(&frame_line[1..]).unwrap();
    assert!(messages[0].ends_with(&format!("{NODE}\0")));
    server.stop().await;
}

#[tokio::test]
async fn close_all_closes_sessions_and_refuses_new_ones() {
    let server = Server::start(args(), None).await;
    let mut raw = WsClient::connected(&server, Transport::RawWebSocket).await;
    let mut sockjs = WsClient::connected(&server, Transport::SockJsWebSocket).await;
    server.wait_sessions(2).await;
    server.realtime.close_all();
    assert_eq!(raw.closed().await, Some(1001));
    assert_eq!(sockjs.closed().await, Some(1001));
    tokio::time::timeout(realtime_support::DEADLINE, server.realtime.closed())
        .await
        .expect("every session closed");
    let refused = tokio_tungstenite::connect_async(server.ws("/ws-mutr/websocket")).await;
    assert!(refused.is_err(), "a closing server accepts no new session");
    server.stop().await;
}

#[tokio::test]
async fn session_limit() {
    let mut a = args();
    a.ws_max_sessions = 1;
    let server = Server::start(a, None).await;
    let _first = WsClient::connected(&server, Transport::RawWebSocket).await;
    let mut second = WsClient::open(&server, Transport::RawWebSocket).await;
    assert_eq!(second.closed().await, Some(1013));
    server.stop().await;
}

#[tokio::test]
async fn disallowed_origin_is_refused() {
    let mut a = args();
    a.ws_allowed_origins = vec!["https://mutr.example".to_owned()];
    let server = Server::start(a, None).await;
    let http = reqwest::Client::new();
    let r = http
        .post(server.http("/ws-mutr/000/sess/xhr"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(server.http("/ws-mutr/000/sess/xhr"))
        .header("origin", "https://mutr.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

/// The status of a WebSocket handshake sent with `origin`.
async fn handshake_status(url: &str, origin: &str) -> u16 {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("handshake with {origin}: {e}"),
    }
}

/// Both WebSocket transports check the Origin as the xhr ones do: a foreign page is refused
/// before the upgrade, a listed origin and the server's own host are let in.
#[tokio::test]
async fn disallowed_origin_is_refused_on_both_websockets() {
    let mut a = args();
    a.ws_allowed_origins = vec!["https://mutr.example".to_owned()];
    let server = Server::start(a, None).await;
    let own = format!("http://{}", server.addr);
    for path in ["/ws-mutr/websocket", "/ws-mutr/000/sess/websocket"] {
        let url = server.ws(path);
        assert_eq!(
            handshake_status(&url, "https://evil.example").await,
            403,
            "{path}"
        );
        assert_eq!(
            handshake_status(&url, "https://mutr.example").await,
            101,
            "{path}"
        );
        assert_eq!(handshake_status(&url, &own).await, 101, "{path}");
    }
    server.stop().await;
}

/// Local delivery must not depend on Redis: with an unreachable Redis, the server starts, and
/// its own subscribers get every event.
#[tokio::test]
async fn redis_down_at_start_still_delivers_locally() {
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    drop(redis);
    let server = Server::start(args(), Some(url)).await;
    assert_eq!(server.realtime.redis_connected(), Some(false));
    let mut c = WsClient::connected(&server, Transport::RawWebSocket).await;
    c.subscribe("s", GALAXY_TOPIC).await;
    server.realtime.publish(GALAXY_TOPIC, NODE.to_owned()).await;
    assert_eq!(std::str::from_utf8(&c.frame().await.body).unwrap(), NODE);
    server.stop().await;
}

/// An xhr session whose client stops polling is closed after the disconnect delay, and a late
/// request gets the close frame.
#[tokio::test]
async fn abandoned_xhr_session_is_closed() {
    let mut a = args();
    a.sockjs_disconnect_delay = Duration::from_millis(300);
    a.sockjs_heartbeat = Duration::from_millis(50);
    let server = Server::start(a, None).await;
    let mut c = XhrClient::open(&server).await;
    c.send("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0")
        .await;
    assert_eq!(c.frame().await.command, "CONNECTED");
    server.wait_sessions(1).await;
    // No more polls: the session ends once the delay has passed without a receiving request.
    server.wait_sessions(0).await;
    assert_eq!(c.next().await, Seen::Closed(Some(3000)));
    server.stop().await;
}
