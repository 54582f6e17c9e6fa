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

/// llama.cpp threads of each model (`n_threads`, as the server reads it); `None`: the server's
/// own choice with its layout.
pub fn threads() -> Option<i32> {
    env_number("n_threads")
}

/// Layers offloaded to the GPU (`n_gpu_layers`, on a `cuda` build), else none.
pub fn gpu_layers() -> u32 {
    env_number("n_gpu_layers").unwrap_or(0)
}

/// A pair of models to measure.
pub struct ModelPair {
    /// What the tables call it: a profile name, or `custom`.
    pub name: String,
    /// The generative model.
    pub generate: PathBuf,
    /// The embedding model.
    pub embed: PathBuf,
}

/// The models to measure: `MUTR_GEN_MODEL` and `MUTR_EMBED_MODEL` when both are set (say the
/// production models on a GPU); else the `tiny` profile, and the `small` one when it has been
/// fetched (`mutr-ai-server fetch-model --profile small`), from `MUTR_MODEL_DIR`,
/// `../shared/models` or the download cache. `MUTR_BENCH_PROFILES` (comma-separated) picks
/// profiles.
pub fn model_pairs() -> Vec<ModelPair> {
    if let (Some(g), Some(e)) = (
        std::env::var_os("MUTR_GEN_MODEL"),
        std::env::var_os("MUTR_EMBED_MODEL"),
    ) {
        return vec![ModelPair {
            name: "custom".into(),
            generate: PathBuf::from(g),
            embed: PathBuf::from(e),
        }];
    }
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MUTR_MODEL_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"));
    dirs.push(models::default_cache_dir());
    let wanted = std::env::var("MUTR_BENCH_PROFILES").unwrap_or_else(|_| "tiny,small".into());
    let mut pairs = Vec::new();
    for profile in wanted.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match models::resolve(&Manifest::builtin(), Some(profile), None, None, &dirs) {
            Ok(r) => pairs.push(ModelPair {
                name: profile.to_owned(),
                generate: r.generate,
                embed: r.embed,
            }),
            Err(e) if profile == "tiny" => panic!(
                "{e} (set MUTR_MODEL_DIR or run `mutr-ai-server fetch-model --profile tiny`)"
            ),
            Err(_) => println!(
                "\n(profile {profile}: not fetched, skipped; `mutr-ai-server fetch-model --profile \
                 {profile}` fetches it)"
            ),
        }
    }
    pairs
}
