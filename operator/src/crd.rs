//! The `MutrDeployment` custom resource (`mutr.io/v1alpha1`): spec, status and the CRD generated from them.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    EnvVar, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// API group of the custom resource.
pub const GROUP: &str = "mutr.io";
/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "mutr-operator";
/// Longest accepted `metadata.name`: it prefixes the names of Deployments, Services and Jobs
/// (Job names become pod labels, limited to 63 characters).
pub const MAX_NAME_LEN: usize = 40;

/// A MUTR installation shipped blue/green: per colour an API Deployment, an AI server Deployment and
/// the AI Service its API talks to, plus the stable `mutr-api` and `mutr-api-preview` Services.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mutr.io",
    version = "v1alpha1",
    kind = "MutrDeployment",
    namespaced,
    shortname = "mutr",
    status = "MutrDeploymentStatus",
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeColor", description = "colour the stable Service selects"),
    printcolumn(name = "Preview", type_ = "string", json_path = ".status.previewColor", description = "the other colour"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "where the rollout stands"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name must be at most 40 characters: it prefixes the names of the Deployments, Services and Jobs")
)]
#[serde(rename_all = "camelCase")]
pub struct MutrDeploymentSpec {
    /// The HTTP API (`mutr-api serve`).
    pub api: ApiSpec,
    /// The gRPC AI server (`mutr-ai-server serve`).
    pub ai_server: AiServerSpec,
    /// Secret holding the PostgreSQL URL (given to the API as `DATABASE_URL`).
    pub database: SecretKeyRef,
    /// Secret holding the Redis URL (given to the API, and to the AI server for its cache, as `REDIS_URL`).
    pub redis: SecretKeyRef,
    /// The colour that should serve. With `strategy.autoPromote` off, setting it to the preview colour
    /// requests a promotion (what CI and `kubectl mutr promote` do). Unset means blue at first creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_color: Option<Color>,
    /// A revision whose rollout is abandoned (set by `kubectl mutr abort`): it is not promoted, its
    /// preview is scaled down, and a switchover to it that has not finished is rolled back.
    /// Changing the spec (a new revision) or clearing this field rolls out again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub aborted_revision: Option<String>,
    /// How rollouts and switchovers proceed.
    #[serde(default)]
    pub strategy: Strategy,
    /// Names of the stable Services.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Secrets (`kubernetes.io/dockerconfigjson`) for pulling the images, given to every pod the
    /// operator creates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// PodDisruptionBudgets for the API and AI server of each colour.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// A NetworkPolicy per colour that admits to the AI server's gRPC port only the API pods of the
    /// same colour (its metrics port stays open to scrapers).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Prometheus Operator `ServiceMonitor`s for the API and the AI server.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// A ConfigMap key holding the CA certificate(s) (PEM) of a Redis reached over TLS
    /// (`rediss://`), e.g. the server CA of Memorystore with in-transit encryption. Mounted into
    /// every pod that talks to Redis, which then trusts these CAs (`SSL_CERT_FILE`) instead of the
    /// system ones for Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_ca_config_map: Option<ConfigMapKeyRef>,
}

/// A key in a ConfigMap of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the ConfigMap.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// PodDisruptionBudgets of the serving pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create them.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Pods of one Deployment that a voluntary disruption (node drain, upgrade) may take at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: 1,
        }
    }
}

/// The AI server's NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create it (enforced where the CNI supports NetworkPolicy: GKE Dataplane V2, Calico, kindnet).
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Monitoring objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create `monitoring.coreos.com/v1` ServiceMonitors for the API (`/metrics` on 8080) and the
    /// AI server (`/metrics` on 9090); needs the Prometheus Operator's CRDs.
    #[serde(default)]
    pub service_monitor: bool,
    /// Scrape interval (Prometheus duration, e.g. `30s`); the Prometheus default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ))]
    pub interval: Option<String>,
    /// Extra labels on the ServiceMonitors (what your Prometheus' `serviceMonitorSelector` matches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A key in a Secret of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret whose value is the URL.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "url".into()
}

