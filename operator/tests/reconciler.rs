//! The reconciler against the fake API server: first creation, rollout to the idle colour, refused
//! and granted promotion, the switchover and recover Jobs, delayed scale-down, migration failure,
//! abort and rollback, and convergence after a lost status write at every step.

mod common;

use common::{FakeApi, NS, assert_condition, mutr_deployment};
use mutr_operator::crd::MutrDeployment;
use serde_json::{Value, json};

const RECOVER_SUMMARY: &str = r#"{"fromColor":"blue","returnedToPending":3,"stillProcessing":0}"#;

fn revision(fake: &FakeApi) -> String {
    fake.md("mutr").spec.revision()
}

fn set_spec(fake: &FakeApi, patch: Value) {
    fake.edit("mutrdeployments", "mutr", |md| {
        common::merge(&mut md["spec"], &patch);
        let generation = md["metadata"]["generation"].as_i64().unwrap() + 1;
        md["metadata"]["generation"] = json!(generation);
    });
}

/// First creation up to a healthy blue colour.
async fn bring_up(fake: &FakeApi, auto_promote: bool) {
    fake.put(
        "mutrdeployments",
        mutr_deployment("ghcr.io/mutr/api:1", auto_promote),
    );
    let ctx = fake.context();
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(&format!("mutr-migrate-{}", revision(fake)), true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job("mutr-activate-1-blue", true, None);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.status("mutr")["phase"], "Healthy");
}

#[tokio::test]
async fn first_creation_migrates_then_deploys_blue_then_activates_it() {
    let fake = FakeApi::new();
    fake.put(
        "mutrdeployments",
        mutr_deployment("ghcr.io/mutr/api:1", false),
    );
    let ctx = fake.context();
    let rev = revision(&fake);

    fake.reconcile(&ctx, "mutr").await;
    let migrate = format!("mutr-migrate-{rev}");
    let job = fake
        .get("jobs", &migrate)
        .expect("the migration Job runs first");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["migrate"])
    );
    assert!(
        fake.names("deployments").is_empty(),
        "no pods before the migration succeeded"
    );
    assert_eq!(fake.status("mutr")["phase"], "Migrating");

    fake.finish_job(&migrate, true, None);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.replicas("mutr-api-blue"), Some(2));
    assert_eq!(fake.replicas("mutr-ai-blue"), Some(1));
    assert!(fake.get("deployments", "mutr-api-green").is_none());
    assert_eq!(
        fake.selects("mutr-api"),
        None,
        "the stable Service waits for ready pods"
    );
    let owner =
        &fake.get("deployments", "mutr-api-blue").unwrap()["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("MutrDeployment"), Some(true))
    );

    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("blue"));
    assert_eq!(fake.selects("mutr-ai-blue").as_deref(), Some("blue"));
    let activate = fake
        .get("jobs", "mutr-activate-1-blue")
        .expect("activate Job");
    assert_eq!(
        activate["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["activate", "--color", "blue"])
    );

    fake.finish_job("mutr-activate-1-blue", true, None);
    fake.reconcile(&ctx, "mutr").await;
    let status = fake.status("mutr");
    assert_eq!(
        (
            status["phase"].as_str(),
            status["activeColor"].as_str(),
            status["previewColor"].as_str()
        ),
        (Some("Healthy"), Some("blue"), Some("green"))
    );
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["colors"]["blue"]["revision"], json!(rev));
    assert_condition(&status, "Ready", "True", "Serving");
    assert_condition(&status, "Degraded", "False", "AsExpected");
    let reasons = fake.event_reasons();
    for reason in [
        "MigrationStarted",
        "MigrationSucceeded",
        "SwitchoverStarted",
        "TrafficSwitched",
        "Activated",
        "SwitchoverCompleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "Event {reason} missing from {reasons:?}"
        );
    }
}

