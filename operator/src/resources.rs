//! Desired objects from a `MutrDeployment`: per-colour Deployments and AI Services, the stable
//! Services and the migrate/activate/recover Jobs. Pure functions; the reconciler applies them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::crd::{Color, MutrDeployment, MutrDeploymentSpec};
use crate::reconcile::switchover::JobRequest;

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

fn base_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), "mutr".to_owned()),
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (labels::COMPONENT.to_owned(), component.to_owned()),
        (labels::MANAGED_BY.to_owned(), "mutr-operator".to_owned()),
    ])
}

fn selector(instance: &str, component: &str, color: Color) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (labels::COMPONENT.to_owned(), component.to_owned()),
        (labels::COLOR.to_owned(), color.as_str().to_owned()),
    ])
}

fn owner(md: &MutrDeployment) -> OwnerReference {
    md.controller_owner_ref(&())
        .expect("a MutrDeployment read from the API server has a name and uid")
}

fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("manifests built here match the Kubernetes schema")
}

fn pod_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn secret_env(name: &str, spec: &crate::crd::SecretKeyRef) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": spec.name, "key": spec.key } } })
}

fn metadata(md: &MutrDeployment, name: &str, labels: &BTreeMap<String, String>) -> Value {
    json!({
        "name": name,
        "namespace": md.namespace(),
        "labels": labels,
        "ownerReferences": [owner(md)],
    })
}

fn grace_seconds(spec: &MutrDeploymentSpec) -> i64 {
    i64::from(spec.strategy.drain_timeout_seconds)
        + i64::from(spec.strategy.termination_grace_margin_seconds)
}

/// The API Deployment of a colour at the spec's revision.
#[must_use]
pub fn api_deployment(md: &MutrDeployment, color: Color, replicas: i32) -> Deployment {
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
    typed(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, &names.api(color), &labels),
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(&instance, "api", color) },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
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
                    "volumes": [{ "name": "tmp", "emptyDir": {} }],
                },
            },
        },
    }))
}

/// The AI server Deployment of a colour at the spec's revision.
#[must_use]
pub fn ai_deployment(md: &MutrDeployment, color: Color, replicas: i32) -> Deployment {
    let spec = &md.spec;
    let ai = &spec.ai_server;
    let names = Names::of(md);
    let instance = md.name_any();
    let mut labels = base_labels(&instance, "ai-server");
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    labels.insert(labels::REVISION.to_owned(), spec.revision());
    let mut env = vec![
        json!({ "name": "AI_SERVER_PORT", "value": AI_GRPC_PORT.to_string() }),
        json!({ "name": "MUTR_METRICS_ADDR", "value": format!("0.0.0.0:{AI_METRICS_PORT}") }),
        json!({ "name": "MUTR_MODEL_DIR", "value": MODEL_DIR }),
        json!({ "name": "MUTR_PARALLEL", "value": ai.parallel.to_string() }),
    ];
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
    let models = match &ai.model.persistent_volume_claim {
        Some(claim) => json!({ "name": "models", "persistentVolumeClaim": { "claimName": claim } }),
        None => json!({ "name": "models", "emptyDir": { "sizeLimit": ai.model.cache_size_limit } }),
    };
    let mounts = json!([
        { "name": "models", "mountPath": MODEL_DIR },
        { "name": "tmp", "mountPath": "/tmp" },
    ]);
    let init_containers: Vec<Value> = if ai.model.fetch {
        vec![json!({
            "name": "fetch-model",
            "image": ai.image,
            "imagePullPolicy": ai.image_pull_policy,
            "args": ["fetch-model", "--profile", ai.model.profile],
            "env": [{ "name": "MUTR_MODEL_DIR", "value": MODEL_DIR }],
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
    typed(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, &names.ai(color), &labels),
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(&instance, "ai-server", color) },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
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
                    "volumes": [models, { "name": "tmp", "emptyDir": {} }],
                },
            },
        },
    }))
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
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, &name, &labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(&instance, "api", color),
            "ports": [{ "name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP" }],
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
    typed(json!({
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
                    "volumes": [{ "name": "tmp", "emptyDir": {} }],
                },
            },
        },
    }))
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
        let d = value(&api_deployment(&md(), Color::Green, 3));
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
            value(&api_deployment(&m, Color::Blue, 1))["spec"]["template"]["spec"].clone(),
            value(&ai_deployment(&m, Color::Blue, 1))["spec"]["template"]["spec"].clone(),
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
        let d = value(&ai_deployment(&md(), Color::Blue, 2));
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
        assert_eq!(
            pod["initContainers"][0]["args"],
            json!(["fetch-model", "--profile", "tiny"])
        );
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
}
