//! The browser client's own libraries against the real server: `@stomp/stompjs` over
//! `sockjs-client` (WebSocket, xhr-streaming and xhr-polling transports) and over a plain
//! WebSocket, run by Node from `api/tests/realtime-js` (installed with `npm ci` on first use).

mod realtime_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use mutr_api::realtime::GALAXY_TOPIC;
use realtime_support::{DEADLINE, Server, args};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const NODE: &str = r#"{"id":7,"content":"첫 번째 별","authorNickname":"차분한_구름_4821","parentId":null,"analysisStatus":"PENDING"}"#;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/realtime-js")
}

/// Installs the pinned packages unless the installed tree matches the lock file.
async fn npm_ci(dir: &Path) {
    let lock = std::fs::read(dir.join("package-lock.json")).expect("package-lock.json");
    let stamp = dir.join("node_modules/.mutr-lock-copy");
    if std::fs::read(&stamp).is_ok_and(|s| s == lock) {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .await
        .expect("npm must be installed (hack/ensure-deps.sh installs nodejs and npm)");
    assert!(status.success(), "npm ci failed in {}", dir.display());
    std::fs::write(&stamp, lock).expect("stamp");
}

/// Runs the JS client on `transport` and checks that it receives the published node.
async fn js_client_receives(server: &Server, transport: &str) {
    let mut child = Command::new("node")
        .arg("client.mjs")
        .arg(server.http(""))
        .arg(transport)
        .current_dir(js_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed (hack/ensure-deps.sh installs nodejs)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next_line = async || {
        tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{transport}: the JS client said nothing in time"))
            .expect("stdout")
            .unwrap_or_else(|| panic!("{transport}: the JS client exited early"))
    };
    assert_eq!(next_line().await, "SUBSCRIBED", "{transport}");
    server.realtime.publish(GALAXY_TOPIC, NODE.to_owned()).await;
    assert_eq!(next_line().await, format!("MESSAGE {NODE}"), "{transport}");
    assert_eq!(next_line().await, "DONE", "{transport}");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("JS client exits")
        .expect("status");
    assert!(status.success(), "{transport}: {status}");
}

#[tokio::test]
async fn stompjs_over_sockjs_client_and_websocket() {
    npm_ci(&js_dir()).await;
    let server = Server::start(args(), None).await;
    for transport in ["websocket", "xhr-streaming", "xhr-polling", "websocket-raw"] {
        js_client_receives(&server, transport).await;
        server.wait_sessions(0).await;
    }
    server.stop().await;
}
