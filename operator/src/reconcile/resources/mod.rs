//! Desired objects from a `MutrDeployment`: per-colour Deployments and AI Services, the stable
//! Services, the migrate/activate/recover Jobs, and beside them the disruption budgets and network
//! policy (`policy.rs`), the autoscalers (`scaling.rs`), the ServiceMonitors (`monitoring.rs`) and
//! the model files (`model.rs`). Pure functions; the adapter applies what they build.

pub mod model;
pub mod monitoring;
pub mod policy;
pub mod scaling;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Service, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::crd::{Color, MutrDeployment, MutrDeploymentSpec, SessionAffinity};
use crate::reconcile::plan::JobRequest;

/// Port of the API's HTTP server (HTTP, WebSocket, `/metrics`, `/readyz`, `/healthz`).
pub const API_PORT: i32 = 8080;
/// Port the stable Services expose.
pub const SERVICE_PORT: i32 = 80;
/// gRPC port of the AI server.
pub const AI_GRPC_PORT: i32 = 50051;
/// Metrics (and plain HTTP `/readyz`) port of the AI server.
pub const AI_METRICS_PORT: i32 = 9090;
/// Where the AI server finds its models.
pub const MODEL_DIR: &str = "/models";
/// User and group the containers run as (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = 65532;
/// Seconds a terminating pod keeps serving so that endpoint removal reaches every proxy first.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Seconds a finished Job stays for inspection (the status records its outcome before then).
pub const JOB_TTL_SECONDS: i64 = 86_400;
/// Where the Redis CA bundle (`spec.redisCaConfigMap`) is mounted.
pub const REDIS_CA_DIR: &str = "/etc/mutr/redis-ca";
/// Size limit of every `/tmp` emptyDir (the root filesystem is read-only; nothing large goes there).
pub const TMP_SIZE_LIMIT: &str = "256Mi";

/// Label keys.
pub mod labels {
    /// `mutr`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The `MutrDeployment`'s name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `api`, `ai-server`, `migrate`, `activate`, `recover`.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `mutr-operator`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `blue` or `green`; only serving pods carry it.
    pub const COLOR: &str = "mutr.io/color";
    /// Revision of the spec a Deployment and its pods run.
    pub const REVISION: &str = "mutr.io/revision";
    /// Set by the Deployment controller on each ReplicaSet's pods.
    pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
}

/// Names of everything one `MutrDeployment` owns.
#[derive(Clone, Debug)]
pub struct Names {
    instance: String,
    service: String,
}

impl Names {
    /// Names for the resource called `instance` whose stable Service is `service`.
    #[must_use]
    pub fn new(instance: &str, service: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            service: service.to_owned(),
        }
    }

    /// Names for a resource.
    #[must_use]
    pub fn of(md: &MutrDeployment) -> Self {
        Self::new(&md.name_any(), &md.spec.service.name)
    }

    /// The API Deployment of a colour.
    #[must_use]
    pub fn api(&self, color: Color) -> String {
        format!("{}-api-{color}", self.instance)
    }

    /// The AI Deployment and Service of a colour.
    #[must_use]
    pub fn ai(&self, color: Color) -> String {
        format!("{}-ai-{color}", self.instance)
    }

    /// The Service of every AI server pod's metrics port (both colours).
    #[must_use]
    pub fn ai_metrics(&self) -> String {
        format!("{}-ai-metrics", self.instance)
    }

    /// The instance (the `MutrDeployment`'s name).
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The stable Service.
    #[must_use]
    pub fn stable(&self) -> String {
        self.service.clone()
    }

    /// The preview Service.
    #[must_use]
    pub fn preview(&self) -> String {
        format!("{}-preview", self.service)
    }

    /// The Job for a request.
    #[must_use]
    pub fn job(&self, job: &JobRequest) -> String {
        match job {
            JobRequest::Migrate { revision } => format!("{}-migrate-{revision}", self.instance),
            JobRequest::Activate { id, color } => {
                format!("{}-activate-{id}-{color}", self.instance)
            }
            JobRequest::Recover { id, from } => format!("{}-recover-{id}-{from}", self.instance),
        }
    }

    /// Label selector of the serving pods of a colour (API and AI, not Jobs).
    #[must_use]
    pub fn color_selector(&self, color: Color) -> String {
        format!(
            "{}={},{}={color}",
            labels::INSTANCE,
            self.instance,
            labels::COLOR
        )
    }
}

