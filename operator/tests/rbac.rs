//! The operator's RBAC is exactly what it uses: every path of the reconciler (first creation, a
//! rollout and switchover with its Jobs, every optional object turned on and off), the controller's
//! lists and watches and leader election run against the fake API server, which records each call
//! as RBAC sees it; the calls must equal the grants in operator/README.md ("RBAC"), which the Helm
//! chart and the kustomize base must equal in turn (hack/checks/deploy.sh).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{FakeApi, mutr_deployment};
use mutr_operator::leader::{self, LeaseConfig};
use mutr_operator::reconcile::desired::{self, Operation};
use serde_json::{Value, json};

type Grant = (String, String, String);

/// (group, resource, verb) of the README's RBAC table.
fn readme_grants() -> BTreeSet<Grant> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## RBAC")
        .nth(1)
        .expect("operator/README.md has an RBAC section");
    let section = section.split("\n## ").next().unwrap();
    let mut grants = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 || cells[0].starts_with("API group") || cells[0].starts_with("---") {
            continue;
        }
        let group = match cells[0].trim_matches('`') {
            "core" => String::new(),
            g => g.to_owned(),
        };
        for resource in cells[1].split(',').map(|r| r.trim().trim_matches('`')) {
            for verb in cells[2].split(',').map(str::trim) {
                grants.insert((group.clone(), resource.to_owned(), verb.to_owned()));
            }
        }
    }
    assert!(
        grants.len() > 10,
        "the RBAC table was not found: {grants:?}"
    );
    grants
}

fn set_spec(fake: &FakeApi, patch: Value) {
    fake.edit("mutrdeployments", "mutr", |md| {
        common::merge(&mut md["spec"], &patch);
        let generation = md["metadata"]["generation"].as_i64().unwrap() + 1;
        md["metadata"]["generation"] = json!(generation);
    });
}

/// Every optional object on: HPA, ScaledObject, ServiceMonitors (budgets and policy are on by default).
fn everything_on() -> Value {
    json!({
        "api": { "autoscaling": { "minReplicas": 2, "maxReplicas": 4 } },
        "aiServer": { "autoscaling": { "minReplicas": 1, "maxReplicas": 3, "prometheusAddress": "http://prom:9090" } },
        "monitoring": { "serviceMonitor": true },
    })
}

fn everything_off() -> Value {
    json!({
        "api": { "autoscaling": null },
        "aiServer": { "autoscaling": null },
        "monitoring": { "serviceMonitor": false },
        "podDisruptionBudget": { "enabled": false },
        "networkPolicy": { "enabled": false },
    })
}