#[tokio::test]
async fn rollout_promotion_switchover_delayed_scale_down_and_recovery() {
    let fake = FakeApi::new();
    bring_up(&fake, false).await;
    let ctx = fake.context();

    // A new version goes to the idle colour, after its migration.
    set_spec(&fake, json!({ "api": { "image": "ghcr.io/mutr/api:2" } }));
    let rev2 = revision(&fake);
    fake.reconcile(&ctx, "mutr").await;
    assert!(
        fake.get("deployments", "mutr-api-green").is_none(),
        "green waits for the migration"
    );
    fake.finish_job(&format!("mutr-migrate-{rev2}"), true, None);
    fake.reconcile(&ctx, "mutr").await;
    let green = fake.get("deployments", "mutr-api-green").unwrap();
    assert_eq!(
        green["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/mutr/api:2"
    );
    assert_eq!(
        fake.get("deployments", "mutr-api-blue").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "ghcr.io/mutr/api:1"
    );
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("blue"));
    assert_eq!(fake.status("mutr")["phase"], "PreviewStarting");

    // Promotion requested while green is not ready: refused, nothing changes.
    fake.kubelet(&["mutr-api-green"], false);
    set_spec(&fake, json!({ "activeColor": "green" }));
    fake.reconcile(&ctx, "mutr").await;
    fake.reconcile(&ctx, "mutr").await;
    let status = fake.status("mutr");
    assert_condition(&status, "Progressing", "True", "PromotionRefused");
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("blue"));
    assert!(fake.get("jobs", "mutr-activate-2-green").is_none());
    assert_eq!(status["activeColor"], "blue");
    assert_eq!(
        fake.event_reasons()
            .iter()
            .filter(|r| *r == "PromotionRefused")
            .count(),
        1,
        "one Event per refusal, not per reconcile"
    );

    // Green turns ready: the request stands, so the switchover runs.
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("green"));
    assert_eq!(fake.selects("mutr-api-preview").as_deref(), Some("blue"));
    let activate = fake
        .get("jobs", "mutr-activate-2-green")
        .expect("switchover Job");
    assert_eq!(
        activate["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["activate", "--color", "green"])
    );
    assert_eq!(fake.status("mutr")["switchover"]["step"], "Activating");

    fake.finish_job("mutr-activate-2-green", true, None);
    fake.reconcile(&ctx, "mutr").await;
    let status = fake.status("mutr");
    assert_eq!(
        (
            status["activeColor"].as_str(),
            status["switchover"]["step"].as_str()
        ),
        (Some("green"), Some("ScaleDownPending"))
    );

    // The old colour stays up for scaleDownDelaySeconds.
    fake.advance(20);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(
        fake.replicas("mutr-api-blue"),
        Some(2),
        "blue still up 20s after the switch"
    );
    fake.advance(11);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(
        (
            fake.replicas("mutr-api-blue"),
            fake.replicas("mutr-ai-blue")
        ),
        (Some(0), Some(0))
    );

    // No recovery while blue's pods drain.
    fake.kubelet(&[], true);
    fake.reconcile(&ctx, "mutr").await;
    assert!(
        fake.names("jobs").iter().all(|j| !j.contains("recover")),
        "recovery must wait for the old pods to go"
    );
    assert_eq!(fake.status("mutr")["switchover"]["step"], "Draining");

    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    let recover = fake
        .get("jobs", "mutr-recover-2-blue")
        .expect("recover Job once blue's pods are gone");
    assert_eq!(
        recover["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["recover", "--from-color", "blue"])
    );
    assert_eq!(
        recover["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/mutr/api:2"
    );

    fake.finish_job("mutr-recover-2-blue", true, Some(RECOVER_SUMMARY));
    fake.reconcile(&ctx, "mutr").await;
    let status = fake.status("mutr");
    assert_eq!(status["phase"], "Healthy");
    assert!(status.get("switchover").is_none());
    let last = &status["lastSwitchover"];
    assert_eq!(
        (
            last["from"].as_str(),
            last["to"].as_str(),
            last["revision"].as_str()
        ),
        (Some("blue"), Some("green"), Some(rev2.as_str()))
    );
    assert_eq!(
        last["recovery"],
        json!({ "fromColor": "blue", "returnedToPending": 3, "stillProcessing": 0 })
    );
    assert_condition(&status, "Ready", "True", "Serving");
    assert!(fake.event_reasons().iter().any(|r| r == "Recovered"));
    assert!(
        ctx.metrics
            .render()
            .contains("mutr_operator_switchovers_total{event=\"completed\"} 1"),
        "{}",
        ctx.metrics.render()
    );
}

#[tokio::test]
async fn migration_failure_stops_the_rollout_with_a_condition() {
    let fake = FakeApi::new();
    bring_up(&fake, true).await;
    let ctx = fake.context();
    set_spec(
        &fake,
        json!({ "api": { "image": "ghcr.io/mutr/api:broken" } }),
    );
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(&format!("mutr-migrate-{}", revision(&fake)), false, None);
    fake.reconcile(&ctx, "mutr").await;
    let status = fake.status("mutr");
    assert_eq!(status["phase"], "Failed");
    assert_condition(&status, "Degraded", "True", "MigrationFailed");
    assert_condition(&status, "Ready", "True", "Serving");
    assert!(
        fake.get("deployments", "mutr-api-green").is_none(),
        "no pods of a revision whose migration failed"
    );
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("blue"));
    assert!(fake.event_reasons().iter().any(|r| r == "MigrationFailed"));
}

#[tokio::test]
async fn abort_before_promotion_scales_the_preview_down() {
    let fake = FakeApi::new();
    bring_up(&fake, false).await;
    let ctx = fake.context();
    set_spec(&fake, json!({ "api": { "image": "ghcr.io/mutr/api:2" } }));
    let rev2 = revision(&fake);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(&format!("mutr-migrate-{rev2}"), true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.status("mutr")["phase"], "AwaitingPromotion");

    set_spec(&fake, json!({ "abortedRevision": rev2 }));
    fake.reconcile(&ctx, "mutr").await;
    let status = fake.status("mutr");
    assert_eq!(status["phase"], "Aborted");
    assert_condition(&status, "Degraded", "True", "RolloutAborted");
    assert_eq!(fake.replicas("mutr-api-green"), Some(0));
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("blue"));
    assert!(fake.event_reasons().iter().any(|r| r == "RolloutAborted"));
}