pub(crate) fn base_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), "mutr".to_owned()),
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (labels::COMPONENT.to_owned(), component.to_owned()),
        (labels::MANAGED_BY.to_owned(), "mutr-operator".to_owned()),
    ])
}

pub(crate) fn selector(instance: &str, component: &str, color: Color) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (labels::COMPONENT.to_owned(), component.to_owned()),
        (labels::COLOR.to_owned(), color.as_str().to_owned()),
    ])
}

pub(crate) fn owner(md: &MutrDeployment) -> OwnerReference {
    md.controller_owner_ref(&())
        .expect("a MutrDeployment read from the API server has a name and uid")
}

pub(crate) fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("manifests built here match the Kubernetes schema")
}

pub(crate) fn pod_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

pub(crate) fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

pub(crate) fn secret_env(name: &str, spec: &crate::crd::SecretKeyRef) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": spec.name, "key": spec.key } } })
}

pub(crate) fn metadata(
    md: &MutrDeployment,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Value {
    json!({
        "name": name,
        "namespace": md.namespace(),
        "labels": labels,
        "ownerReferences": [owner(md)],
    })
}

/// The Redis CA: (volume, mount, env) for a pod that talks to Redis, when a CA is configured.
pub(crate) fn redis_ca(spec: &MutrDeploymentSpec) -> Option<(Value, Value, Value)> {
    let ca = spec.redis_ca_config_map.as_ref()?;
    Some((
        json!({ "name": "redis-ca", "configMap": { "name": ca.name, "items": [{ "key": ca.key, "path": "ca.crt" }] } }),
        json!({ "name": "redis-ca", "mountPath": REDIS_CA_DIR, "readOnly": true }),
        json!({ "name": "SSL_CERT_FILE", "value": format!("{REDIS_CA_DIR}/ca.crt") }),
    ))
}

/// Adds the Redis CA to a pod spec's first container, volumes and environment.
pub(crate) fn with_redis_ca(spec: &MutrDeploymentSpec, pod: &mut Value) {
    let Some((volume, mount, env)) = redis_ca(spec) else {
        return;
    };
    if let Some(volumes) = pod["volumes"].as_array_mut() {
        volumes.push(volume);
    }
    let container = &mut pod["containers"][0];
    if let Some(mounts) = container["volumeMounts"].as_array_mut() {
        mounts.push(mount);
    }
    if let Some(vars) = container["env"].as_array_mut() {
        vars.push(env);
    }
}

pub(crate) fn tmp_volume() -> Value {
    json!({ "name": "tmp", "emptyDir": { "sizeLimit": TMP_SIZE_LIMIT } })
}

/// What every pod of a component shares: pull Secrets, priority, spread over zones and nodes.
pub(crate) fn placement(
    spec: &MutrDeploymentSpec,
    priority_class_name: Option<&String>,
    spread: &[TopologySpreadConstraint],
    selector: &BTreeMap<String, String>,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if !spec.image_pull_secrets.is_empty() {
        out.insert(
            "imagePullSecrets".into(),
            serde_json::to_value(&spec.image_pull_secrets).expect("references serialize"),
        );
    }
    if let Some(name) = priority_class_name {
        out.insert("priorityClassName".into(), json!(name));
    }
    let spread = if spread.is_empty() {
        // Zones first, then nodes; ScheduleAnyway so that a small or one-zone cluster still
        // schedules. matchLabelKeys counts only the pods of the same ReplicaSet, so a rolling
        // update's new pods spread among themselves.
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
            .into_iter()
            .map(|key| {
                json!({
                    "maxSkew": 1,
                    "topologyKey": key,
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": { "matchLabels": selector },
                    "matchLabelKeys": [labels::POD_TEMPLATE_HASH],
                })
            })
            .collect()
    } else {
        serde_json::to_value(spread).expect("constraints serialize")
    };
    out.insert("topologySpreadConstraints".into(), spread);
    out
}

/// Adds `extra` to the object at `target` (a pod spec).
pub(crate) fn extend(target: &mut Value, extra: serde_json::Map<String, Value>) {
    if let Some(obj) = target.as_object_mut() {
        obj.extend(extra);
    }
}

pub(crate) fn grace_seconds(spec: &MutrDeploymentSpec) -> i64 {
    i64::from(spec.strategy.drain_timeout_seconds)
        + i64::from(spec.strategy.termination_grace_margin_seconds)
}

/// The API Deployment of a colour at the spec's revision. `replicas` is `None` while an autoscaler
/// owns the count (the field is then left out of the apply, see `desired.rs`).
#[must_use]
pub fn api_deployment(md: &MutrDeployment, color: Color, replicas: Option<i32>) -> Deployment {
    let spec = &md.spec;
    let names = Names::of(md);
    let instance = md.name_any();
    let revision = spec.revision();
    let mut labels = base_labels(&instance, "api");
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    labels.insert(labels::REVISION.to_owned(), revision);
    let mut env = vec![
        secret_env("DATABASE_URL", &spec.database),
        secret_env("REDIS_URL", &spec.redis),
        json!({ "name": "MUTR_COLOR", "value": color.as_str() }),
        json!({ "name": "MUTR_POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        json!({ "name": "MUTR_AI_URL", "value": format!("http://{}:{AI_GRPC_PORT}", names.ai(color)) }),
        json!({ "name": "MUTR_DRAIN_TIMEOUT", "value": format!("{}s", spec.strategy.drain_timeout_seconds) }),
        json!({ "name": "MUTR_HTTP_ADDR", "value": format!("0.0.0.0:{API_PORT}") }),
    ];
    env.extend(
        spec.api
            .env
            .iter()
            .map(|e| serde_json::to_value(e).expect("EnvVar serializes")),
    );
    let selector = selector(&instance, "api", color);
    let mut pod = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": grace_seconds(spec),
        "securityContext": pod_security(),
        "containers": [{
            "name": "api",
            "image": spec.api.image,
            "imagePullPolicy": spec.api.image_pull_policy,
            "args": ["serve"],
            "env": env,
            "ports": [{ "name": "http", "containerPort": API_PORT, "protocol": "TCP" }],
            "readinessProbe": {
                "httpGet": { "path": "/readyz", "port": "http" },
                "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 2,
            },
            "livenessProbe": {
                "httpGet": { "path": "/healthz", "port": "http" },
                "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2,
            },
            "startupProbe": {
                "httpGet": { "path": "/healthz", "port": "http" },
                "periodSeconds": 2, "failureThreshold": 60,
            },
            "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_SLEEP_SECONDS } } },
            "resources": spec.api.resources,
            "securityContext": container_security(),
            "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
        }],
        "volumes": [tmp_volume()],
    });
    extend(
        &mut pod,
        placement(
            spec,
            spec.api.priority_class_name.as_ref(),
            &spec.api.topology_spread_constraints,
            &selector,
        ),
    );
    with_redis_ca(spec, &mut pod);
    let mut deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, &names.api(color), &labels),
        "spec": {
            "selector": { "matchLabels": selector },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": { "metadata": { "labels": labels }, "spec": pod },
        },
    });
    if let Some(n) = replicas {
        deployment["spec"]["replicas"] = json!(n);
    }
    typed(deployment)
}