/// Drives a rollout from nothing to green serving a second revision, with every optional object
/// turned on and then off, so that every call the reconciler can make is made.
async fn drive(fake: &FakeApi) {
    let ctx = fake.context();
    let mut md = mutr_deployment("ghcr.io/mutr/api:1", true);
    common::merge(&mut md["spec"], &everything_on());
    fake.put("mutrdeployments", md);
    let revision = || fake.md("mutr").spec.revision();
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(&format!("mutr-migrate-{}", revision()), true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job("mutr-activate-1-blue", true, None);
    fake.reconcile(&ctx, "mutr").await;
    // A second revision, promoted automatically, through to the recover Job.
    set_spec(fake, json!({ "api": { "image": "ghcr.io/mutr/api:2" } }));
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(&format!("mutr-migrate-{}", revision()), true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job("mutr-activate-2-green", true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.advance(31);
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(
        "mutr-recover-2-blue",
        true,
        Some(r#"{"fromColor":"blue","returnedToPending":0,"stillProcessing":0}"#),
    );
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.status("mutr")["phase"], "Healthy");
    // A refused promotion: a Warning Event; the same Event again folds into a series (a patch).
    set_spec(
        fake,
        json!({ "activeColor": "blue", "strategy": { "autoPromote": false } }),
    );
    fake.reconcile(&ctx, "mutr").await;
    let md = fake.md("mutr");
    let status = md.status.clone().unwrap_or_default();
    let observed = mutr_operator::k8s::observe(
        &fake.client(),
        common::NS,
        &md,
        &mutr_operator::reconcile::resources::Names::of(&md),
        &status,
    )
    .await
    .unwrap();
    let plan = mutr_operator::reconcile::plan(mutr_operator::reconcile::Input {
        generation: md.metadata.generation.unwrap_or_default(),
        spec: &md.spec,
        status: &Default::default(),
        observed: &observed,
        now: *fake.clock.lock().unwrap(),
    });
    assert!(!plan.events.is_empty());
    mutr_operator::k8s::publish(&ctx, &md, &plan).await;
    mutr_operator::k8s::publish(&ctx, &md, &plan).await;
    // Everything optional off: the operator deletes what it made.
    set_spec(fake, everything_off());
    fake.reconcile(&ctx, "mutr").await;
    for kind in [
        "horizontalpodautoscalers",
        "scaledobjects",
        "servicemonitors",
        "poddisruptionbudgets",
        "networkpolicies",
    ] {
        assert!(
            fake.names(kind).is_empty(),
            "{kind} left behind: {:?}",
            fake.names(kind)
        );
    }
}

#[tokio::test]
async fn the_operator_calls_exactly_what_its_rbac_grants() {
    let fake = FakeApi::new();
    drive(&fake).await;

    // The controller's lists and watches, for a moment.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(mutr_operator::k8s::run(
        fake.context(),
        Some(common::NS.into()),
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(Duration::from_secs(10), async {
        while !fake
            .calls()
            .iter()
            .any(|(_, r, v)| r == "jobs" && v == "watch")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the controller lists and watches");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller stops")
        .unwrap();

    // Leader election.
    let config = LeaseConfig {
        name: "mutr-operator-leader".into(),
        namespace: common::NS.into(),
        identity: "a".into(),
        duration: Duration::from_secs(15),
        grace: Duration::from_secs(5),
    };
    let mut leadership = leader::start(fake.client(), &config).await.unwrap();
    assert!(
        tokio::time::timeout(
            Duration::from_secs(10),
            leader::acquired(&mut leadership.receiver)
        )
        .await
        .unwrap()
    );

    let granted = readme_grants();
    let called: BTreeSet<Grant> = fake
        .calls()
        .into_iter()
        // The test's own set-up writes objects directly, not through the API; every call here is
        // the operator's.
        .collect();
    let missing: Vec<_> = called.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "called but not granted in operator/README.md: {missing:?}"
    );
    let unused: Vec<_> = granted.difference(&called).collect();
    assert!(
        unused.is_empty(),
        "granted in operator/README.md but never called: {unused:?}"
    );
}

#[test]
fn every_operation_needs_only_granted_verbs() {
    // The pure side of the same contract: what `desired::operations` can ask for, kind by kind.
    let granted = readme_grants();
    let kinds = [
        desired::DEPLOYMENT,
        desired::SERVICE,
        desired::PDB,
        desired::NETWORK_POLICY,
        desired::HPA,
        desired::SCALED_OBJECT,
        desired::SERVICE_MONITOR,
    ];
    let mut operations: Vec<Operation> = kinds
        .iter()
        .map(|&kind| Operation::Apply {
            kind,
            object: json!({}),
        })
        .collect();
    operations.extend([
        Operation::ApplyReplicas {
            name: "d".into(),
            replicas: 1,
        },
        Operation::Scale {
            name: "d".into(),
            replicas: 0,
        },
    ]);
    operations.extend(
        [
            desired::PDB,
            desired::NETWORK_POLICY,
            desired::HPA,
            desired::SCALED_OBJECT,
            desired::SERVICE_MONITOR,
        ]
        .map(|kind| Operation::Delete {
            kind,
            name: "x".into(),
        }),
    );
    for op in &operations {
        for (group, resource, verb) in op.verbs() {
            let grant = (group.to_owned(), resource.to_owned(), verb.to_owned());
            assert!(
                granted.contains(&grant),
                "{op:?} needs {grant:?}, not granted"
            );
        }
    }
}
