//! What the benches share: which model files they run.

use std::path::PathBuf;

use mutr_ai_server::models::{self, Manifest};

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
