//! PodDisruptionBudgets of each colour's API and AI server, and the NetworkPolicy that admits to a
//! colour's AI server only the API pods of the same colour.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use serde_json::json;

use super::{AI_GRPC_PORT, AI_METRICS_PORT, Names, base_labels, labels, metadata, selector, typed};
use crate::crd::{Color, MutrDeployment};

/// The two components with serving pods, as named in labels.
pub const COMPONENTS: [&str; 2] = ["api", "ai-server"];

/// Name of the PodDisruptionBudget of a component (`api` or `ai-server`) and colour: the name of
/// its Deployment.
#[must_use]
pub fn pdb_name(names: &Names, component: &str, color: Color) -> String {
    if component == "api" {
        names.api(color)
    } else {
        names.ai(color)
    }
}

/// The PodDisruptionBudget of a component's pods of one colour.
#[must_use]
pub fn pod_disruption_budget(
    md: &MutrDeployment,
    component: &str,
    color: Color,
) -> PodDisruptionBudget {
    let instance = md.name_any();
    let mut labels = base_labels(&instance, component);
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    typed(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, &pdb_name(&Names::of(md), component, color), &labels),
        "spec": {
            "maxUnavailable": md.spec.pod_disruption_budget.max_unavailable,
            "selector": { "matchLabels": selector(&instance, component, color) },
            // A pod that is not ready yet may be evicted: it serves nothing, and a budget held by it
            // would block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }))
}

/// The NetworkPolicy of a colour's AI server pods: gRPC only from the same colour's API pods, the
/// metrics port from anywhere (scrapers live in other namespaces; it carries no secret).
#[must_use]
pub fn ai_network_policy(md: &MutrDeployment, color: Color) -> NetworkPolicy {
    let instance = md.name_any();
    let mut labels = base_labels(&instance, "ai-server");
    labels.insert(labels::COLOR.to_owned(), color.to_string());
    typed(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(md, &Names::of(md).ai(color), &labels),
        "spec": {
            "podSelector": { "matchLabels": selector(&instance, "ai-server", color) },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{ "podSelector": { "matchLabels": selector(&instance, "api", color) } }],
                    "ports": [{ "port": AI_GRPC_PORT, "protocol": "TCP" }],
                },
                { "ports": [{ "port": AI_METRICS_PORT, "protocol": "TCP" }] },
            ],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn md() -> MutrDeployment {
        let mut md: MutrDeployment = serde_json::from_value(json!({
            "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment",
            "metadata": { "name": "mutr", "namespace": "shop" },
            "spec": {
                "api": { "image": "api:1" }, "aiServer": { "image": "ai:1" },
                "database": { "name": "db" }, "redis": { "name": "rd" },
            },
        }))
        .unwrap();
        md.metadata.uid = Some("u1".into());
        md
    }

    #[test]
    fn only_the_same_colours_api_reaches_an_ai_server() {
        let np = serde_json::to_value(ai_network_policy(&md(), Color::Green)).unwrap();
        assert_eq!(
            np["spec"]["podSelector"]["matchLabels"]["mutr.io/color"],
            "green"
        );
        let grpc = &np["spec"]["ingress"][0];
        assert_eq!(grpc["ports"][0]["port"], 50051);
        let from = &grpc["from"][0]["podSelector"]["matchLabels"];
        assert_eq!(from["mutr.io/color"], "green");
        assert_eq!(from["app.kubernetes.io/component"], "api");
        assert_eq!(from["app.kubernetes.io/instance"], "mutr");
        let open = &np["spec"]["ingress"][1];
        assert_eq!(open["ports"][0]["port"], 9090);
        assert_eq!(open.get("from"), None);
    }

    #[test]
    fn each_colour_and_component_has_its_budget() {
        for color in Color::ALL {
            for component in COMPONENTS {
                let pdb: Value =
                    serde_json::to_value(pod_disruption_budget(&md(), component, color)).unwrap();
                assert_eq!(pdb["spec"]["maxUnavailable"], 1);
                let sel = &pdb["spec"]["selector"]["matchLabels"];
                assert_eq!(sel["mutr.io/color"], color.as_str());
                assert_eq!(sel["app.kubernetes.io/component"], component);
            }
        }
    }
}
