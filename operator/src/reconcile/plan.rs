//! The blue/green state machine as one pure function, [`plan`]: from the spec, the last status and
//! what is observed in the cluster, decide what each colour, Service and Job should be, the next
//! status and the Events to publish. No I/O: the adapter (`crate::k8s`) observes, calls [`plan`],
//! and applies the result.
//!
//! Every decision is derived again from the stored status and fresh observations, and every action
//! is declarative (apply, scale to, create if absent), so an operator restarted after any partial
//! application of a plan computes the same plan again and converges. The steps live beside this
//! file: `rollout.rs` (first creation, migration, preview, promotion requests) and `switchover.rs`
//! (one function per switchover step).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::events::{Decision, Reason, Severity};
use super::observed::{ColorObserved, Observed};
use crate::crd::{
    Color, ColorStatus, MutrDeploymentSpec, MutrDeploymentStatus, Phase, RecoverySummary,
};

/// Requeue interval while something is in flight that no watch reports (pods going away, delays).
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue interval when everything is settled.
pub const IDLE_REQUEUE: Duration = Duration::from_secs(300);

/// What to do with one colour's Deployments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorAction {
    /// Leave them alone.
    Keep,
    /// Server-side apply the spec's revision with these replica counts (creates them if absent).
    Apply {
        /// API replicas.
        api: i32,
        /// AI server replicas.
        ai: i32,
    },
    /// Keep their template (another revision) and set the replica counts.
    Scale {
        /// API replicas.
        api: i32,
        /// AI server replicas.
        ai: i32,
    },
}

/// A Job the reconciler makes sure exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRequest {
    /// `mutr-api migrate` with the image of `revision` (the spec's).
    Migrate {
        /// Revision being rolled out.
        revision: String,
    },
    /// `mutr-api activate --color <color>`.
    Activate {
        /// Switchover number.
        id: i64,
        /// Colour to record as active.
        color: Color,
    },
    /// `mutr-api recover --from-color <from>`.
    Recover {
        /// Switchover number.
        id: i64,
        /// Colour whose claims go back to PENDING.
        from: Color,
    },
}

/// Everything one reconcile should do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Blue's Deployments.
    pub blue: ColorAction,
    /// Green's Deployments.
    pub green: ColorAction,
    /// Colour the stable Service should select; `None` leaves it as it is (or not created yet).
    pub active_service: Option<Color>,
    /// Colour the preview Service should select; `None` leaves it as it is.
    pub preview_service: Option<Color>,
    /// Jobs that must exist.
    pub jobs: Vec<JobRequest>,
    /// The status to write.
    pub status: MutrDeploymentStatus,
    /// Events to publish.
    pub events: Vec<Decision>,
    /// When to look again even if nothing changes.
    pub requeue_after: Duration,
}

impl Plan {
    /// The action for one colour.
    #[must_use]
    pub fn color(&self, color: Color) -> ColorAction {
        match color {
            Color::Blue => self.blue,
            Color::Green => self.green,
        }
    }

    pub(super) fn set_color(&mut self, color: Color, action: ColorAction) {
        match color {
            Color::Blue => self.blue = action,
            Color::Green => self.green = action,
        }
    }
}

/// Inputs of [`plan`].
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// `metadata.generation` of the resource.
    pub generation: i64,
    /// Its spec.
    pub spec: &'a MutrDeploymentSpec,
    /// Its last written status (default when none).
    pub status: &'a MutrDeploymentStatus,
    /// What the cluster holds.
    pub observed: &'a Observed,
    /// The current time.
    pub now: Timestamp,
}

/// Condition types.
pub mod condition {
    /// The active colour serves with ready pods.
    pub const READY: &str = "Ready";
    /// A rollout or switchover is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something failed and needs a person.
    pub const DEGRADED: &str = "Degraded";
}

/// The `Progressing` condition being decided.
#[derive(Clone, Debug)]
pub(super) struct Progressing {
    pub(super) active: bool,
    pub(super) reason: Reason,
    pub(super) message: String,
}

/// The `Degraded` condition being decided, when something failed.
#[derive(Clone, Debug)]
pub(super) struct Degraded {
    pub(super) reason: Reason,
    pub(super) message: String,
}

