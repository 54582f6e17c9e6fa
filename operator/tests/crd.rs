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
