//! The state machine as a table: (spec, stored status, observed cluster) → (phase, step, Service
//! colour, colour actions, Jobs, Event), each row also replayed to show that a restart plans the same.

use super::*;
use crate::crd::{
    Color, MutrDeployment, MutrDeploymentSpec, MutrDeploymentStatus, Phase, SwitchoverProgress,
    SwitchoverStep,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

fn spec(auto: bool, active: Option<&str>) -> MutrDeploymentSpec {
    let md: MutrDeployment = serde_json::from_value(json!({
        "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment", "metadata": { "name": "m" },
        "spec": {
            "api": { "image": "api:2", "replicas": 2 }, "aiServer": { "image": "ai:2" },
            "database": { "name": "db" }, "redis": { "name": "rd" }, "activeColor": active,
            "strategy": { "autoPromote": auto, "scaleDownDelaySeconds": 30 },
        },
    }))
    .unwrap();
    md.spec
}

fn up(revision: &str, api: i32, ready: bool) -> ColorObserved {
    let w = |n: i32| WorkloadObserved {
        revision: Some(revision.into()),
        desired: n,
        ready: if ready { n } else { 0 },
        available: if ready { n } else { 0 },
        updated: n,
        current: true,
        replicas_applied: false,
    };
    ColorObserved {
        api: Some(w(api)),
        ai: Some(w(1)),
        pods: if api > 0 { 3 } else { 0 },
    }
}

fn now() -> Timestamp {
    "2026-11-26T00:00:00Z".parse().unwrap()
}

fn active(color: Color, migrated: &str) -> MutrDeploymentStatus {
    MutrDeploymentStatus {
        active_color: Some(color),
        migrated_revision: Some(migrated.into()),
        switchover_count: 1,
        ..Default::default()
    }
}

fn switching(step: SwitchoverStep, scale_down_in: Option<i64>) -> MutrDeploymentStatus {
    let rev = spec(false, None).revision();
    MutrDeploymentStatus {
        active_color: Some(
            if step == SwitchoverStep::Switching || step == SwitchoverStep::Activating {
                Color::Blue
            } else {
                Color::Green
            },
        ),
        migrated_revision: Some(rev.clone()),
        switchover_count: 2,
        switchover: Some(SwitchoverProgress {
            id: 2,
            from: Some(Color::Blue),
            to: Color::Green,
            revision: rev,
            step,
            rollback: false,
            started_at: Time(now()),
            scale_down_at: scale_down_in
                .map(|s| Time(now().checked_add(SignedDuration::from_secs(s)).unwrap())),
        }),
        ..Default::default()
    }
}

struct Case {
    name: &'static str,
    spec: MutrDeploymentSpec,
    status: MutrDeploymentStatus,
    observed: Observed,
    // Expected:
    phase: Phase,
    step: Option<SwitchoverStep>,
    service: Option<Color>,
    green: ColorAction,
    blue: ColorAction,
    jobs: Vec<JobRequest>,
    event: Option<Reason>,
}

#[test]
fn switchover_table() {
    let rev = spec(false, None).revision();
    let r = rev.as_str();
    let blue_v1 = up("old", 2, true);
    let cases = vec![
        Case {
            name: "first creation waits for the migration",
            spec: spec(false, None),
            status: MutrDeploymentStatus::default(),
            observed: Observed::default(),
            phase: Phase::Migrating,
            step: None,
            service: None,
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Migrate {
                revision: rev.clone(),
            }],
            event: Some(Reason::MigrationStarted),
        },
        Case {
            name: "first creation deploys blue after the migration",
            spec: spec(false, None),
            status: MutrDeploymentStatus::default(),
            observed: Observed {
                migration: JobState::Succeeded { message: None },
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Switching),
            service: None,
            green: ColorAction::Keep,
            blue: ColorAction::Apply { api: 2, ai: 1 },
            jobs: vec![],
            event: Some(Reason::SwitchoverStarted),
        },
        Case {
            name: "new revision goes to the idle colour at preview size",
            spec: spec(false, None),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: blue_v1.clone(),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::PreviewStarting,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Keep,
            jobs: vec![],
            event: Some(Reason::PreviewStarting),
        },
        Case {
            name: "promotion refused while green is not ready",
            spec: spec(false, Some("green")),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, false),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::PreviewStarting,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Keep,
            jobs: vec![],
            event: Some(Reason::PromotionRefused),
        },
        Case {
            name: "promotion of a ready green flips traffic and activates it",
            spec: spec(false, Some("green")),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Activating),
            service: Some(Color::Green),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Activate {
                id: 2,
                color: Color::Green,
            }],
            event: Some(Reason::TrafficSwitched),
        },
        Case {
            name: "old colour waits out the scale-down delay",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::ScaleDownPending, Some(10)),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::ScaleDownPending),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![],
            event: None,
        },
        Case {
            name: "old colour scales down after the delay; recovery waits for its pods",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::ScaleDownPending, Some(0)),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Draining),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![],
            event: Some(Reason::ScalingDown),
        },
        Case {
            name: "recovery runs once the old pods are gone",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Draining, Some(0)),
            observed: Observed {
                blue: up("old", 0, true),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Recovering),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![JobRequest::Recover {
                id: 2,
                from: Color::Blue,
            }],
            event: None,
        },
        Case {
            name: "recovering goes back to draining if old pods reappear",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Recovering, Some(0)),
            observed: Observed {
                blue: up("old", 1, true),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Draining),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![],
            event: None,
        },
        Case {
            name: "abort while activating rolls back to blue",
            spec: MutrDeploymentSpec {
                aborted_revision: Some(rev.clone()),
                ..spec(false, Some("blue"))
            },
            status: switching(SwitchoverStep::Activating, None),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Activating),
            service: Some(Color::Blue),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 2, ai: 1 },
            jobs: vec![JobRequest::Activate {
                id: 3,
                color: Color::Blue,
            }],
            event: Some(Reason::RollingBack),
        },
        Case {
            name: "a lost status adopts the colour the stable Service selects",
            spec: spec(false, None),
            status: MutrDeploymentStatus::default(),
            observed: Observed {
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Green),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Keep,
            jobs: vec![],
            event: Some(Reason::Adopted),
        },
        Case {
            name: "a deleted Deployment of the serving colour is recreated, not rolled out",
            spec: spec(false, None),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: ColorObserved {
                    ai: None,
                    ..up(r, 2, true)
                },
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Keep,
            blue: ColorAction::Apply { api: 2, ai: 1 },
            jobs: vec![],
            event: None,
        },
    ];
    run(cases);
}