/// Whether a failure leaves the rollout `Progressing` (it resumes when the failed Job is deleted) or
/// stops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// Progressing stays true: the step retries once a person deletes the failed Job.
    KeepsProgressing,
    /// Progressing turns false: the rollout stopped.
    Stops,
    /// Progressing is left as the step set it.
    Unchanged,
}

/// The state of one run of [`plan`]: the inputs and the plan being built.
pub(super) struct Planner<'a> {
    pub(super) input: Input<'a>,
    pub(super) revision: String,
    pub(super) plan: Plan,
    pub(super) progressing: Progressing,
    pub(super) degraded: Option<Degraded>,
}

/// Decides what the reconciler should do next. Pure and deterministic in its inputs.
#[must_use]
pub fn plan(input: Input<'_>) -> Plan {
    let revision = input.spec.revision();
    let mut status = input.status.clone();
    status.revision = Some(revision.clone());
    status.observed_generation = Some(input.generation);
    let mut planner = Planner {
        input,
        revision,
        plan: Plan {
            blue: ColorAction::Keep,
            green: ColorAction::Keep,
            active_service: None,
            preview_service: None,
            jobs: Vec::new(),
            status,
            events: Vec::new(),
            requeue_after: IDLE_REQUEUE,
        },
        progressing: Progressing {
            active: false,
            reason: Reason::Idle,
            message: String::new(),
        },
        degraded: None,
    };
    // A step that completes lets the next one act in the same pass; the bound only guards against a
    // bug that would loop.
    for _ in 0..8 {
        if !planner.step() {
            break;
        }
    }
    planner.finish()
}

