//! `REDIS_URL=rediss://…` (Redis over TLS: Memorystore with in-transit encryption) works: the
//! workspace builds the redis client with rustls (`tokio-rustls-comp` in the root Cargo.toml), so a
//! `rediss://` URL gives a TLS client, and connecting runs a real TLS handshake (the rustls crypto
//! provider and the trust store load) instead of failing with "TLS feature not enabled". The AI
//! server's optional result cache shares the same workspace dependency.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

#[test]
fn a_rediss_url_builds_a_tls_client() {
    let client = redis::Client::open("rediss://redis.example.internal:6378/0")
        .expect("rediss:// is accepted with the TLS feature on");
    assert!(matches!(
        client.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { host, port: 6378, .. } if host == "redis.example.internal"
    ));
}

#[tokio::test]
async fn connecting_over_rediss_runs_a_tls_handshake() {
    // A server that answers the ClientHello with plain text, as a Redis without TLS would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = socket.write_all(b"-ERR not TLS\r\n").await;
    });
    let client = redis::Client::open(format!("rediss://localhost:{port}/0")).unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("the handshake fails fast instead of hanging");
    let error = result.expect_err("a plain-text server fails the TLS handshake");
    let text = error.to_string();
    assert!(
        !text.contains("feature"),
        "TLS support is compiled in, got: {text}"
    );
    server.await.unwrap();
}