/// Plans each case and checks the expectations, determinism at that step, and stability.
#[track_caller]
fn run(cases: Vec<Case>) {
    for case in cases {
        let observed = case.observed.clone();
        let input = Input {
            generation: 2,
            spec: &case.spec,
            status: &case.status,
            observed: &observed,
            now: now(),
        };
        let plan = plan(input);
        let name = case.name;
        assert_eq!(plan.status.phase, case.phase, "{name}");
        assert_eq!(
            plan.status.switchover.as_ref().map(|s| s.step),
            case.step,
            "{name}"
        );
        let service = plan.active_service.or(observed.active_service);
        assert_eq!(service, case.service, "{name}");
        assert_eq!((plan.green, plan.blue), (case.green, case.blue), "{name}");
        assert_eq!(plan.jobs, case.jobs, "{name}");
        match case.event {
            Some(event) => assert!(
                plan.events.iter().any(|e| e.reason == event),
                "{name}: {:?}",
                plan.events
            ),
            None => assert!(plan.events.is_empty(), "{name}: {:?}", plan.events),
        }
        // A restart at this step (same stored status, same cluster) decides exactly the same.
        assert_eq!(super::plan(input), plan, "{name}: not deterministic");
        // Applying the plan and planning again from the new status is stable: no job or
        // selector flips back.
        let again = super::plan(Input {
            status: &plan.status,
            ..input
        });
        assert!(
            again.jobs.iter().all(|j| plan.jobs.contains(j)
                || matches!(j, JobRequest::Recover { .. } | JobRequest::Activate { .. })),
            "{name}"
        );
    }
}

fn with(
    mut spec: MutrDeploymentSpec,
    f: impl FnOnce(&mut MutrDeploymentSpec),
) -> MutrDeploymentSpec {
    f(&mut spec);
    spec
}

fn failed(reason: Reason) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let mut conditions = Vec::new();
    set_condition(
        &mut conditions,
        condition::DEGRADED,
        true,
        reason.as_str(),
        "x",
        1,
        now(),
    );
    conditions
}