impl Planner<'_> {
    pub(super) fn spec(&self) -> &MutrDeploymentSpec {
        self.input.spec
    }

    pub(super) fn observed(&self, color: Color) -> &ColorObserved {
        self.input.observed.color(color)
    }

    pub(super) fn status(&mut self) -> &mut MutrDeploymentStatus {
        &mut self.plan.status
    }

    pub(super) fn event(&mut self, severity: Severity, reason: Reason, note: String) {
        self.plan.events.push(Decision {
            severity,
            reason,
            note,
        });
    }

    pub(super) fn progress(&mut self, reason: Reason, message: String) {
        self.progressing = Progressing {
            active: true,
            reason,
            message,
        };
        self.plan.requeue_after = PROGRESS_REQUEUE;
    }

    /// The last written status already carries a condition with this reason.
    pub(super) fn had_condition(&self, type_: &str, reason: Reason) -> bool {
        self.input
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.reason == reason.as_str())
    }

    /// A failure that needs a person: one Warning Event (only when the last status did not report
    /// it already, so a failure that stands does not publish an Event per reconcile), `Degraded`
    /// with the reason, and `Progressing` as `after` says.
    pub(super) fn fail(&mut self, reason: Reason, note: String, after: AfterFailure) {
        if !self.had_condition(condition::DEGRADED, reason) {
            self.event(Severity::Warning, reason, note.clone());
        }
        match after {
            AfterFailure::KeepsProgressing | AfterFailure::Stops => {
                self.progressing = Progressing {
                    active: after == AfterFailure::KeepsProgressing,
                    reason,
                    message: note.clone(),
                };
            }
            AfterFailure::Unchanged => {}
        }
        self.degraded = Some(Degraded {
            reason,
            message: note,
        });
    }

    /// `Apply` when the colour runs (or will run) the spec's revision, else `Scale` keeping its template.
    pub(super) fn size(&self, color: Color, api: i32, ai: i32) -> ColorAction {
        let observed = self.observed(color);
        let at_spec = match observed.revision() {
            Some(rev) => rev == self.revision,
            None => observed.api.is_none() && observed.ai.is_none(),
        };
        if at_spec {
            ColorAction::Apply { api, ai }
        } else if observed.api.is_none() && observed.ai.is_none() {
            ColorAction::Keep
        } else {
            ColorAction::Scale { api, ai }
        }
    }

    /// The counts of a serving colour: the spec's replicas, or the autoscalers' minimums.
    pub(super) fn full(&self) -> (i32, i32) {
        self.spec().serving_replicas()
    }

    pub(super) fn scale_to_zero_if_up(&mut self, color: Color) {
        if self.observed(color).is_scaled_up() {
            let action = self.size(color, 0, 0);
            self.plan.set_color(color, action);
        }
    }

    /// One transition. Returns true when the state changed and the next step should act too.
    fn step(&mut self) -> bool {
        match self.plan.status.switchover.clone() {
            Some(sw) => self.switchover(sw),
            None => self.steady_or_rollout(),
        }
    }

    fn finish(mut self) -> Plan {
        let observed = self.input.observed;
        // Never point the stable Service at a colour without ready pods: leave it where it is.
        if let Some(color) = self.plan.active_service
            && observed.active_service != Some(color)
            && !observed.color(color).has_ready_pods()
        {
            self.plan.active_service = None;
        }
        let status = &mut self.plan.status;
        status.preview_color = status.active_color.map(Color::other);
        for color in Color::ALL {
            let o = observed.color(color);
            let value = (o.api.is_some() || o.ai.is_some()).then(|| ColorStatus {
                revision: o.revision().map(str::to_owned),
                api_replicas: o.api.as_ref().map_or(0, |w| w.desired),
                api_ready_replicas: o.api.as_ref().map_or(0, |w| w.ready),
                ai_replicas: o.ai.as_ref().map_or(0, |w| w.desired),
                ai_ready_replicas: o.ai.as_ref().map_or(0, |w| w.ready),
                ready: o.revision().is_some_and(|r| o.is_ready_at(r)),
            });
            status.colors.set(color, value);
        }
        if status.switchover.is_some() {
            status.phase = Phase::Switching;
        }
        let active_ready = status
            .active_color
            .is_some_and(|c| observed.color(c).has_ready_pods());
        let (ready_status, ready_reason, ready_message) = match status.active_color {
            Some(c) if active_ready => {
                (true, Reason::Serving, format!("{c} serves with ready pods"))
            }
            Some(c) => (
                false,
                Reason::ActiveUnavailable,
                format!("{c} has no ready pods"),
            ),
            None => (
                false,
                Reason::NotDeployed,
                "no colour serves yet".to_owned(),
            ),
        };
        if status.active_color.is_some() && !active_ready && self.degraded.is_none() {
            self.degraded = Some(Degraded {
                reason: Reason::ActiveUnavailable,
                message: ready_message.clone(),
            });
        }
        let generation = self.input.generation;
        let now = self.input.now;
        set_condition(
            &mut status.conditions,
            condition::READY,
            ready_status,
            ready_reason.as_str(),
            &ready_message,
            generation,
            now,
        );
        let progressing = &self.progressing;
        let p_message = if progressing.message.is_empty() {
            "no rollout in progress"
        } else {
            progressing.message.as_str()
        };
        set_condition(
            &mut status.conditions,
            condition::PROGRESSING,
            progressing.active,
            progressing.reason.as_str(),
            p_message,
            generation,
            now,
        );
        let (d_status, d_reason, d_message) = match &self.degraded {
            Some(d) => (true, d.reason, d.message.as_str()),
            None => (false, Reason::AsExpected, "nothing failed"),
        };
        set_condition(
            &mut status.conditions,
            condition::DEGRADED,
            d_status,
            d_reason.as_str(),
            d_message,
            generation,
            now,
        );
        if status.switchover.is_some() || self.progressing.active {
            self.plan.requeue_after = self.plan.requeue_after.min(PROGRESS_REQUEUE);
        }
        self.plan
    }
}

impl MutrDeploymentSpec {
    /// `spec.abortedRevision` names this revision.
    #[must_use]
    pub fn strategy_aborts(&self, revision: &str) -> bool {
        self.aborted_revision.as_deref() == Some(revision)
    }
}

/// Parses the recover Job's JSON summary (the last line that parses, so stray output is tolerated).
#[must_use]
pub fn parse_summary(message: &str) -> Option<RecoverySummary> {
    message
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line.trim()).ok())
}

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: Some(generation),
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}
