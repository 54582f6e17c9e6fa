//! The real binary: `serve` with the documented flags and environment names becomes ready on
//! `/readyz`, answers gRPC, and on SIGTERM drains and exits 0.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_becomes_ready_and_exits_zero_on_sigterm() {
    let (generate, embed) = model_files();
    let model_dir = generate.parent().unwrap().to_owned();
    assert_eq!(embed.parent().unwrap(), model_dir);
    let (grpc, metrics) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mutr-ai-server"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ])
        .env("AI_SERVER_PORT", grpc.to_string())
        .env("MUTR_MODEL_DIR", &model_dir)
        .env("MUTR_MODEL_PROFILE", "tiny")
        .env("MUTR_PARALLEL", "2")
        .env("n_ctx", "512")
        .env("n_threads", "1")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mutr-ai-server");

    let readyz = format!("http://127.0.0.1:{metrics}/readyz");
    wait_until(Duration::from_secs(60), "/readyz", || async {
        reqwest::get(&readyz)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let mut client = mutr_proto::AnalysisServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    assert_in_range(
        &analyze(
            &mut client,
            request("The sun rose over the quiet town.", "Morning"),
        )
        .await
        .unwrap(),
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn a_bad_embedding_parallelism_is_refused_before_llama_cpp_could_abort() {
    let (generate, _) = model_files();
    let out = Command::new(env!("CARGO_BIN_EXE_mutr-ai-server"))
        .args([
            "serve",
            "--embed-parallel",
            "3",
            "--port",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("MUTR_MODEL_DIR", generate.parent().unwrap())
        .env("MUTR_MODEL_PROFILE", "tiny")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("power of two"), "{stderr}");
}