fn first_switch(step: SwitchoverStep) -> MutrDeploymentStatus {
    let rev = spec(false, None).revision();
    MutrDeploymentStatus {
        migrated_revision: Some(rev.clone()),
        switchover_count: 1,
        switchover: Some(SwitchoverProgress {
            id: 1,
            from: None,
            to: Color::Blue,
            revision: rev,
            step,
            rollback: false,
            started_at: Time(now()),
            scale_down_at: None,
        }),
        ..Default::default()
    }
}

fn gone(revision: &str) -> ColorObserved {
    ColorObserved {
        pods: 0,
        ..up(revision, 0, true)
    }
}

fn draining(revision: &str, pods: u32) -> ColorObserved {
    ColorObserved {
        pods,
        ..up(revision, 0, true)
    }
}

/// The branches the first table leaves out: every way out of every step, and the Events that must
/// be published once and only once.
#[test]
fn switchover_table_every_branch() {
    let rev = spec(false, None).revision();
    let r = rev.as_str();
    let blue_v1 = up("old", 2, true);
    let aborted = |s: MutrDeploymentSpec| with(s, |s| s.aborted_revision = Some(rev.clone()));
    let summary = |still: i64| {
        Some(format!(
            "{{\"fromColor\":\"blue\",\"returnedToPending\":2,\"stillProcessing\":{still}}}"
        ))
    };
    let cases = vec![
        // ---- rollout
        Case {
            name: "without migrations the first creation switches at once",
            spec: with(spec(false, None), |s| s.strategy.migrations = false),
            status: MutrDeploymentStatus::default(),
            observed: Observed::default(),
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Switching),
            service: None,
            green: ColorAction::Keep,
            blue: ColorAction::Apply { api: 2, ai: 1 },
            jobs: vec![],
            event: Some(Reason::SwitchoverStarted),
        },
        Case {
            name: "a failed migration stops the rollout with one Event",
            spec: spec(false, None),
            status: MutrDeploymentStatus::default(),
            observed: Observed {
                migration: JobState::Failed {
                    message: "boom".into(),
                },
                ..Default::default()
            },
            phase: Phase::Failed,
            step: None,
            service: None,
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Migrate {
                revision: rev.clone(),
            }],
            event: Some(Reason::MigrationFailed),
        },
        Case {
            name: "a migration failure already reported publishes nothing more",
            spec: spec(false, None),
            status: MutrDeploymentStatus {
                phase: Phase::Failed,
                conditions: failed(Reason::MigrationFailed),
                ..Default::default()
            },
            observed: Observed {
                migration: JobState::Failed {
                    message: "boom".into(),
                },
                ..Default::default()
            },
            phase: Phase::Failed,
            step: None,
            service: None,
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Migrate {
                revision: rev.clone(),
            }],
            event: None,
        },
        Case {
            name: "a running migration is not announced twice",
            spec: spec(false, None),
            status: MutrDeploymentStatus {
                phase: Phase::Migrating,
                ..Default::default()
            },
            observed: Observed {
                migration: JobState::Running,
                ..Default::default()
            },
            phase: Phase::Migrating,
            step: None,
            service: None,
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Migrate {
                revision: rev.clone(),
            }],
            event: None,
        },
        Case {
            name: "an aborted revision is not deployed on first creation",
            spec: aborted(spec(false, None)),
            status: MutrDeploymentStatus::default(),
            observed: Observed::default(),
            phase: Phase::Aborted,
            step: None,
            service: None,
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![],
            event: None,
        },
        Case {
            name: "steady: a promotion without a new revision is refused",
            spec: spec(false, Some("green")),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: up(r, 2, true),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Keep,
            blue: ColorAction::Apply { api: 2, ai: 1 },
            jobs: vec![],
            event: Some(Reason::PromotionRefused),
        },
        Case {
            name: "steady: a leftover preview is scaled down, its template kept",
            spec: spec(false, None),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: up(r, 2, true),
                green: up("old", 2, true),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Scale { api: 0, ai: 0 },
            blue: ColorAction::Apply { api: 2, ai: 1 },
            jobs: vec![],
            event: None,
        },
        Case {
            name: "abort before promotion scales the preview down",
            spec: aborted(spec(false, None)),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Aborted,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Apply { api: 0, ai: 0 },
            blue: ColorAction::Keep,
            jobs: vec![],
            event: Some(Reason::RolloutAborted),
        },
        Case {
            name: "a ready preview waits for its promotion",
            spec: spec(false, None),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::AwaitingPromotion,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Keep,
            jobs: vec![],
            event: Some(Reason::PreviewReady),
        },
        Case {
            name: "autoPromote switches as soon as the preview is ready",
            spec: spec(true, None),
            status: active(Color::Blue, r),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Activating),
            service: Some(Color::Green),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Activate {
                id: 2,
                color: Color::Green,
            }],
            event: Some(Reason::TrafficSwitched),
        },
        // ---- switchover
        Case {
            name: "abort before traffic moved drops the switchover",
            spec: aborted(spec(false, Some("green"))),
            status: switching(SwitchoverStep::Switching, None),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, false),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Aborted,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Apply { api: 0, ai: 0 },
            blue: ColorAction::Keep,
            jobs: vec![],
            event: Some(Reason::SwitchoverAborted),
        },
        Case {
            name: "abort after the old colour scaled down is refused; the switchover goes on",
            spec: aborted(spec(false, Some("green"))),
            status: switching(SwitchoverStep::Draining, Some(0)),
            observed: Observed {
                blue: gone("old"),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Recovering),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![JobRequest::Recover {
                id: 2,
                from: Color::Blue,
            }],
            event: Some(Reason::AbortRefused),
        },
        Case {
            name: "a newer spec before the flip supersedes the switchover",
            spec: with(spec(false, Some("green")), |s| s.api.image = "api:3".into()),
            status: switching(SwitchoverStep::Switching, None),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, false),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Migrating,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Migrate {
                revision: with(spec(false, None), |s| s.api.image = "api:3".into()).revision(),
            }],
            event: Some(Reason::SwitchoverSuperseded),
        },
        Case {
            name: "the flip waits until the target is available at full size",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Switching, None),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, false),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Switching),
            service: Some(Color::Blue),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Keep,
            jobs: vec![],
            event: None,
        },
        Case {
            name: "activating the first colour finishes the first switchover",
            spec: spec(false, None),
            status: first_switch(SwitchoverStep::Activating),
            observed: Observed {
                blue: up(r, 2, true),
                active_service: Some(Color::Blue),
                activate: JobState::Succeeded { message: None },
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Keep,
            blue: ColorAction::Apply { api: 2, ai: 1 },
            jobs: vec![JobRequest::Activate {
                id: 1,
                color: Color::Blue,
            }],
            event: Some(Reason::SwitchoverCompleted),
        },
        Case {
            name: "activation moves on to the scale-down delay",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Activating, None),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                activate: JobState::Succeeded { message: None },
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::ScaleDownPending),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Activate {
                id: 2,
                color: Color::Green,
            }],
            event: Some(Reason::Activated),
        },
        Case {
            name: "a failed activate Job degrades and waits for a person",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Activating, None),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                activate: JobState::Failed {
                    message: "db down".into(),
                },
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Activating),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Keep,
            jobs: vec![JobRequest::Activate {
                id: 2,
                color: Color::Green,
            }],
            event: Some(Reason::ActivationFailed),
        },
        Case {
            name: "abort during the scale-down delay rolls back",
            spec: aborted(spec(false, Some("blue"))),
            status: switching(SwitchoverStep::ScaleDownPending, Some(10)),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Activating),
            service: Some(Color::Blue),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 2, ai: 1 },
            jobs: vec![JobRequest::Activate {
                id: 3,
                color: Color::Blue,
            }],
            event: Some(Reason::RollingBack),
        },
        Case {
            name: "draining waits while old pods remain",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Draining, Some(0)),
            observed: Observed {
                blue: draining("old", 2),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Draining),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![],
            event: None,
        },
        Case {
            name: "a recovery summary finishes the switchover",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Recovering, Some(0)),
            observed: Observed {
                blue: gone("old"),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                recover: JobState::Succeeded {
                    message: summary(0),
                },
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Green),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![],
            event: Some(Reason::Recovered),
        },
        Case {
            name: "nodes still processing after recovery are reported",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Recovering, Some(0)),
            observed: Observed {
                blue: gone("old"),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                recover: JobState::Succeeded {
                    message: summary(2),
                },
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Green),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![],
            event: Some(Reason::RecoveryIncomplete),
        },
        Case {
            name: "a recover Job without a summary is reported",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Recovering, Some(0)),
            observed: Observed {
                blue: gone("old"),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                recover: JobState::Succeeded { message: None },
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Green),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![],
            event: Some(Reason::RecoverySummaryMissing),
        },
        Case {
            name: "a failed recover Job degrades and waits",
            spec: spec(false, Some("green")),
            status: switching(SwitchoverStep::Recovering, Some(0)),
            observed: Observed {
                blue: gone("old"),
                green: up(r, 2, true),
                active_service: Some(Color::Green),
                recover: JobState::Failed {
                    message: "db down".into(),
                },
                ..Default::default()
            },
            phase: Phase::Switching,
            step: Some(SwitchoverStep::Recovering),
            service: Some(Color::Green),
            green: ColorAction::Keep,
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![JobRequest::Recover {
                id: 2,
                from: Color::Blue,
            }],
            event: Some(Reason::RecoveryFailed),
        },
        Case {
            name: "the stable Service never moves to a colour without ready pods",
            spec: spec(false, None),
            status: active(Color::Green, r),
            observed: Observed {
                blue: blue_v1.clone(),
                green: up(r, 2, false),
                active_service: Some(Color::Blue),
                ..Default::default()
            },
            phase: Phase::Healthy,
            step: None,
            service: Some(Color::Blue),
            green: ColorAction::Apply { api: 2, ai: 1 },
            blue: ColorAction::Scale { api: 0, ai: 0 },
            jobs: vec![],
            event: None,
        },
    ];
    run(cases);
}

