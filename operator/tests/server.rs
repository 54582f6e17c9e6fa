//! The operator's `/healthz` and `/metrics` endpoint, served for real on a local port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mutr_operator::metrics::Metrics;
use mutr_operator::server::{self, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    response
}

#[tokio::test]
async fn healthz_follows_the_controller_and_metrics_render() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new();
    metrics.reconciled(Duration::from_millis(12));
    metrics.failed();
    let alive = Arc::new(AtomicBool::new(true));
    let health = Health {
        metrics,
        alive: alive.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, health, async move {
        let _ = stopped.await;
    }));

    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    let metrics = get(addr, "/metrics").await;
    assert!(
        metrics.contains("mutr_operator_reconciles_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mutr_operator_reconcile_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mutr_operator_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );

    alive.store(false, Ordering::Relaxed);
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
