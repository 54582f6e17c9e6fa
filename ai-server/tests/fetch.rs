//! The model downloader against a local HTTP server serving a real model file: success and
//! skip, checksum mismatch, an interrupted transfer, and unpinned checksums.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use mutr_ai_server::fetch::{self, FetchError, FetchOptions, Fetched};
use mutr_ai_server::models::{ModelEntry, Role};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const FILE: &str = "stories260K.gguf";

fn real_file() -> Vec<u8> {
    std::fs::read(common::model_files().0).expect("read the test model")
}

async fn serve_bytes(bytes: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        &format!("/{FILE}"),
        get(move || async move { bytes.clone() }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Announces the whole file, sends half of it and hangs up.
async fn serve_half(bytes: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                bytes.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&bytes[..bytes.len() / 2]).await;
            let _ = sock.shutdown().await;
        }
    });
    addr
}

fn entry(addr: SocketAddr, sha256: &str, size: Option<u64>) -> ModelEntry {
    ModelEntry {
        role: Role::Generate,
        file: FILE.into(),
        url: format!("http://{addr}/{FILE}"),
        size,
        sha256: sha256.into(),
        license: "MIT".into(),
        note: None,
    }
}

fn opts(dest: &Path) -> FetchOptions {
    FetchOptions {
        dest: dest.to_owned(),
        require_checksum: false,
        base_url: None,
        progress: false,
        timeout: Duration::from_secs(10),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn downloads_verifies_and_then_skips() {
    let bytes = real_file();
    let addr = serve_bytes(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let e = entry(addr, &sha(&bytes), Some(bytes.len() as u64));

    let got = fetch::fetch_all(std::slice::from_ref(&e), &opts(dir.path()))
        .await
        .unwrap();
    let path = dir.path().join(FILE);
    assert_eq!(
        got,
        vec![Fetched::Downloaded {
            path: path.clone(),
            sha256: sha(&bytes)
        }]
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(files_in(dir.path()), vec![FILE.to_owned()]);

    // Present and correct: not downloaded again.
    let got = fetch::fetch_all(std::slice::from_ref(&e), &opts(dir.path()))
        .await
        .unwrap();
    assert_eq!(got, vec![Fetched::Present(path.clone())]);

    // Present but corrupt: replaced.
    std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
    let got = fetch::fetch_all(std::slice::from_ref(&e), &opts(dir.path()))
        .await
        .unwrap();
    assert!(matches!(got[0], Fetched::Downloaded { .. }));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn a_checksum_mismatch_leaves_nothing() {
    let bytes = real_file();
    let addr = serve_bytes(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let err = fetch::fetch_all(&[entry(addr, &wrong, None)], &opts(dir.path()))
        .await
        .unwrap_err();
    match err {
        FetchError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha(&bytes));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[tokio::test]
async fn an_interrupted_download_leaves_nothing() {
    let bytes = real_file();
    let addr = serve_half(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let err = fetch::fetch_all(
        &[entry(addr, &sha(&bytes), Some(bytes.len() as u64))],
        &opts(dir.path()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Http { .. } | FetchError::SizeMismatch { .. }
        ),
        "{err:?}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[tokio::test]
async fn unpinned_checksums_warn_or_are_refused() {
    let bytes = real_file();
    let addr = serve_bytes(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();

    let strict = FetchOptions {
        require_checksum: true,
        ..opts(dir.path())
    };
    let err = fetch::fetch_all(&[entry(addr, "", None)], &strict)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Unpinned { .. }), "{err:?}");
    assert!(files_in(dir.path()).is_empty());

    // Without --require-checksum it downloads and reports the checksum it computed.
    let got = fetch::fetch_all(&[entry(addr, "", None)], &opts(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Fetched::Downloaded {
            path: dir.path().join(FILE),
            sha256: sha(&bytes)
        }]
    );
}

#[tokio::test]
async fn a_mirror_replaces_the_manifest_url() {
    let bytes = real_file();
    let addr = serve_bytes(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut e = entry(addr, &sha(&bytes), Some(bytes.len() as u64));
    e.url = "https://example.invalid/nowhere".into();
    let o = FetchOptions {
        base_url: Some(format!("http://{addr}/")),
        ..opts(dir.path())
    };
    let got = fetch::fetch_all(&[e], &o).await.unwrap();
    assert!(matches!(got[0], Fetched::Downloaded { .. }));
}