/// The AI server Deployment of a colour at the spec's revision. `replicas` as for
/// [`api_deployment`].
#[must_use]
pub fn ai_deployment(md: &MutrDeployment, color: Color, replicas: Option<i32>) -> Deployment {
    let spec = &md.spec;
    let ai = &spec.ai_server;
    let names = Names::of(md);
    let instance = md.name_any();
    let mut labels = base_labels(&instance, "ai-server");
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    labels.insert(labels::REVISION.to_owned(), spec.revision());
    let models = model::Models::of(spec);
    let mut env = vec![
        json!({ "name": "AI_SERVER_PORT", "value": AI_GRPC_PORT.to_string() }),
        json!({ "name": "MUTR_METRICS_ADDR", "value": format!("0.0.0.0:{AI_METRICS_PORT}") }),
        json!({ "name": "MUTR_MODEL_DIR", "value": MODEL_DIR }),
        json!({ "name": "MUTR_PARALLEL", "value": ai.parallel.to_string() }),
    ];
    env.extend(models.serve_env(&ai.env));
    if ai.result_cache {
        env.push(secret_env("REDIS_URL", &spec.redis));
    }
    env.extend(
        ai.env
            .iter()
            .map(|e| serde_json::to_value(e).expect("EnvVar serializes")),
    );
    let mut resources = serde_json::to_value(&ai.resources).expect("resources serialize");
    if let Some(gpu) = &ai.gpu {
        if resources.is_null() {
            resources = json!({});
        }
        resources["limits"][gpu.resource_name.as_str()] = json!(gpu.count.to_string());
    }
    let mut mounts = vec![
        json!({ "name": "models", "mountPath": MODEL_DIR }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    let mut volumes = vec![models.volume(), tmp_volume()];
    if let Some((volume, mount)) = models.manifest_volume() {
        volumes.push(volume);
        mounts.push(mount);
    }
    let init_containers: Vec<Value> = if ai.model.fetch {
        vec![json!({
            "name": "fetch-model",
            "image": ai.image,
            "imagePullPolicy": ai.image_pull_policy,
            "args": models.fetch_args(),
            "resources": models.fetch_resources(),
            "securityContext": container_security(),
            "volumeMounts": mounts,
        })]
    } else {
        Vec::new()
    };
    let (node_selector, tolerations) = match &ai.gpu {
        Some(gpu) => (
            serde_json::to_value(&gpu.node_selector),
            serde_json::to_value(&gpu.tolerations),
        ),
        None => (Ok(json!({})), Ok(json!([]))),
    };
    let selector = selector(&instance, "ai-server", color);
    let mut pod = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": grace_seconds(spec),
        "securityContext": pod_security(),
        "nodeSelector": node_selector.expect("node selector serializes"),
        "tolerations": tolerations.expect("tolerations serialize"),
        "initContainers": init_containers,
        "containers": [{
            "name": "ai-server",
            "image": ai.image,
            "imagePullPolicy": ai.image_pull_policy,
            "args": ["serve"],
            "env": env,
            "ports": [
                { "name": "grpc", "containerPort": AI_GRPC_PORT, "protocol": "TCP" },
                { "name": "metrics", "containerPort": AI_METRICS_PORT, "protocol": "TCP" },
            ],
            "startupProbe": { "grpc": { "port": AI_GRPC_PORT }, "periodSeconds": 5, "failureThreshold": 120 },
            "readinessProbe": { "grpc": { "port": AI_GRPC_PORT }, "periodSeconds": 5, "failureThreshold": 2 },
            "livenessProbe": { "tcpSocket": { "port": "grpc" }, "periodSeconds": 10, "failureThreshold": 3 },
            "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_SLEEP_SECONDS } } },
            "resources": resources,
            "securityContext": container_security(),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    extend(
        &mut pod,
        placement(
            spec,
            ai.priority_class_name.as_ref(),
            &ai.topology_spread_constraints,
            &selector,
        ),
    );
    if ai.result_cache {
        with_redis_ca(spec, &mut pod);
    }
    let mut template_meta = json!({ "labels": labels });
    if let Some(annotations) = models.annotations() {
        template_meta["annotations"] = annotations;
    }
    let mut deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, &names.ai(color), &labels),
        "spec": {
            "selector": { "matchLabels": selector },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": { "metadata": template_meta, "spec": pod },
        },
    });
    if let Some(n) = replicas {
        deployment["spec"]["replicas"] = json!(n);
    }
    typed(deployment)
}

/// The AI Service of a colour: what that colour's API pods call.
#[must_use]
pub fn ai_service(md: &MutrDeployment, color: Color) -> Service {
    let instance = md.name_any();
    let mut labels = base_labels(&instance, "ai-server");
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, &Names::of(md).ai(color), &labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(&instance, "ai-server", color),
            "ports": [{ "name": "grpc", "port": AI_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc" }],
        },
    }))
}