/// The API Deployment of each colour.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// Container image of `mutr-api` (also used by the migrate, activate and recover Jobs).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Replicas of the active colour.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables. The variables the operator sets (credentials, colour, addresses)
    /// cannot be overridden here; put any other secret in a `valueFrom.secretKeyRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(e, !(e.name in ['DATABASE_URL', 'REDIS_URL', 'MUTR_COLOR', 'MUTR_POD_NAME', 'MUTR_AI_URL', 'MUTR_DRAIN_TIMEOUT', 'MUTR_HTTP_ADDR']))").message("DATABASE_URL, REDIS_URL, MUTR_COLOR, MUTR_POD_NAME, MUTR_AI_URL, MUTR_DRAIN_TIMEOUT and MUTR_HTTP_ADDR are set by the operator"))]
    pub env: Vec<EnvVar>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Topology spread of the pods; empty means across zones and nodes (`ScheduleAnyway`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// A HorizontalPodAutoscaler per colour on CPU. While it is set the autoscaler owns the serving
    /// colour's replica count and `replicas` is not used (the operator only sets 0 on a colour it
    /// scales down, and at least `minReplicas` before traffic moves to a colour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ApiAutoscaling>,
}

/// The API's HorizontalPodAutoscaler.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct ApiAutoscaling {
    /// Fewest replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of the requests) the autoscaler aims at.
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

/// The AI server's KEDA `ScaledObject`, driven by the analysis queue depth.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct AiAutoscaling {
    /// Fewest replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Prometheus that scrapes the API's `/metrics` (e.g. `http://prometheus-operated.monitoring:9090`).
    #[schemars(length(min = 1))]
    pub prometheus_address: String,
    /// PromQL query of the queue depth; default `max(mutr_analysis_queue_depth{namespace="<ns>"})`
    /// (every API pod reports the same shared queue, so `max`, not `sum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Nodes waiting for analysis per AI server replica: replicas = ceil(depth / this).
    #[serde(default = "default_queue_per_replica")]
    #[schemars(range(min = 1))]
    pub nodes_per_replica: i32,
}

/// The AI server Deployment of each colour.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AiServerSpec {
    /// Container image of `mutr-ai-server`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Replicas of the active colour.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Sequences decoded together (`MUTR_PARALLEL`).
    #[serde(default = "default_parallel")]
    #[schemars(range(min = 1, max = 256))]
    pub parallel: i32,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables (for instance the llama.cpp settings `n_ctx`, `n_threads`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(e, !(e.name in ['AI_SERVER_PORT', 'MUTR_METRICS_ADDR', 'MUTR_MODEL_DIR', 'MUTR_PARALLEL', 'REDIS_URL']))").message("AI_SERVER_PORT, MUTR_METRICS_ADDR, MUTR_MODEL_DIR, MUTR_PARALLEL and REDIS_URL are set by the operator"))]
    pub env: Vec<EnvVar>,
    /// Where the model files come from.
    #[serde(default)]
    pub model: ModelSpec,
    /// GPU placement; absent means CPU only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSpec>,
    /// Give the AI server `REDIS_URL` (from `spec.redis`) for its result cache.
    #[serde(default)]
    pub result_cache: bool,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Topology spread of the pods; empty means across zones and nodes (`ScheduleAnyway`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// A KEDA `ScaledObject` per colour on the analysis queue depth. While it is set KEDA owns the
    /// active colour's replica count and `replicas` is not used; the other colour's is paused at the
    /// count the rollout needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AiAutoscaling>,
}

/// The model files of the AI server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.persistentVolumeClaim) || !has(self.cacheSizeLimit)").message("cacheSizeLimit sizes the emptyDir model cache; it does not apply to a persistentVolumeClaim"))]
pub struct ModelSpec {
    /// Profile of the checked-in model manifest (URLs, sizes and sha256 checksums) that the
    /// `fetch-model` init container downloads and verifies.
    #[serde(default = "default_profile")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub profile: String,
    /// Run `mutr-ai-server fetch-model --profile <profile>` as an init container. Turn it off only
    /// when the claim below already holds verified models.
    #[serde(default = "yes")]
    pub fetch: bool,
    /// A PersistentVolumeClaim holding the model cache, shared across restarts; absent means an
    /// emptyDir per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
    /// Size limit of the emptyDir model cache; 20Gi when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size_limit: Option<Quantity>,
    /// Pass `--require-checksum`: refuse any file whose sha256 is not pinned. Default: on when every
    /// file of the profile is pinned (by `files` below, or in the built-in manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_checksum: Option<bool>,
    /// The profile's files, pinned here (URL, size, sha256) instead of the manifest built into the
    /// image: `fetch-model` and `serve` then read this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ModelFile>,
    /// Resources of the `fetch-model` init container; a small default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_resources: Option<ResourceRequirements>,
}

/// One model file, pinned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelFile {
    /// What the AI server uses it for.
    pub role: ModelRole,
    /// File name in the model folder.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$"))]
    pub file: String,
    /// Where to download it (https).
    #[schemars(regex(pattern = r"^https://"))]
    pub url: String,
    /// Size in bytes, as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub size: Option<i64>,
    /// SHA-256 as published (64 hex digits).
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: String,
    /// Its licence, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

/// The role of a model file.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelRole {
    /// The generative model (topics, emotions).
    Generate,
    /// The sentence-embedding model (mutation scores).
    Embed,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            profile: default_profile(),
            fetch: true,
            persistent_volume_claim: None,
            cache_size_limit: None,
            require_checksum: None,
            files: Vec::new(),
            fetch_resources: None,
        }
    }
}

