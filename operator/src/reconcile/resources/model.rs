//! The AI server's model files: where they land (the `/models` volume, so a pod restart on the same
//! claim, or a container restart on the same emptyDir, finds them verified and skips the download),
//! how `fetch-model` is called, and the files a `MutrDeployment` pins itself.
//!
//! Pinned files reach the pod without a ConfigMap (no extra object, no extra RBAC): the manifest is
//! a pod annotation, and a downward-API volume turns it into the file that `fetch-model --manifest`
//! and `serve` (`MUTR_MODEL_MANIFEST`) read.

use k8s_openapi::api::core::v1::EnvVar;
use serde_json::{Value, json};

use crate::crd::{ModelFile, ModelRole, ModelSpec, MutrDeploymentSpec};

use super::MODEL_DIR;

/// Size limit of the emptyDir model cache when `cacheSizeLimit` is not set: room for the
/// production profile (a 3B Q4_K_M model and a 0.6 GB embedding model) with a download in flight.
pub const DEFAULT_CACHE_SIZE_LIMIT: &str = "20Gi";
/// Pod annotation holding the pinned manifest.
pub const MANIFEST_ANNOTATION: &str = "mutr.io/model-manifest";
/// Folder of the downward-API volume with the pinned manifest.
pub const MANIFEST_DIR: &str = "/etc/mutr/models";
/// The pinned manifest's file name in [`MANIFEST_DIR`].
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest built into the AI server image (`ai-server/models.json`), read at build time to
/// know which profiles pin every checksum.
const BUILTIN_MANIFEST: &str = include_str!("../../../../ai-server/models.json");

/// The model part of the AI server's pods.
#[derive(Clone, Debug)]
pub struct Models<'a> {
    spec: &'a ModelSpec,
    claim: Option<&'a str>,
}

impl<'a> Models<'a> {
    /// The models of a spec.
    #[must_use]
    pub fn of(spec: &'a MutrDeploymentSpec) -> Self {
        let model = &spec.ai_server.model;
        Self {
            spec: model,
            claim: model.persistent_volume_claim.as_deref(),
        }
    }

    /// Whether `fetch-model` refuses files without a pinned sha256.
    #[must_use]
    pub fn require_checksum(&self) -> bool {
        self.spec.require_checksum.unwrap_or_else(|| {
            !self.spec.files.is_empty() || builtin_profile_pinned(&self.spec.profile)
        })
    }

    /// The `/models` volume: the claim, or a bounded emptyDir.
    #[must_use]
    pub fn volume(&self) -> Value {
        match self.claim {
            Some(claim) => {
                json!({ "name": "models", "persistentVolumeClaim": { "claimName": claim } })
            }
            None => {
                let limit = self
                    .spec
                    .cache_size_limit
                    .as_ref()
                    .map_or(DEFAULT_CACHE_SIZE_LIMIT, |q| q.0.as_str());
                json!({ "name": "models", "emptyDir": { "sizeLimit": limit } })
            }
        }
    }

    /// Arguments of the init container: into the volume, verified, no progress bar in logs.
    #[must_use]
    pub fn fetch_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "fetch-model",
            "--profile",
            &self.spec.profile,
            "--dest",
            MODEL_DIR,
            "--no-progress",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        if self.require_checksum() {
            args.push("--require-checksum".into());
        }
        if !self.spec.files.is_empty() {
            args.push("--manifest".into());
            args.push(format!("{MANIFEST_DIR}/{MANIFEST_FILE}"));
        }
        args
    }

    /// Resources of the init container: the spec's, or enough to stream and hash a download.
    #[must_use]
    pub fn fetch_resources(&self) -> Value {
        match &self.spec.fetch_resources {
            Some(r) => serde_json::to_value(r).expect("resources serialize"),
            None => json!({
                "requests": { "cpu": "100m", "memory": "64Mi" },
                "limits": { "memory": "256Mi" },
            }),
        }
    }

    /// Environment of `serve`: the profile (so it loads what was fetched), and the pinned manifest.
    /// A variable the user set in `spec.aiServer.env` is left to the user.
    #[must_use]
    pub fn serve_env(&self, user: &[EnvVar]) -> Vec<Value> {
        let mut env = vec![json!({ "name": "MUTR_MODEL_PROFILE", "value": self.spec.profile })];
        if !self.spec.files.is_empty() {
            env.push(json!({ "name": "MUTR_MODEL_MANIFEST", "value": format!("{MANIFEST_DIR}/{MANIFEST_FILE}") }));
        }
        env.retain(|e| !user.iter().any(|u| e["name"] == u.name.as_str()));
        env
    }

    /// The manifest of the pinned files, in the AI server's `models.json` format.
    #[must_use]
    pub fn manifest(&self) -> Option<String> {
        if self.spec.files.is_empty() {
            return None;
        }
        let entries: Vec<Value> = self.spec.files.iter().map(entry).collect();
        let manifest = json!({ "profiles": { self.spec.profile.clone(): entries } });
        Some(manifest.to_string())
    }

    /// Pod annotations carrying the pinned manifest.
    #[must_use]
    pub fn annotations(&self) -> Option<Value> {
        self.manifest().map(|m| json!({ MANIFEST_ANNOTATION: m }))
    }

    /// The downward-API volume and its mount that turn the annotation into a file.
    #[must_use]
    pub fn manifest_volume(&self) -> Option<(Value, Value)> {
        self.manifest()?;
        Some((
            json!({
                "name": "model-manifest",
                "downwardAPI": { "items": [{
                    "path": MANIFEST_FILE,
                    "fieldRef": { "fieldPath": format!("metadata.annotations['{MANIFEST_ANNOTATION}']") },
                }] },
            }),
            json!({ "name": "model-manifest", "mountPath": MANIFEST_DIR, "readOnly": true }),
        ))
    }
}

