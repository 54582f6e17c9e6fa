//! `fetch-model`: downloads the files of a manifest profile into the cache with a progress bar,
//! verifies size and sha256, and writes atomically (a temporary file in the same folder, renamed
//! once verified), so an interrupted or corrupt download never leaves a file behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::models::ModelEntry;

/// Errors of a download.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The file has no pinned checksum and `--require-checksum` was given.
    #[error("{file} has no pinned sha256 in the manifest and --require-checksum is set")]
    Unpinned {
        /// The file.
        file: String,
    },
    /// The HTTP request failed or the transfer broke off.
    #[error("downloading {url}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("downloading {url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The file had another size than the manifest says.
    #[error("{file}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The file.
        file: String,
        /// Manifest size.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The file had another checksum than the manifest says.
    #[error("{file}: sha256 mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// Manifest checksum.
        expected: String,
        /// Computed checksum.
        actual: String,
    },
    /// A local file operation failed.
    #[error("writing {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How to download.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The destination folder.
    pub dest: PathBuf,
    /// Refuse files whose checksum the manifest does not pin.
    pub require_checksum: bool,
    /// Replaces the manifest URL's folder: the file is fetched from `<base_url>/<file>` (a mirror).
    pub base_url: Option<String>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Longest wait for the server to answer (and between chunks).
    pub timeout: Duration,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Already present with the right checksum (or size, when none is pinned).
    Present(PathBuf),
    /// Downloaded and verified; `sha256` is what was computed.
    Downloaded {
        /// Where it is.
        path: PathBuf,
        /// Its sha256.
        sha256: String,
    },
}

/// Downloads every file in `entries` into `opts.dest`, skipping those present and correct.
pub async fn fetch_all(
    entries: &[ModelEntry],
    opts: &FetchOptions,
) -> Result<Vec<Fetched>, FetchError> {
    tokio::fs::create_dir_all(&opts.dest)
        .await
        .map_err(|source| FetchError::Io {
            path: opts.dest.clone(),
            source,
        })?;
    let client = reqwest::Client::builder()
        .connect_timeout(opts.timeout)
        .read_timeout(opts.timeout)
        .build()
        .map_err(|source| FetchError::Http {
            url: String::new(),
            source,
        })?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        out.push(fetch_one(&client, entry, opts).await?);
    }
    Ok(out)
}

async fn fetch_one(
    client: &reqwest::Client,
    entry: &ModelEntry,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let pinned = !entry.sha256.is_empty();
    if opts.require_checksum && !pinned {
        return Err(FetchError::Unpinned {
            file: entry.file.clone(),
        });
    }
    let path = opts.dest.join(&entry.file);
    remove_stale_parts(&opts.dest, &entry.file).await;

    if let Ok(meta) = tokio::fs::metadata(&path).await {
        let size_ok = entry.size.is_none_or(|s| s == meta.len());
        if size_ok && pinned {
            let actual = sha256_file(&path).await?;
            if actual.eq_ignore_ascii_case(&entry.sha256) {
                tracing::info!(file = %entry.file, "present and verified");
                return Ok(Fetched::Present(path));
            }
            tracing::warn!(file = %entry.file, "present with a wrong checksum; downloading again");
        } else if size_ok {
            tracing::warn!(
                file = %entry.file,
                "present; its checksum is not pinned in the manifest, so it was not verified"
            );
            return Ok(Fetched::Present(path));
        }
    }

    let url = match &opts.base_url {
        Some(base) => format!("{}/{}", base.trim_end_matches('/'), entry.file),
        None => entry.url.clone(),
    };
    tracing::info!(file = %entry.file, %url, "downloading");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|source| FetchError::Http {
            url: url.clone(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url,
            status: response.status(),
        });
    }
    let total = entry.size.or(response.content_length());

    let part = opts
        .dest
        .join(format!(".{}.part-{}", entry.file, std::process::id()));
    let guard = PartFile(Some(part.clone()));
    let io = |source| FetchError::Io {
        path: part.clone(),
        source,
    };
    let mut file = tokio::fs::File::create(&part).await.map_err(io)?;
    let bar = progress_bar(opts.progress, total, &entry.file);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| FetchError::Http {
            url: url.clone(),
            source,
        })?;
        received += chunk.len() as u64;
        if let Some(expected) = entry.size.filter(|s| received > *s) {
            return Err(FetchError::SizeMismatch {
                file: entry.file.clone(),
                expected,
                actual: received,
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    file.sync_all().await.map_err(io)?;
    drop(file);

    if let Some(expected) = entry.size.or(total).filter(|s| *s != received) {
        return Err(FetchError::SizeMismatch {
            file: entry.file.clone(),
            expected,
            actual: received,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if pinned && !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(FetchError::ChecksumMismatch {
            file: entry.file.clone(),
            expected: entry.sha256.clone(),
            actual,
        });
    }
    if !pinned {
        tracing::warn!(
            file = %entry.file,
            sha256 = %actual,
            size = received,
            "the manifest pins no checksum for this file: pin this sha256 and size in models.json"
        );
    }
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|source| FetchError::Io {
            path: path.clone(),
            source,
        })?;
    guard.persisted();
    // Make the rename durable.
    if let Ok(dir) = std::fs::File::open(&opts.dest) {
        drop(dir.sync_all());
    }
    tracing::info!(file = %entry.file, bytes = received, checksum_verified = pinned, "downloaded");
    Ok(Fetched::Downloaded {
        path,
        sha256: actual,
    })
}

/// A temporary download, removed when dropped unless persisted (an error, a panic or a
/// cancelled future all leave nothing behind).
struct PartFile(Option<PathBuf>);

impl PartFile {
    fn persisted(mut self) {
        self.0 = None;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            drop(std::fs::remove_file(path));
        }
    }
}

/// Removes temporary files that a killed earlier run left behind.
async fn remove_stale_parts(dir: &Path, file: &str) {
    let prefix = format!(".{file}.part-");
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            drop(tokio::fs::remove_file(e.path()).await);
        }
    }
}

/// The sha256 of a file, in hex.
pub async fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let io = |source| FetchError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::open(&path).map_err(io)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .unwrap_or_else(|e| {
        Err(FetchError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })
    })
}

fn progress_bar(enabled: bool, total: Option<u64>, file: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(file.to_owned());
    bar
}
