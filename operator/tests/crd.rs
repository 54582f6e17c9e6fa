//! The checked-in CRD matches the Rust types, and carries what the API server enforces.

use mutr_operator::crd::{MutrDeployment, crd_yaml};

const CHECKED_IN: &str = include_str!("../../crds/mutrdeployments.mutr.io.yaml");

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = crd_yaml().unwrap();
    assert!(
        generated == CHECKED_IN,
        "crds/mutrdeployments.mutr.io.yaml is stale: run `make crds` and commit it"
    );
}

#[test]
fn crd_has_short_name_status_printer_columns_and_cel_rules() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(MutrDeployment::crd()).unwrap();
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["mutr"])
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Active", "Preview", "Phase", "Age"]);
    let text = serde_json::to_string(&crd).unwrap();
    for rule in [
        "self.metadata.name.size() <= 40",
        "e.name in ['DATABASE_URL'",
        "!has(self.persistentVolumeClaim)",
    ] {
        assert!(text.contains(rule), "CEL rule {rule:?} missing");
    }
}

#[test]
fn credentials_are_secret_references_only() {
    let yaml = serde_yaml::from_str::<serde_json::Value>(CHECKED_IN).unwrap();
    let spec = &yaml["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in ["database", "redis"] {
        let props = spec[field]["properties"].as_object().unwrap();
        let keys: Vec<&String> = props.keys().collect();
        assert_eq!(
            keys,
            ["key", "name"],
            "{field} holds only a Secret name and key"
        );
    }
}

fn valid() -> MutrDeployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment",
        "metadata": { "name": "mutr", "namespace": "shop" },
        "spec": {
            "api": { "image": "api:1", "env": [{ "name": "MUTR_PUBLIC_URL", "value": "https://mutr.example" }] },
            "aiServer": { "image": "ai:1", "model": { "profile": "tiny", "cacheSizeLimit": "1Gi" } },
            "database": { "name": "db" }, "redis": { "name": "rd" },
        },
    }))
    .unwrap()
}

#[test]
fn cel_rules_accept_a_valid_resource_and_reject_what_they_are_for() {
    use k8s_openapi::api::core::v1::EnvVar;
    use kube::core::cel::validate_cel;

    validate_cel(&valid()).expect("a valid resource passes every rule");

    let mut md = valid();
    md.metadata.name = Some("m".repeat(41));
    assert!(
        validate_cel(&md).is_err(),
        "a name longer than 40 characters"
    );

    let mut md = valid();
    md.spec.api.env.push(EnvVar {
        name: "DATABASE_URL".into(),
        value: Some("postgres://inline".into()),
        value_from: None,
    });
    assert!(validate_cel(&md).is_err(), "an inline DATABASE_URL");

    let mut md = valid();
    md.spec.ai_server.env.push(EnvVar {
        name: "MUTR_MODEL_DIR".into(),
        value: Some("/elsewhere".into()),
        value_from: None,
    });
    assert!(
        validate_cel(&md).is_err(),
        "an AI server variable the operator owns"
    );

    let mut md = valid();
    md.spec.ai_server.model.persistent_volume_claim = Some("models".into());
    assert!(validate_cel(&md).is_err(), "cacheSizeLimit with a claim");

    let mut md = valid();
    md.spec.strategy.scale_down_delay_seconds = 100_000;
    assert!(validate_cel(&md).is_err(), "a scale-down delay over a day");
}