#[test]
fn conditions_say_why() {
    let rev = spec(false, None).revision();
    let condition = |plan: &Plan, type_: &str| {
        let c = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap();
        (c.status.clone(), c.reason.clone())
    };
    let input = |status, observed| (spec(false, None), status, observed);
    let (s, st, ob) = input(
        active(Color::Blue, &rev),
        Observed {
            blue: up(&rev, 2, false),
            active_service: Some(Color::Blue),
            ..Default::default()
        },
    );
    let p = plan(Input {
        generation: 1,
        spec: &s,
        status: &st,
        observed: &ob,
        now: now(),
    });
    assert_eq!(
        condition(&p, condition::READY),
        ("False".into(), "ActiveUnavailable".into())
    );
    assert_eq!(
        condition(&p, condition::DEGRADED),
        ("True".into(), "ActiveUnavailable".into())
    );
    let (s, st, ob) = input(MutrDeploymentStatus::default(), Observed::default());
    let p = plan(Input {
        generation: 1,
        spec: &s,
        status: &st,
        observed: &ob,
        now: now(),
    });
    assert_eq!(
        condition(&p, condition::READY),
        ("False".into(), "NotDeployed".into())
    );
    assert_eq!(
        condition(&p, condition::PROGRESSING),
        ("True".into(), "Migrating".into())
    );
    let (s, st, ob) = input(
        active(Color::Blue, &rev),
        Observed {
            blue: up(&rev, 2, true),
            active_service: Some(Color::Blue),
            ..Default::default()
        },
    );
    let p = plan(Input {
        generation: 1,
        spec: &s,
        status: &st,
        observed: &ob,
        now: now(),
    });
    assert_eq!(
        condition(&p, condition::READY),
        ("True".into(), "Serving".into())
    );
    assert_eq!(
        condition(&p, condition::PROGRESSING),
        ("False".into(), "Idle".into())
    );
    assert_eq!(
        condition(&p, condition::DEGRADED),
        ("False".into(), "AsExpected".into())
    );
}

#[test]
fn summary_parses_the_last_json_line() {
    let s = parse_summary(
        "starting\n{\"fromColor\":\"blue\",\"returnedToPending\":3,\"stillProcessing\":1}\n",
    )
    .unwrap();
    assert_eq!(
        (
            s.from_color.as_str(),
            s.returned_to_pending,
            s.still_processing
        ),
        ("blue", 3, 1)
    );
    assert!(parse_summary("no json here").is_none());
}

#[test]
fn conditions_keep_their_transition_time_while_unchanged() {
    let mut conditions = Vec::new();
    set_condition(&mut conditions, "Ready", true, "Serving", "ok", 1, now());
    let later = now().checked_add(SignedDuration::from_secs(60)).unwrap();
    set_condition(
        &mut conditions,
        "Ready",
        true,
        "Serving",
        "still ok",
        2,
        later,
    );
    assert_eq!(conditions[0].last_transition_time.0, now());
    set_condition(
        &mut conditions,
        "Ready",
        false,
        "ActiveUnavailable",
        "down",
        3,
        later,
    );
    assert_eq!(conditions[0].last_transition_time.0, later);
    assert_eq!(conditions.len(), 1);
}