#[tokio::test]
async fn abort_after_the_switch_rolls_back_to_the_old_colour() {
    let fake = FakeApi::new();
    bring_up(&fake, true).await;
    let ctx = fake.context();
    set_spec(&fake, json!({ "api": { "image": "ghcr.io/mutr/api:2" } }));
    let rev2 = revision(&fake);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(&format!("mutr-migrate-{rev2}"), true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job("mutr-activate-2-green", true, None);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(
        fake.status("mutr")["switchover"]["step"],
        "ScaleDownPending"
    );
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("green"));

    // Abort inside the scale-down window: traffic and work go back to blue, green drains, recovers.
    set_spec(
        &fake,
        json!({ "abortedRevision": rev2, "activeColor": "blue" }),
    );
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("blue"));
    assert_eq!(fake.status("mutr")["switchover"]["rollback"], true);
    fake.finish_job("mutr-activate-3-blue", true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.advance(31);
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.replicas("mutr-api-green"), Some(0));
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    let recover = fake
        .get("jobs", "mutr-recover-3-green")
        .expect("recover the green claims");
    assert_eq!(
        recover["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["recover", "--from-color", "green"])
    );
    fake.finish_job(
        "mutr-recover-3-green",
        true,
        Some(r#"{"fromColor":"green","returnedToPending":0,"stillProcessing":0}"#),
    );
    fake.reconcile(&ctx, "mutr").await;
    let status = fake.status("mutr");
    assert_eq!(
        (status["activeColor"].as_str(), status["phase"].as_str()),
        (Some("blue"), Some("Aborted"))
    );
    assert_eq!(status["lastSwitchover"]["rollback"], true);
    assert_eq!(fake.replicas("mutr-api-blue"), Some(2));
    assert!(fake.event_reasons().iter().any(|r| r == "RollingBack"));
}

/// The cluster's controllers do their part between reconciles: pods become ready and go, Jobs finish.
fn cluster_step(fake: &FakeApi) {
    fake.kubelet(&[], false);
    for job in fake.all("jobs") {
        if job.get("status").is_none() {
            let name = job["metadata"]["name"].as_str().unwrap().to_owned();
            let message = name.contains("recover").then_some(RECOVER_SUMMARY);
            fake.finish_job(&name, true, message);
        }
    }
    fake.advance(10);
}

/// Runs the rollout of a new revision to the end; at `crash_at` the status write of that reconcile is
/// lost (the operator died after acting, before recording) and a fresh operator takes over.
async fn rollout_with_crash(crash_at: Option<usize>) -> (FakeApi, usize) {
    let fake = FakeApi::new();
    bring_up(&fake, true).await;
    set_spec(&fake, json!({ "api": { "image": "ghcr.io/mutr/api:2" } }));
    let rev2 = revision(&fake);
    for i in 0..40 {
        let ctx = fake.context();
        let before = fake.status("mutr");
        fake.reconcile(&ctx, "mutr").await;
        if crash_at == Some(i) {
            fake.edit("mutrdeployments", "mutr", |md| md["status"] = before);
        }
        let status = fake.status("mutr");
        let done = status["phase"] == "Healthy"
            && status["colors"][status["activeColor"].as_str().unwrap()]["revision"] == json!(rev2);
        if done {
            return (fake, i);
        }
        cluster_step(&fake);
    }
    panic!(
        "no convergence (crash at {crash_at:?}): {:#}",
        fake.status("mutr")
    );
}

#[tokio::test]
async fn a_lost_status_write_at_any_step_converges_to_the_same_end() {
    let (_, steps) = rollout_with_crash(None).await;
    assert!(steps >= 5, "the rollout takes several reconciles ({steps})");
    for crash_at in 0..=steps {
        let (fake, _) = rollout_with_crash(Some(crash_at)).await;
        let status = fake.status("mutr");
        assert_eq!(status["activeColor"], "green", "crash at {crash_at}");
        assert_eq!(
            status["lastSwitchover"]["recovery"]["returnedToPending"], 3,
            "crash at {crash_at}"
        );
        assert_eq!(
            fake.replicas("mutr-api-blue"),
            Some(0),
            "crash at {crash_at}"
        );
        let jobs = fake.names("jobs");
        for prefix in ["mutr-activate-2-green", "mutr-recover-2-blue"] {
            assert_eq!(
                jobs.iter().filter(|j| j.as_str() == prefix).count(),
                1,
                "crash at {crash_at}: {jobs:?}"
            );
        }
        assert_eq!(
            jobs.len(),
            5,
            "two migrations, two activations, one recovery, whatever the crash ({crash_at}): {jobs:?}"
        );
    }
}

#[tokio::test]
async fn the_stable_service_never_selects_a_colour_without_ready_pods() {
    let fake = FakeApi::new();
    fake.put(
        "mutrdeployments",
        mutr_deployment("ghcr.io/mutr/api:1", true),
    );
    let ctx = fake.context();
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(&format!("mutr-migrate-{}", revision(&fake)), true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&["mutr-api-blue"], false);
    for _ in 0..3 {
        fake.reconcile(&ctx, "mutr").await;
        assert_eq!(fake.selects("mutr-api"), None);
    }
    let md: MutrDeployment = fake.md("mutr");
    assert_eq!(
        md.status.unwrap().switchover.unwrap().step.to_string(),
        "Switching"
    );
    let _ = NS;
}

#[tokio::test]
async fn the_controller_reconciles_what_it_lists_and_stops_on_shutdown() {
    let fake = FakeApi::new();
    fake.put(
        "mutrdeployments",
        mutr_deployment("ghcr.io/mutr/api:1", false),
    );
    let migrate = format!("mutr-migrate-{}", revision(&fake));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(mutr_operator::k8s::run(
        fake.context(),
        Some(NS.into()),
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while fake.get("jobs", &migrate).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller never reconciled: {:?}",
            fake.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(fake.status("mutr")["phase"], "Migrating");
    let log = fake.log();
    for watched in ["mutrdeployments", "deployments", "services", "jobs"] {
        assert!(
            log.iter().any(|l| l == &format!("GET {watched}")),
            "{watched} is listed: {log:?}"
        );
    }
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), controller)
        .await
        .expect("graceful shutdown")
        .unwrap();
}

#[tokio::test]
async fn with_an_autoscaler_the_operator_leaves_the_replica_count_to_it() {
    let fake = FakeApi::new();
    bring_up(&fake, false).await;
    let ctx = fake.context();
    set_spec(
        &fake,
        json!({ "api": { "autoscaling": { "minReplicas": 2, "maxReplicas": 6 } } }),
    );
    fake.reconcile(&ctx, "mutr").await;
    let hpa = fake
        .get("horizontalpodautoscalers", "mutr-api-blue")
        .expect("an HPA for the serving colour");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "mutr-api-blue");
    // The HPA scales up; the operator's next reconciles leave its count alone.
    fake.edit("deployments", "mutr-api-blue", |d| {
        d["spec"]["replicas"] = json!(5);
    });
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.replicas("mutr-api-blue"), Some(5));
    assert_eq!(fake.status("mutr")["phase"], "Healthy");
    // Autoscaling off: the HPA goes and the operator owns the count again.
    set_spec(&fake, json!({ "api": { "autoscaling": null } }));
    fake.reconcile(&ctx, "mutr").await;
    assert!(
        fake.get("horizontalpodautoscalers", "mutr-api-blue")
            .is_none()
    );
    assert_eq!(fake.replicas("mutr-api-blue"), Some(2));
}