/// GPU placement of the AI server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// GPUs per AI server pod.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub count: i32,
    /// Extended resource name of the GPU.
    #[serde(default = "default_gpu_resource")]
    pub resource_name: String,
    /// Node selector for GPU nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for GPU node taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// How rollouts and switchovers proceed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scaleDownDelaySeconds <= 86400").message("scaleDownDelaySeconds is at most one day"))]
pub struct Strategy {
    /// Promote the preview as soon as it is ready, without waiting for `spec.activeColor`.
    #[serde(default)]
    pub auto_promote: bool,
    /// How long the old colour keeps running after the switchover (the window in which an abort rolls
    /// back without starting pods).
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i32,
    /// How long a terminating API pod waits for analyses in flight (`MUTR_DRAIN_TIMEOUT`).
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_timeout_seconds: i32,
    /// Seconds added to the drain timeout for the pods' `terminationGracePeriodSeconds`, so that the
    /// kubelet never kills a pod that is still draining.
    #[serde(default = "default_grace_margin")]
    #[schemars(range(min = 5, max = 600))]
    pub termination_grace_margin_seconds: i32,
    /// Replicas of each preview Deployment before promotion; absent means the full counts. The
    /// target is always scaled to the full counts before traffic moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub preview_replicas: Option<i32>,
    /// Run `mutr-api migrate` as a Job before a new revision's pods start.
    #[serde(default = "yes")]
    pub migrations: bool,
    /// Retries of each Job (`backoffLimit`).
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 0, max = 10))]
    pub job_backoff_limit: i32,
    /// Deadline of each Job (`activeDeadlineSeconds`).
    #[serde(default = "default_job_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub job_deadline_seconds: i64,
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            auto_promote: false,
            scale_down_delay_seconds: default_scale_down_delay(),
            drain_timeout_seconds: default_drain_timeout(),
            termination_grace_margin_seconds: default_grace_margin(),
            preview_replicas: None,
            migrations: true,
            job_backoff_limit: default_backoff(),
            job_deadline_seconds: default_job_deadline(),
        }
    }
}

/// Names of the stable Services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service selecting the active colour; the preview Service is `<name>-preview`.
    #[serde(default = "default_service_name")]
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]{0,44}[a-z0-9])?$"))]
    pub name: String,
    /// Session affinity of both Services. `ClientIP` keeps a client on one API replica, which SockJS
    /// xhr sessions need (a session lives in one replica); Ingresses that proxy to pods directly
    /// need their own cookie affinity (the chart sets it for GKE and ingress-nginx).
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// How long a `ClientIP` affinity lasts without traffic.
    #[serde(default = "default_affinity_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub session_affinity_timeout_seconds: i32,
    /// Annotations of both Services, e.g. GKE's `cloud.google.com/backend-config` and
    /// `cloud.google.com/neg` for an Ingress in front of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            name: default_service_name(),
            session_affinity: SessionAffinity::default(),
            session_affinity_timeout_seconds: default_affinity_timeout(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Session affinity of the API Services.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SessionAffinity {
    /// Requests from one client IP go to one replica.
    #[default]
    ClientIP,
    /// Every request is balanced on its own.
    None,
}

impl SessionAffinity {
    /// The value of a Service's `spec.sessionAffinity`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAffinity::ClientIP => "ClientIP",
            SessionAffinity::None => "None",
        }
    }
}

fn one() -> i32 {
    1
}
fn yes() -> bool {
    true
}
fn default_parallel() -> i32 {
    4
}
fn default_profile() -> String {
    "production".into()
}
fn default_gpu_resource() -> String {
    "nvidia.com/gpu".into()
}
fn default_scale_down_delay() -> i32 {
    30
}
fn default_drain_timeout() -> i32 {
    30
}
fn default_grace_margin() -> i32 {
    15
}
fn default_backoff() -> i32 {
    3
}
fn default_job_deadline() -> i64 {
    900
}
fn default_service_name() -> String {
    "mutr-api".into()
}
fn default_affinity_timeout() -> i32 {
    10_800
}
fn default_cpu_target() -> i32 {
    70
}
fn default_queue_per_replica() -> i32 {
    20
}

