//! Prometheus Operator ServiceMonitors: the API's `/metrics` through its two Services (each selects
//! one colour), the AI servers' through their metrics Service.

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde_json::{Value, json};

use super::{Names, base_labels, labels, metadata};
use crate::crd::MutrDeployment;

/// The ServiceMonitor of a component (`api` or `ai-server`), when `spec.monitoring.serviceMonitor`.
#[must_use]
pub fn service_monitor(md: &MutrDeployment, component: &str) -> Option<Value> {
    let monitoring = &md.spec.monitoring;
    if !monitoring.service_monitor {
        return None;
    }
    let instance = md.name_any();
    let names = Names::of(md);
    let mut object_labels = base_labels(&instance, component);
    object_labels.extend(monitoring.labels.clone());
    let (name, port) = if component == "api" {
        (format!("{instance}-api"), "http")
    } else {
        (names.ai_metrics(), "metrics")
    };
    let mut endpoint = json!({ "port": port, "path": "/metrics", "scheme": "http" });
    if let Some(interval) = &monitoring.interval {
        endpoint["interval"] = json!(interval);
    }
    let selector = BTreeMap::from([
        (labels::INSTANCE.to_owned(), instance.clone()),
        (labels::COMPONENT.to_owned(), component.to_owned()),
        (labels::MANAGED_BY.to_owned(), "mutr-operator".to_owned()),
    ]);
    Some(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(md, &name, &object_labels),
        "spec": {
            "selector": { "matchLabels": selector },
            "namespaceSelector": { "matchNames": [md.namespace().unwrap_or_default()] },
            "endpoints": [endpoint],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_select_the_services_that_carry_the_metrics_ports() {
        let mut md: MutrDeployment = serde_json::from_value(json!({
            "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment",
            "metadata": { "name": "mutr", "namespace": "shop", "uid": "u" },
            "spec": {
                "api": { "image": "api:1" }, "aiServer": { "image": "ai:1" },
                "database": { "name": "db" }, "redis": { "name": "rd" },
            },
        }))
        .unwrap();
        assert!(service_monitor(&md, "api").is_none());
        md.spec.monitoring.service_monitor = true;
        md.spec
            .monitoring
            .labels
            .insert("release".into(), "prom".into());
        let api = service_monitor(&md, "api").unwrap();
        assert_eq!(api["spec"]["endpoints"][0]["port"], "http");
        assert_eq!(api["metadata"]["labels"]["release"], "prom");
        let ai = service_monitor(&md, "ai-server").unwrap();
        assert_eq!(ai["metadata"]["name"], "mutr-ai-metrics");
        assert_eq!(ai["spec"]["endpoints"][0]["port"], "metrics");
        assert_eq!(
            ai["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "ai-server"
        );
    }
}
