//! What the benches share: which model files they run.

use std::path::PathBuf;

use mutr_ai_server::models::{self, Manifest};

/// A positive number from the environment variable `name`, if it is set and parses.
pub fn env_number<T: std::str::FromStr + PartialOrd + Default>(name: &str) -> Option<T> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > T::default())
}

/// llama.cpp threads: `n_threads` as the server reads it, else the server's default.
pub fn threads() -> i32 {
    env_number("n_threads").unwrap_or_else(mutr_ai_server::config::default_threads)
}

/// Layers offloaded to the GPU (`n_gpu_layers`, on a `cuda` build), else none.
pub fn gpu_layers() -> u32 {
    env_number("n_gpu_layers").unwrap_or(0)
}

/// The generative and the embedding model: `MUTR_GEN_MODEL` and `MUTR_EMBED_MODEL` when both are
/// set (a GPU run with the production models), else the tiny profile from `MUTR_MODEL_DIR`,
/// `../shared/models` or the download cache.
pub fn model_files() -> (PathBuf, PathBuf) {
    // Explicit files (a GPU run with the production models) win over the tiny ones.
    if let (Some(g), Some(e)) = (
        std::env::var_os("MUTR_GEN_MODEL"),
        std::env::var_os("MUTR_EMBED_MODEL"),
    ) {
        return (PathBuf::from(g), PathBuf::from(e));
    }
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MUTR_MODEL_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"));
    dirs.push(models::default_cache_dir());
    let r = models::resolve(&Manifest::builtin(), Some("tiny"), None, None, &dirs).expect(
        "tiny models (set MUTR_MODEL_DIR or run `mutr-ai-server fetch-model --profile tiny`)",
    );
    (r.generate, r.embed)
}