/// One of the two colours.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// The colour used first.
    Blue,
    /// The other one.
    Green,
}

impl Color {
    /// Both colours.
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    /// The other colour.
    #[must_use]
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// The lowercase name used in object names, labels and arguments.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Color {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            other => Err(format!("unknown colour {other:?} (expected blue or green)")),
        }
    }
}

/// Where the rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    /// Nothing done yet.
    #[default]
    Pending,
    /// The migration Job of the new revision is running.
    Migrating,
    /// The preview colour's pods are starting.
    PreviewStarting,
    /// The preview is ready and waits for a promotion.
    AwaitingPromotion,
    /// A switchover is under way (see `status.switchover.step`).
    Switching,
    /// The active colour runs the desired revision and nothing is in flight.
    Healthy,
    /// The rollout stopped on an error (see the `Degraded` condition).
    Failed,
    /// The rollout of the desired revision was aborted.
    Aborted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Observed state of a `MutrDeployment`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutrDeploymentStatus {
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the rollout stands.
    #[serde(default)]
    pub phase: Phase,
    /// Revision (hash of the pod-shaping spec) the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Colour the stable Service selects and the database records as active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_color: Option<Color>,
    /// The other colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_color: Option<Color>,
    /// Per-colour revision and readiness.
    #[serde(default)]
    pub colors: ColorsStatus,
    /// Last revision whose migration Job succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_revision: Option<String>,
    /// Number of switchovers started; numbers the activate and recover Jobs.
    #[serde(default)]
    pub switchover_count: i64,
    /// The switchover in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverProgress>,
    /// The last switchover that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switchover: Option<SwitchoverRecord>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Readiness of both colours.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ColorsStatus {
    /// The blue colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue: Option<ColorStatus>,
    /// The green colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<ColorStatus>,
}

impl ColorsStatus {
    /// The status of one colour.
    #[must_use]
    pub fn get(&self, color: Color) -> Option<&ColorStatus> {
        match color {
            Color::Blue => self.blue.as_ref(),
            Color::Green => self.green.as_ref(),
        }
    }

    /// Sets the status of one colour.
    pub fn set(&mut self, color: Color, value: Option<ColorStatus>) {
        match color {
            Color::Blue => self.blue = value,
            Color::Green => self.green = value,
        }
    }
}

/// Revision and readiness of one colour.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColorStatus {
    /// Revision its Deployments run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Desired API replicas.
    pub api_replicas: i32,
    /// Ready API replicas.
    pub api_ready_replicas: i32,
    /// Desired AI server replicas.
    pub ai_replicas: i32,
    /// Ready (gRPC `SERVING`) AI server replicas.
    pub ai_ready_replicas: i32,
    /// Both Deployments available at their desired counts, at the current generation.
    pub ready: bool,
}

/// A switchover in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverProgress {
    /// Sequence number (names the activate and recover Jobs).
    pub id: i64,
    /// Colour that served before; absent on first creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Color>,
    /// Colour that takes over.
    pub to: Color,
    /// Revision of the target colour.
    pub revision: String,
    /// Step in flight.
    pub step: SwitchoverStep,
    /// This switchover rolls back an aborted one.
    #[serde(default)]
    pub rollback: bool,
    /// When it started.
    pub started_at: Time,
    /// When the old colour scales down (set once the target is activated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_at: Option<Time>,
}

/// Steps of a switchover, in order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SwitchoverStep {
    /// The target scales to its full counts; the stable Service flips once it is available.
    Switching,
    /// The stable Service selects the target; the activate Job records it as the active colour.
    Activating,
    /// Waiting `scaleDownDelaySeconds` before scaling the old colour down (abort rolls back here).
    ScaleDownPending,
    /// The old colour is scaled to zero; waiting for its pods to drain and go.
    Draining,
    /// The recover Job returns what the old colour left claimed to PENDING.
    Recovering,
}

impl fmt::Display for SwitchoverStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A finished switchover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverRecord {
    /// Colour that served before; absent on first creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Color>,
    /// Colour that serves now.
    pub to: Color,
    /// Revision that serves now.
    pub revision: String,
    /// It rolled back an aborted switchover.
    #[serde(default)]
    pub rollback: bool,
    /// When it started.
    pub started_at: Time,
    /// When it finished.
    pub finished_at: Time,
    /// Summary printed by `mutr-api recover --from-color <from>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySummary>,
}