fn entry(file: &ModelFile) -> Value {
    json!({
        "role": match file.role { ModelRole::Generate => "generate", ModelRole::Embed => "embed" },
        "file": file.file,
        "url": file.url,
        "size": file.size,
        "sha256": file.sha256.to_ascii_lowercase(),
        "license": file.license.clone().unwrap_or_default(),
    })
}

/// Every file of the built-in profile has a sha256.
#[must_use]
pub fn builtin_profile_pinned(profile: &str) -> bool {
    let manifest: Value =
        serde_json::from_str(BUILTIN_MANIFEST).expect("ai-server/models.json is JSON");
    manifest["profiles"][profile]
        .as_array()
        .is_some_and(|files| {
            !files.is_empty()
                && files
                    .iter()
                    .all(|f| f["sha256"].as_str().is_some_and(|s| s.len() == 64))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MutrDeployment;

    fn spec(model: Value) -> MutrDeploymentSpec {
        let md: MutrDeployment = serde_json::from_value(json!({
            "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment", "metadata": { "name": "m" },
            "spec": {
                "api": { "image": "api:1" }, "aiServer": { "image": "ai:1", "model": model },
                "database": { "name": "db" }, "redis": { "name": "rd" },
            },
        }))
        .unwrap();
        md.spec
    }

    #[test]
    fn fetch_model_writes_into_the_volume_and_requires_pins_only_when_the_profile_has_them() {
        let s = spec(json!({ "profile": "production" }));
        let m = Models::of(&s);
        let args = m.fetch_args();
        assert_eq!(
            &args[..6],
            [
                "fetch-model",
                "--profile",
                "production",
                "--dest",
                "/models",
                "--no-progress"
            ]
        );
        assert_eq!(
            args.contains(&"--require-checksum".to_owned()),
            builtin_profile_pinned("production")
        );
        let s = spec(json!({ "profile": "tiny", "requireChecksum": true }));
        assert!(
            Models::of(&s)
                .fetch_args()
                .contains(&"--require-checksum".to_owned())
        );
    }

    #[test]
    fn the_built_in_manifest_is_read() {
        // tiny pins its generative model only; an unknown profile pins nothing.
        assert!(!builtin_profile_pinned("no-such-profile"));
        let manifest: Value = serde_json::from_str(BUILTIN_MANIFEST).unwrap();
        assert!(manifest["profiles"]["tiny"].is_array());
    }

    #[test]
    fn pinned_files_become_a_manifest_that_fetch_and_serve_read() {
        let sha = "ab".repeat(32);
        let s = spec(json!({ "profile": "production", "files": [
            { "role": "generate", "file": "g.gguf", "url": "https://example.org/g.gguf", "size": 10, "sha256": sha },
            { "role": "embed", "file": "e.gguf", "url": "https://example.org/e.gguf", "sha256": sha },
        ] }));
        let m = Models::of(&s);
        let args = m.fetch_args();
        assert!(args.contains(&"--require-checksum".to_owned()));
        assert!(args.ends_with(&[
            "--manifest".to_owned(),
            "/etc/mutr/models/manifest.json".to_owned()
        ]));
        let manifest: Value = serde_json::from_str(&m.manifest().unwrap()).unwrap();
        let files = manifest["profiles"]["production"].as_array().unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0]["sha256"], sha);
        assert_eq!(files[1]["license"], "", "the AI server requires the key");
        let (volume, mount) = m.manifest_volume().unwrap();
        assert_eq!(
            volume["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.annotations['mutr.io/model-manifest']"
        );
        assert_eq!(mount["mountPath"], MANIFEST_DIR);
        let env = m.serve_env(&[]);
        assert!(env.iter().any(|e| e["name"] == "MUTR_MODEL_MANIFEST"));
    }

    #[test]
    fn the_cache_is_bounded_and_a_user_profile_variable_wins() {
        let s = spec(json!({ "profile": "tiny" }));
        let m = Models::of(&s);
        assert_eq!(
            m.volume()["emptyDir"]["sizeLimit"],
            DEFAULT_CACHE_SIZE_LIMIT
        );
        assert_eq!(m.fetch_resources()["limits"]["memory"], "256Mi");
        let user = [EnvVar {
            name: "MUTR_MODEL_PROFILE".into(),
            value: Some("small".into()),
            value_from: None,
        }];
        assert!(m.serve_env(&user).is_empty());
    }
}