/// The stable (`preview == false`) or preview Service, selecting the API pods of `color`.
#[must_use]
pub fn api_service(md: &MutrDeployment, color: Color, preview: bool) -> Service {
    let names = Names::of(md);
    let instance = md.name_any();
    let name = if preview {
        names.preview()
    } else {
        names.stable()
    };
    let labels = base_labels(&instance, "api");
    let mut service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, &name, &labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(&instance, "api", color),
            "ports": [{ "name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP" }],
        },
    });
    if !md.spec.service.annotations.is_empty() {
        service["metadata"]["annotations"] = json!(md.spec.service.annotations);
    }
    let affinity = md.spec.service.session_affinity;
    service["spec"]["sessionAffinity"] = json!(affinity.as_str());
    if affinity == SessionAffinity::ClientIP {
        service["spec"]["sessionAffinityConfig"] = json!({
            "clientIP": { "timeoutSeconds": md.spec.service.session_affinity_timeout_seconds },
        });
    }
    typed(service)
}

/// The Service of the AI servers' metrics port, both colours (scrapers, ServiceMonitor).
#[must_use]
pub fn ai_metrics_service(md: &MutrDeployment) -> Service {
    let instance = md.name_any();
    let labels = base_labels(&instance, "ai-server");
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, &Names::of(md).ai_metrics(), &labels),
        "spec": {
            "type": "ClusterIP",
            "selector": {
                labels::INSTANCE: instance,
                labels::COMPONENT: "ai-server",
            },
            "ports": [{ "name": "metrics", "port": AI_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP" }],
        },
    }))
}