/// The JSON line `mutr-api recover` prints and writes to its termination message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySummary {
    /// Colour whose claims were recovered.
    pub from_color: String,
    /// Nodes returned from PROCESSING to PENDING.
    pub returned_to_pending: i64,
    /// Nodes of that colour still PROCESSING after the recovery (should be 0).
    #[serde(default)]
    pub still_processing: i64,
}

/// The part of the spec that shapes the pods: a change to it is a new revision, rolled out blue/green.
/// Replica counts and the strategy's timing are left out: they apply in place.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RevisionInput<'a> {
    api: ApiRevision<'a>,
    ai_server: AiRevision<'a>,
    database: &'a SecretKeyRef,
    redis: &'a SecretKeyRef,
    drain_timeout_seconds: i32,
    termination_grace_margin_seconds: i32,
    // Fields added after v1alpha1 was first released are left out while unset, so that the
    // revision of an existing resource, and so its pods, stay the same across an operator upgrade.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    image_pull_secrets: &'a [LocalObjectReference],
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_ca_config_map: &'a Option<ConfigMapKeyRef>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiRevision<'a> {
    image: &'a str,
    image_pull_policy: &'a Option<String>,
    resources: &'a Option<ResourceRequirements>,
    env: &'a [EnvVar],
    #[serde(skip_serializing_if = "Option::is_none")]
    priority_class_name: &'a Option<String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    topology_spread_constraints: &'a [TopologySpreadConstraint],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AiRevision<'a> {
    image: &'a str,
    image_pull_policy: &'a Option<String>,
    parallel: i32,
    resources: &'a Option<ResourceRequirements>,
    env: &'a [EnvVar],
    model: &'a ModelSpec,
    gpu: &'a Option<GpuSpec>,
    result_cache: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority_class_name: &'a Option<String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    topology_spread_constraints: &'a [TopologySpreadConstraint],
}

impl MutrDeploymentSpec {
    /// The revision of this spec: the first 10 hex digits of the SHA-256 of its pod-shaping part.
    #[must_use]
    pub fn revision(&self) -> String {
        let input = RevisionInput {
            api: ApiRevision {
                image: &self.api.image,
                image_pull_policy: &self.api.image_pull_policy,
                resources: &self.api.resources,
                env: &self.api.env,
                priority_class_name: &self.api.priority_class_name,
                topology_spread_constraints: &self.api.topology_spread_constraints,
            },
            ai_server: AiRevision {
                image: &self.ai_server.image,
                image_pull_policy: &self.ai_server.image_pull_policy,
                parallel: self.ai_server.parallel,
                resources: &self.ai_server.resources,
                env: &self.ai_server.env,
                model: &self.ai_server.model,
                gpu: &self.ai_server.gpu,
                result_cache: self.ai_server.result_cache,
                priority_class_name: &self.ai_server.priority_class_name,
                topology_spread_constraints: &self.ai_server.topology_spread_constraints,
            },
            database: &self.database,
            redis: &self.redis,
            drain_timeout_seconds: self.strategy.drain_timeout_seconds,
            termination_grace_margin_seconds: self.strategy.termination_grace_margin_seconds,
            image_pull_secrets: &self.image_pull_secrets,
            redis_ca_config_map: &self.redis_ca_config_map,
        };
        let bytes = serde_json::to_vec(&input)
            .expect("the revision input is plain data and always serializes");
        let digest = Sha256::digest(bytes);
        hex::encode(&digest[..5])
    }

    /// Replicas of a serving colour: `replicas`, or the autoscaler's minimum when one is set (it
    /// owns the count above that).
    #[must_use]
    pub fn serving_replicas(&self) -> (i32, i32) {
        (
            self.api
                .autoscaling
                .as_ref()
                .map_or(self.api.replicas, |a| a.min_replicas),
            self.ai_server
                .autoscaling
                .as_ref()
                .map_or(self.ai_server.replicas, |a| a.min_replicas),
        )
    }

    /// Replicas of each preview Deployment before promotion.
    #[must_use]
    pub fn preview_replicas(&self) -> (i32, i32) {
        let (api, ai) = self.serving_replicas();
        match self.strategy.preview_replicas {
            Some(n) => (n.min(api), n.min(ai)),
            None => (api, ai),
        }
    }
}

/// The CRD as YAML, exactly what `crds/mutrdeployments.mutr.io.yaml` holds.
///
/// # Errors
/// Fails only if the generated CRD cannot be serialized, which would be a bug.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&MutrDeployment::crd())?;
    Ok(format!(
        "# Generated by `mutr-operator crd` (make crds) from operator/src/crd.rs. Do not edit.\n{yaml}"
    ))
}
