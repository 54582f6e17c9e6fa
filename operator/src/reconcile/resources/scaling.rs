//! Autoscaling: a HorizontalPodAutoscaler per colour for the API (CPU), and a KEDA `ScaledObject`
//! per colour for the AI server on the analysis queue depth (`mutr_analysis_queue_depth`, exported
//! by the API). Both own the replica count of the Deployment they target; the operator then leaves
//! `spec.replicas` out of its apply and only sets it where a rollout needs a count (see
//! `desired.rs`). A KEDA ScaledObject keeps `minReplicaCount` even on a Deployment at zero, so
//! every colour but the active one is paused at the count the rollout wants.

use kube::ResourceExt;
use serde_json::{Value, json};

use super::{Names, base_labels, labels, metadata};
use crate::crd::{Color, MutrDeployment};

/// KEDA's annotation that pauses a ScaledObject at a fixed replica count.
pub const KEDA_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";

/// The HorizontalPodAutoscaler of a colour's API Deployment, when `spec.api.autoscaling` is set.
#[must_use]
pub fn api_hpa(md: &MutrDeployment, color: Color) -> Option<Value> {
    let a = md.spec.api.autoscaling.as_ref()?;
    let names = Names::of(md);
    let mut labels = base_labels(&md.name_any(), "api");
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    Some(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, &names.api(color), &labels),
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": names.api(color) },
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage },
                },
            }],
        },
    }))
}

/// The KEDA ScaledObject of a colour's AI Deployment, when `spec.aiServer.autoscaling` is set.
/// `paused_at` pauses it at that replica count (every colour but the active one).
#[must_use]
pub fn ai_scaled_object(
    md: &MutrDeployment,
    color: Color,
    paused_at: Option<i32>,
) -> Option<Value> {
    let a = md.spec.ai_server.autoscaling.as_ref()?;
    let names = Names::of(md);
    let namespace = md.namespace().unwrap_or_default();
    let mut labels = base_labels(&md.name_any(), "ai-server");
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    let mut meta = metadata(md, &names.ai(color), &labels);
    // Always present, so that server-side apply removes a pause the operator no longer wants.
    meta["annotations"] = json!({});
    if let Some(n) = paused_at {
        meta["annotations"][KEDA_PAUSED_REPLICAS] = json!(n.to_string());
    }
    let query = a
        .query
        .clone()
        .unwrap_or_else(|| format!("max(mutr_analysis_queue_depth{{namespace=\"{namespace}\"}})"));
    Some(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": names.ai(color) },
            "minReplicaCount": a.min_replicas,
            "maxReplicaCount": a.max_replicas,
            "triggers": [{
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": a.prometheus_address,
                    "query": query,
                    "threshold": a.nodes_per_replica.to_string(),
                },
            }],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

    fn md(autoscaling: bool) -> MutrDeployment {
        let scale = |extra: Value| if autoscaling { extra } else { Value::Null };
        let mut md: MutrDeployment = serde_json::from_value(json!({
            "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment",
            "metadata": { "name": "mutr", "namespace": "shop" },
            "spec": {
                "api": { "image": "api:1", "autoscaling": scale(json!({ "minReplicas": 2, "maxReplicas": 6 })) },
                "aiServer": { "image": "ai:1", "autoscaling": scale(json!({
                    "minReplicas": 1, "maxReplicas": 4, "prometheusAddress": "http://prom:9090" })) },
                "database": { "name": "db" }, "redis": { "name": "rd" },
            },
        }))
        .unwrap();
        md.metadata.uid = Some("u1".into());
        md
    }

    #[test]
    fn autoscalers_only_when_asked() {
        assert!(api_hpa(&md(false), Color::Blue).is_none());
        assert!(ai_scaled_object(&md(false), Color::Blue, None).is_none());
    }

    #[test]
    fn the_api_hpa_targets_its_colours_deployment() {
        let hpa = api_hpa(&md(true), Color::Green).unwrap();
        let typed: HorizontalPodAutoscaler = serde_json::from_value(hpa.clone()).unwrap();
        let spec = typed.spec;
        assert_eq!(spec.scale_target_ref.name, "mutr-api-green");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
    }

    #[test]
    fn the_ai_scaled_object_reads_the_queue_depth_and_pauses_off_the_active_colour() {
        let so = ai_scaled_object(&md(true), Color::Blue, None).unwrap();
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], "mutr-ai-blue");
        let trigger = &so["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "prometheus");
        assert_eq!(
            trigger["metadata"]["query"],
            "max(mutr_analysis_queue_depth{namespace=\"shop\"})"
        );
        assert_eq!(trigger["metadata"]["threshold"], "20");
        assert_eq!(so["metadata"]["annotations"], json!({}));
        let paused = ai_scaled_object(&md(true), Color::Green, Some(0)).unwrap();
        assert_eq!(paused["metadata"]["annotations"][KEDA_PAUSED_REPLICAS], "0");
    }
}