/// The Job for a request, with the API image of the spec.
#[must_use]
pub fn job(md: &MutrDeployment, request: &JobRequest) -> Job {
    let spec = &md.spec;
    let (component, args): (&str, Vec<String>) = match request {
        JobRequest::Migrate { .. } => ("migrate", vec!["migrate".into()]),
        JobRequest::Activate { color, .. } => (
            "activate",
            vec!["activate".into(), "--color".into(), color.to_string()],
        ),
        JobRequest::Recover { from, .. } => (
            "recover",
            vec!["recover".into(), "--from-color".into(), from.to_string()],
        ),
    };
    let labels = base_labels(&md.name_any(), component);
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(md, &Names::of(md).job(request), &labels),
        "spec": {
            "backoffLimit": spec.strategy.job_backoff_limit,
            "activeDeadlineSeconds": spec.strategy.job_deadline_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": pod_security(),
                    "containers": [{
                        "name": component,
                        "image": spec.api.image,
                        "imagePullPolicy": spec.api.image_pull_policy,
                        "args": args,
                        "env": [secret_env("DATABASE_URL", &spec.database), secret_env("REDIS_URL", &spec.redis)],
                        "terminationMessagePolicy": "File",
                        "resources": spec.api.resources,
                        "securityContext": container_security(),
                        "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
                    }],
                    "volumes": [tmp_volume()],
                },
            },
        },
    });
    with_redis_ca(spec, &mut job["spec"]["template"]["spec"]);
    if !spec.image_pull_secrets.is_empty() {
        job["spec"]["template"]["spec"]["imagePullSecrets"] =
            serde_json::to_value(&spec.image_pull_secrets).expect("references serialize");
    }
    if let Some(name) = &spec.api.priority_class_name {
        job["spec"]["template"]["spec"]["priorityClassName"] = json!(name);
    }
    typed(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md() -> MutrDeployment {
        let mut md: MutrDeployment = serde_json::from_value(json!({
            "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment",
            "metadata": { "name": "mutr", "namespace": "shop", "uid": "u1" },
            "spec": {
                "api": { "image": "api:1", "replicas": 3 },
                "aiServer": { "image": "ai:1", "model": { "profile": "tiny", "cacheSizeLimit": "2Gi" },
                              "gpu": { "count": 1, "nodeSelector": { "gpu": "yes" } } },
                "database": { "name": "db" }, "redis": { "name": "rd", "key": "uri" },
                "strategy": { "drainTimeoutSeconds": 40 },
            },
        }))
        .unwrap();
        md.metadata.uid = Some("u1".into());
        md
    }

    fn value<T: serde::Serialize>(t: &T) -> Value {
        serde_json::to_value(t).unwrap()
    }

    fn env(container: &Value, name: &str) -> Value {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    #[test]
    fn api_pods_get_credentials_by_reference_their_colour_and_their_own_ai_server() {
        let d = value(&api_deployment(&md(), Color::Green, Some(3)));
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            env(c, "DATABASE_URL")["valueFrom"]["secretKeyRef"],
            json!({ "name": "db", "key": "url" })
        );
        assert_eq!(
            env(c, "REDIS_URL")["valueFrom"]["secretKeyRef"],
            json!({ "name": "rd", "key": "uri" })
        );
        assert_eq!(env(c, "MUTR_COLOR")["value"], "green");
        assert_eq!(
            env(c, "MUTR_POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(env(c, "MUTR_AI_URL")["value"], "http://mutr-ai-green:50051");
        assert_eq!(env(c, "MUTR_DRAIN_TIMEOUT")["value"], "40s");
        assert_eq!(env(c, "MUTR_HTTP_ADDR")["value"], "0.0.0.0:8080");
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({ "path": "/readyz", "port": "http" })
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"],
            json!({ "path": "/healthz", "port": "http" })
        );
        assert!(
            pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 40,
            "grace outlasts the drain"
        );
        assert_eq!(
            d["spec"]["selector"]["matchLabels"]["mutr.io/color"],
            "green"
        );
        assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "u1");
    }

    #[test]
    fn every_pod_runs_locked_down() {
        let m = md();
        let pods = [
            value(&api_deployment(&m, Color::Blue, Some(1)))["spec"]["template"]["spec"].clone(),
            value(&ai_deployment(&m, Color::Blue, Some(1)))["spec"]["template"]["spec"].clone(),
            value(&job(
                &m,
                &JobRequest::Recover {
                    id: 1,
                    from: Color::Blue,
                },
            ))["spec"]["template"]["spec"]
                .clone(),
        ];
        for pod in pods {
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            let containers = pod["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(pod["initContainers"].as_array().into_iter().flatten());
            for c in containers {
                assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{c}");
                assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
                assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
                assert!(
                    c["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| m["mountPath"] == "/tmp")
                );
            }
        }
    }

    #[test]
    fn ai_server_probes_grpc_fetches_its_model_and_lands_on_gpus() {
        let d = value(&ai_deployment(&md(), Color::Blue, Some(2)));
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["readinessProbe"]["grpc"]["port"], 50051);
        assert_eq!(env(c, "AI_SERVER_PORT")["value"], "50051");
        assert_eq!(env(c, "MUTR_METRICS_ADDR")["value"], "0.0.0.0:9090");
        assert_eq!(env(c, "MUTR_MODEL_DIR")["value"], "/models");
        assert_eq!(
            env(c, "REDIS_URL"),
            Value::Null,
            "no result cache unless asked"
        );
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(pod["nodeSelector"], json!({ "gpu": "yes" }));
        // Into the volume the server reads (not $HOME/.cache), verified files kept across restarts.
        let init = &pod["initContainers"][0];
        assert_eq!(
            init["args"],
            json!([
                "fetch-model",
                "--profile",
                "tiny",
                "--dest",
                "/models",
                "--no-progress"
            ])
        );
        assert!(init["resources"]["limits"]["memory"].is_string());
        assert!(
            init["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/models")
        );
        assert_eq!(env(c, "MUTR_MODEL_PROFILE")["value"], "tiny");
        let models = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "models")
            .unwrap();
        assert_eq!(models["emptyDir"]["sizeLimit"], "2Gi");
    }

    #[test]
    fn names_stay_within_label_limits() {
        let names = Names::new(&"m".repeat(crate::crd::MAX_NAME_LEN), "mutr-api");
        let longest = names.job(&JobRequest::Recover {
            id: 999_999,
            from: Color::Green,
        });
        assert!(longest.len() <= 63, "{longest}");
        assert!(
            names
                .job(&JobRequest::Migrate {
                    revision: "0123456789".into()
                })
                .len()
                <= 63
        );
    }

    #[test]
    fn revision_ignores_replicas_and_timing_but_not_images() {
        let a = md();
        let mut b = a.clone();
        b.spec.api.replicas = 9;
        b.spec.strategy.scale_down_delay_seconds = 1;
        b.spec.strategy.auto_promote = true;
        assert_eq!(a.spec.revision(), b.spec.revision());
        b.spec.api.image = "api:2".into();
        assert_ne!(a.spec.revision(), b.spec.revision());
    }

    /// The revision of [`md`] as the operator computed it before the fields added for production
    /// (priority classes, spread, pull Secrets, model pins, the Redis CA) existed.
    const REVISION_BEFORE_THE_NEW_FIELDS: &str = "00d59173f6";

    #[test]
    fn every_empty_dir_is_bounded_and_pods_spread_over_zones_and_nodes() {
        let m = md();
        for d in [
            value(&api_deployment(&m, Color::Blue, Some(1))),
            value(&ai_deployment(&m, Color::Blue, Some(1))),
        ] {
            let pod = &d["spec"]["template"]["spec"];
            for v in pod["volumes"].as_array().unwrap() {
                if let Some(empty) = v.get("emptyDir") {
                    assert!(empty["sizeLimit"].is_string(), "{v}");
                }
            }
            let spread = pod["topologySpreadConstraints"].as_array().unwrap();
            let keys: Vec<&str> = spread
                .iter()
                .map(|c| c["topologyKey"].as_str().unwrap())
                .collect();
            assert_eq!(
                keys,
                ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
            );
            assert_eq!(
                spread[0]["labelSelector"]["matchLabels"],
                d["spec"]["selector"]["matchLabels"]
            );
        }
    }

    #[test]
    fn pull_secrets_priority_and_the_redis_ca_reach_every_pod_that_needs_them() {
        let mut m = md();
        m.spec.image_pull_secrets = vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "regcred".into(),
        }];
        m.spec.api.priority_class_name = Some("mutr-high".into());
        m.spec.ai_server.result_cache = true;
        m.spec.redis_ca_config_map = Some(crate::crd::ConfigMapKeyRef {
            name: "redis-ca".into(),
            key: "ca.crt".into(),
        });
        let pods = [
            value(&api_deployment(&m, Color::Blue, Some(1)))["spec"]["template"]["spec"].clone(),
            value(&ai_deployment(&m, Color::Blue, Some(1)))["spec"]["template"]["spec"].clone(),
            value(&job(
                &m,
                &JobRequest::Activate {
                    id: 1,
                    color: Color::Blue,
                },
            ))["spec"]["template"]["spec"]
                .clone(),
        ];
        for pod in &pods {
            assert_eq!(pod["imagePullSecrets"], json!([{ "name": "regcred" }]));
            let c = &pod["containers"][0];
            assert_eq!(
                env(c, "SSL_CERT_FILE")["value"],
                "/etc/mutr/redis-ca/ca.crt"
            );
            assert!(
                pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["configMap"]["name"] == "redis-ca")
            );
        }
        assert_eq!(pods[0]["priorityClassName"], "mutr-high");
        assert_eq!(pods[2]["priorityClassName"], "mutr-high");
        // Without a result cache the AI server never talks to Redis: no CA either.
        m.spec.ai_server.result_cache = false;
        let ai = value(&ai_deployment(&m, Color::Blue, Some(1)));
        assert_eq!(
            env(
                &ai["spec"]["template"]["spec"]["containers"][0],
                "SSL_CERT_FILE"
            ),
            Value::Null
        );
    }

    #[test]
    fn the_api_services_keep_a_client_on_one_replica_and_carry_their_annotations() {
        let mut m = md();
        m.spec
            .service
            .annotations
            .insert("cloud.google.com/neg".into(), "{\"ingress\":true}".into());
        for preview in [false, true] {
            let s = value(&api_service(&m, Color::Blue, preview));
            assert_eq!(s["spec"]["sessionAffinity"], "ClientIP");
            assert_eq!(
                s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
                10800
            );
            assert_eq!(
                s["metadata"]["annotations"]["cloud.google.com/neg"],
                "{\"ingress\":true}"
            );
        }
        m.spec.service.session_affinity = crate::crd::SessionAffinity::None;
        let s = value(&api_service(&m, Color::Blue, false));
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"].get("sessionAffinityConfig"), None);
    }

    #[test]
    fn an_autoscaled_deployment_leaves_replicas_to_the_autoscaler() {
        let d = value(&api_deployment(&md(), Color::Blue, None));
        assert_eq!(d["spec"].get("replicas"), None);
        let d = value(&api_deployment(&md(), Color::Blue, Some(2)));
        assert_eq!(d["spec"]["replicas"], 2);
    }

    #[test]
    fn fields_added_later_do_not_change_the_revision_while_unset() {
        let a = md();
        let mut b = a.clone();
        b.spec.pod_disruption_budget.max_unavailable = 2;
        b.spec.monitoring.service_monitor = true;
        b.spec.service.session_affinity = crate::crd::SessionAffinity::None;
        assert_eq!(a.spec.revision(), b.spec.revision(), "not pod-shaping");
        b.spec.api.priority_class_name = Some("p".into());
        assert_ne!(a.spec.revision(), b.spec.revision(), "pod-shaping");
        // An unset new field serializes to nothing: the hash of a resource written before they
        // existed stays what it was (the value below is that revision, computed by the operator
        // before these fields were added).
        assert_eq!(a.spec.revision(), REVISION_BEFORE_THE_NEW_FIELDS);
    }
}
