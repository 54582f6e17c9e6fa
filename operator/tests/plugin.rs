//! `kubectl mutr` verbs against the fake API server, on statuses the reconciler wrote.

mod common;

use clap::Parser;
use common::{FakeApi, NS, mutr_deployment};
use mutr_operator::error::Error;
use mutr_operator::plugin::{self, PluginCli};
use serde_json::{Value, json};

async fn run(fake: &FakeApi, args: &[&str]) -> (Result<(), Error>, String) {
    let mut argv = vec!["kubectl-mutr", "-n", NS];
    argv.extend_from_slice(args);
    let cli = PluginCli::parse_from(argv);
    let mut out = Vec::new();
    let result = plugin::run(fake.client(), &cli, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

/// Blue serves revision 1; revision 2 is migrated and starting on green (ready unless `unready`).
async fn preview(fake: &FakeApi, ready: bool) {
    fake.put(
        "mutrdeployments",
        mutr_deployment("ghcr.io/mutr/api:1", false),
    );
    let ctx = fake.context();
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(
        &format!("mutr-migrate-{}", fake.md("mutr").spec.revision()),
        true,
        None,
    );
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(&[], false);
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job("mutr-activate-1-blue", true, None);
    fake.reconcile(&ctx, "mutr").await;
    fake.edit("mutrdeployments", "mutr", |md| {
        md["spec"]["api"]["image"] = json!("ghcr.io/mutr/api:2");
        md["metadata"]["generation"] = json!(2);
    });
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(
        &format!("mutr-migrate-{}", fake.md("mutr").spec.revision()),
        true,
        None,
    );
    fake.reconcile(&ctx, "mutr").await;
    fake.kubelet(if ready { &[] } else { &["mutr-ai-green"] }, false);
    fake.reconcile(&ctx, "mutr").await;
}

#[tokio::test]
async fn status_prints_text_and_json() {
    let fake = FakeApi::new();
    preview(&fake, true).await;
    let (result, text) = run(&fake, &["status"]).await;
    result.unwrap();
    assert!(text.contains("Phase:     AwaitingPromotion"), "{text}");
    assert!(text.contains("Active:    blue    Preview: green"), "{text}");
    assert!(
        text.contains("Progressing  True   AwaitingPromotion"),
        "{text}"
    );
    let (result, json_out) = run(&fake, &["status", "mutr", "-o", "json"]).await;
    result.unwrap();
    let doc: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(
        (doc["name"].as_str(), doc["status"]["activeColor"].as_str()),
        (Some("mutr"), Some("blue"))
    );
    assert_eq!(doc["status"]["colors"]["green"]["ready"], true);
}

#[tokio::test]
async fn promote_requests_the_preview_colour_when_ready() {
    let fake = FakeApi::new();
    preview(&fake, true).await;
    let (result, text) = run(&fake, &["promote"]).await;
    result.unwrap();
    assert!(text.starts_with("promotion of green requested"), "{text}");
    assert_eq!(
        fake.get("mutrdeployments", "mutr").unwrap()["spec"]["activeColor"],
        "green"
    );
    // The operator acts on it.
    let ctx = fake.context();
    fake.reconcile(&ctx, "mutr").await;
    assert_eq!(fake.selects("mutr-api").as_deref(), Some("green"));
}

#[tokio::test]
async fn promote_is_refused_while_the_preview_is_not_ready() {
    let fake = FakeApi::new();
    preview(&fake, false).await;
    let (result, _) = run(&fake, &["promote", "mutr"]).await;
    let error = result.expect_err("refused");
    assert!(matches!(error, Error::Refused(_)), "{error}");
    assert!(error.to_string().contains("green is not ready"), "{error}");
    assert!(
        fake.get("mutrdeployments", "mutr").unwrap()["spec"]
            .get("activeColor")
            .is_none(),
        "nothing changed"
    );
}

#[tokio::test]
async fn abort_marks_the_revision_and_points_back_at_the_serving_colour() {
    let fake = FakeApi::new();
    preview(&fake, true).await;
    let revision = fake.md("mutr").spec.revision();
    let (result, text) = run(&fake, &["abort", "-o", "json"]).await;
    result.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc["action"],
        format!("rollout of revision {revision} aborted")
    );
    let spec = fake.get("mutrdeployments", "mutr").unwrap()["spec"].clone();
    assert_eq!(
        (
            spec["abortedRevision"].as_str(),
            spec["activeColor"].as_str()
        ),
        (Some(revision.as_str()), Some("blue"))
    );
    let (again, _) = run(&fake, &["abort"]).await;
    assert!(
        again.is_err(),
        "a second abort of the same revision is refused"
    );
}

#[tokio::test]
async fn wait_succeeds_fails_and_times_out() {
    let fake = FakeApi::new();
    preview(&fake, true).await;
    let (result, _) = run(
        &fake,
        &[
            "wait",
            "--for",
            "preview-ready",
            "--timeout",
            "1s",
            "--interval",
            "10ms",
        ],
    )
    .await;
    result.expect("green is ready");

    let (result, _) = run(
        &fake,
        &[
            "wait",
            "--for",
            "promoted",
            "--timeout",
            "200ms",
            "--interval",
            "20ms",
        ],
    )
    .await;
    assert!(
        matches!(result, Err(Error::Timeout(..))),
        "not promoted yet: {result:?}"
    );

    // Promote, let the operator and the cluster finish, and wait again.
    run(&fake, &["promote"]).await.0.unwrap();
    let ctx = fake.context();
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
    let (result, text) = run(
        &fake,
        &[
            "wait",
            "--for",
            "promoted",
            "--timeout",
            "1s",
            "--interval",
            "10ms",
        ],
    )
    .await;
    result.expect("promoted");
    assert!(text.contains("Last switchover: blue -> green"), "{text}");
}

#[tokio::test]
async fn wait_fails_fast_when_the_rollout_failed() {
    let fake = FakeApi::new();
    preview(&fake, true).await;
    fake.edit("mutrdeployments", "mutr", |md| {
        md["spec"]["api"]["image"] = json!("ghcr.io/mutr/api:broken");
        md["metadata"]["generation"] = json!(3);
    });
    let ctx = fake.context();
    fake.reconcile(&ctx, "mutr").await;
    fake.finish_job(
        &format!("mutr-migrate-{}", fake.md("mutr").spec.revision()),
        false,
        None,
    );
    fake.reconcile(&ctx, "mutr").await;
    let (result, _) = run(
        &fake,
        &[
            "wait",
            "--for",
            "promoted",
            "--timeout",
            "10m",
            "--interval",
            "10ms",
        ],
    )
    .await;
    let error = result.expect_err("a failed rollout ends the wait");
    assert!(error.to_string().contains("MigrationFailed"), "{error}");
}
