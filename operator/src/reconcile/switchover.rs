//! The blue/green state machine as one pure function: from the spec, the last status and what is
//! observed in the cluster, decide what each colour, Service and Job should be, the next status and
//! the Events to publish. No I/O: the reconciler observes, calls [`plan`], applies the result.
//!
//! Every decision is derived again from the stored status and fresh observations, and every action
//! is declarative (apply, scale to, create if absent), so an operator restarted after any partial
//! application of a plan computes the same plan again and converges.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{
    Color, ColorStatus, MutrDeploymentSpec, MutrDeploymentStatus, Phase, RecoverySummary,
    SwitchoverProgress, SwitchoverRecord, SwitchoverStep,
};

/// Requeue interval while something is in flight that no watch reports (pods going away, delays).
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue interval when everything is settled.
pub const IDLE_REQUEUE: Duration = Duration::from_secs(300);

/// One Deployment as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadObserved {
    /// Value of its `mutr.io/revision` label.
    pub revision: Option<String>,
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `status.updatedReplicas`.
    pub updated: i32,
    /// `status.observedGeneration >= metadata.generation`.
    pub current: bool,
}

impl WorkloadObserved {
    /// Every desired replica is updated and available, and the controller has seen the latest spec.
    #[must_use]
    pub fn is_available(&self) -> bool {
        self.current
            && self.desired > 0
            && self.updated >= self.desired
            && self.available >= self.desired
    }
}

/// Both Deployments and the pods of one colour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColorObserved {
    /// The API Deployment, if it exists.
    pub api: Option<WorkloadObserved>,
    /// The AI server Deployment, if it exists.
    pub ai: Option<WorkloadObserved>,
    /// Pods of the colour that still exist (terminating ones included).
    pub pods: u32,
}

impl ColorObserved {
    /// Revision of the colour's Deployments when both agree.
    #[must_use]
    /// Revision of the colour's Deployments: the one they agree on, or the one that exists when the
    /// other was deleted (so that it is recreated at the same revision instead of starting a rollout).
    pub fn revision(&self) -> Option<&str> {
        match (&self.api, &self.ai) {
            (Some(api), Some(ai)) if api.revision == ai.revision => api.revision.as_deref(),
            (Some(only), None) | (None, Some(only)) => only.revision.as_deref(),
            _ => None,
        }
    }

    /// Both Deployments run `revision` and are available at their desired counts.
    #[must_use]
    pub fn is_ready_at(&self, revision: &str) -> bool {
        self.revision() == Some(revision)
            && self
                .api
                .as_ref()
                .is_some_and(WorkloadObserved::is_available)
            && self.ai.as_ref().is_some_and(WorkloadObserved::is_available)
    }

    /// Both Deployments run `revision`, at least at the given counts, and are available.
    #[must_use]
    pub fn is_ready_with(&self, revision: &str, api: i32, ai: i32) -> bool {
        self.is_ready_at(revision)
            && self.api.as_ref().is_some_and(|w| w.desired >= api)
            && self.ai.as_ref().is_some_and(|w| w.desired >= ai)
    }

    /// At least one API pod and one AI pod are ready: a Service may select this colour.
    #[must_use]
    pub fn has_ready_pods(&self) -> bool {
        self.api.as_ref().is_some_and(|w| w.ready > 0)
            && self.ai.as_ref().is_some_and(|w| w.ready > 0)
    }

    /// Any replica is desired.
    #[must_use]
    pub fn is_scaled_up(&self) -> bool {
        self.api.as_ref().is_some_and(|w| w.desired > 0)
            || self.ai.as_ref().is_some_and(|w| w.desired > 0)
    }

    fn describe(&self) -> String {
        let part = |w: &Option<WorkloadObserved>| match w {
            Some(w) => format!("{}/{} ready", w.ready, w.desired),
            None => "absent".to_owned(),
        };
        format!("api {}, ai-server {}", part(&self.api), part(&self.ai))
    }
}

/// A Job as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum JobState {
    /// No such Job.
    #[default]
    Absent,
    /// Created and not finished.
    Running,
    /// Finished successfully, with the termination message of its pod when there is one.
    Succeeded {
        /// `state.terminated.message` of the Job's container.
        message: Option<String>,
    },
    /// Failed for good (backoff limit or deadline).
    Failed {
        /// Why, from the Job's `Failed` condition.
        message: String,
    },
}

/// What the reconciler saw in the cluster for one `MutrDeployment`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The blue colour.
    pub blue: ColorObserved,
    /// The green colour.
    pub green: ColorObserved,
    /// Colour the stable Service selects now.
    pub active_service: Option<Color>,
    /// The migration Job of the desired revision.
    pub migration: JobState,
    /// The activate Job of the switchover in flight.
    pub activate: JobState,
    /// The recover Job of the switchover in flight.
    pub recover: JobState,
}

impl Observed {
    /// One colour.
    #[must_use]
    pub fn color(&self, color: Color) -> &ColorObserved {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }
}

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

/// An Event to publish on the `MutrDeployment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened, for a person reading `kubectl describe`.
    pub note: String,
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

    fn set_color(&mut self, color: Color, action: ColorAction) {
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

struct Planner<'a> {
    input: Input<'a>,
    revision: String,
    plan: Plan,
    progressing: (bool, &'static str, String),
    degraded: Option<(&'static str, String)>,
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
        progressing: (false, "Idle", String::new()),
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
    fn spec(&self) -> &MutrDeploymentSpec {
        self.input.spec
    }

    fn observed(&self, color: Color) -> &ColorObserved {
        self.input.observed.color(color)
    }

    fn status(&mut self) -> &mut MutrDeploymentStatus {
        &mut self.plan.status
    }

    fn event(&mut self, warning: bool, reason: &'static str, note: String) {
        self.plan.events.push(Decision {
            warning,
            reason,
            note,
        });
    }

    fn progress(&mut self, reason: &'static str, message: String) {
        self.progressing = (true, reason, message);
        self.plan.requeue_after = PROGRESS_REQUEUE;
    }

    /// `Apply` when the colour runs (or will run) the spec's revision, else `Scale` keeping its template.
    fn size(&self, color: Color, api: i32, ai: i32) -> ColorAction {
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

    fn full(&self) -> (i32, i32) {
        (self.spec().api.replicas, self.spec().ai_server.replicas)
    }

    fn scale_to_zero_if_up(&mut self, color: Color) {
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

    fn start_switchover(
        &mut self,
        from: Option<Color>,
        to: Color,
        revision: String,
        rollback: bool,
    ) {
        let id = self.plan.status.switchover_count + 1;
        let now = self.input.now;
        let status = self.status();
        status.switchover_count = id;
        status.switchover = Some(SwitchoverProgress {
            id,
            from,
            to,
            revision: revision.clone(),
            step: SwitchoverStep::Switching,
            rollback,
            started_at: Time(now),
            scale_down_at: None,
        });
        let from_text = from.map_or_else(|| "nothing".to_owned(), |c| c.to_string());
        let reason = if rollback {
            "RollingBack"
        } else {
            "SwitchoverStarted"
        };
        self.event(
            false,
            reason,
            format!("switching from {from_text} to {to} (revision {revision})"),
        );
    }

    fn migration_done(&mut self) -> Option<bool> {
        if !self.spec().strategy.migrations
            || self.plan.status.migrated_revision.as_deref() == Some(&self.revision)
        {
            return Some(true);
        }
        let revision = self.revision.clone();
        match self.input.observed.migration.clone() {
            JobState::Succeeded { .. } => {
                self.status().migrated_revision = Some(revision.clone());
                self.event(
                    false,
                    "MigrationSucceeded",
                    format!("migrations of revision {revision} applied"),
                );
                Some(true)
            }
            JobState::Failed { message } => {
                self.plan.jobs.push(JobRequest::Migrate {
                    revision: revision.clone(),
                });
                let note = format!(
                    "migration Job of revision {revision} failed: {message}; its pods were not started. Fix the \
                     image or database and change the spec, or delete the Job to retry"
                );
                if self.input.status.phase != Phase::Failed {
                    self.event(true, "MigrationFailed", note.clone());
                }
                self.status().phase = Phase::Failed;
                self.degraded = Some(("MigrationFailed", note.clone()));
                self.progressing = (false, "MigrationFailed", note);
                None
            }
            JobState::Absent | JobState::Running => {
                if self.input.observed.migration == JobState::Absent
                    && self.input.status.phase != Phase::Migrating
                {
                    self.event(
                        false,
                        "MigrationStarted",
                        format!("running mutr-api migrate for revision {revision}"),
                    );
                }
                self.plan.jobs.push(JobRequest::Migrate {
                    revision: revision.clone(),
                });
                self.status().phase = Phase::Migrating;
                self.progress(
                    "Migrating",
                    format!("migration Job of revision {revision} is running"),
                );
                None
            }
        }
    }

    fn steady_or_rollout(&mut self) -> bool {
        let revision = self.revision.clone();
        let aborted = self.spec().strategy_aborts(&revision);
        if self.plan.status.active_color.is_none()
            && let Some(serving) = self.input.observed.active_service
            && self.observed(serving).has_ready_pods()
        {
            // The stable Service already selects a serving colour but the status does not say so
            // (the resource was re-created without its status): adopt it rather than deploy anew.
            self.status().active_color = Some(serving);
            self.event(false, "Adopted", format!("{serving} already serves through the stable Service; adopting it as the active colour"));
        }
        let Some(active) = self.plan.status.active_color else {
            // First creation: migrate, then a switchover from nothing to the requested colour.
            if aborted {
                self.status().phase = Phase::Aborted;
                self.degraded =
                    Some(("RolloutAborted", format!("revision {revision} was aborted")));
                return false;
            }
            if self.migration_done() != Some(true) {
                return false;
            }
            let to = self.spec().active_color.unwrap_or(Color::Blue);
            self.start_switchover(None, to, revision, false);
            return true;
        };
        let preview = active.other();
        self.plan.active_service = Some(active);
        self.plan.preview_service = Some(preview);
        let active_revision = self.observed(active).revision().map(str::to_owned);
        if active_revision.as_deref() == Some(revision.as_str()) {
            // Steady: apply the spec in place (replica changes) and keep the preview scaled down.
            let (api, ai) = self.full();
            self.plan.set_color(active, ColorAction::Apply { api, ai });
            self.scale_to_zero_if_up(preview);
            self.status().phase = Phase::Healthy;
            if self.spec().active_color == Some(preview) && !self.spec().strategy.auto_promote {
                let note = format!(
                    "{preview} runs no new revision: nothing to promote (spec revision {revision} already serves on {active})"
                );
                self.refuse(note);
            }
            return false;
        }
        // A new revision goes to the idle colour.
        if aborted {
            self.scale_to_zero_if_up(preview);
            if self.input.status.phase != Phase::Aborted {
                self.event(true, "RolloutAborted", format!("rollout of revision {revision} aborted; {preview} scaled down, {active} keeps serving"));
            }
            self.status().phase = Phase::Aborted;
            self.degraded = Some((
                "RolloutAborted",
                format!(
                    "rollout of revision {revision} was aborted; change the spec or clear spec.abortedRevision to roll out again"
                ),
            ));
            return false;
        }
        if self.migration_done() != Some(true) {
            return false;
        }
        let (api, ai) = self.spec().preview_replicas();
        self.plan.set_color(preview, ColorAction::Apply { api, ai });
        let observed = self.observed(preview).clone();
        let ready = observed.is_ready_with(&revision, api, ai);
        let requested =
            self.spec().strategy.auto_promote || self.spec().active_color == Some(preview);
        if ready && requested {
            self.start_switchover(Some(active), preview, revision, false);
            return true;
        }
        if requested && !self.spec().strategy.auto_promote {
            let note = format!(
                "{preview} (revision {revision}) is not ready: {}",
                observed.describe()
            );
            self.status().phase = Phase::PreviewStarting;
            self.refuse(note);
            self.plan.requeue_after = PROGRESS_REQUEUE;
            return false;
        }
        if ready {
            if self.input.status.phase != Phase::AwaitingPromotion {
                self.event(
                    false,
                    "PreviewReady",
                    format!(
                        "{preview} runs revision {revision} and is ready; promote it to switch"
                    ),
                );
            }
            self.status().phase = Phase::AwaitingPromotion;
            self.progress(
                "AwaitingPromotion",
                format!("{preview} runs revision {revision} and is ready for promotion"),
            );
        } else {
            if self.input.status.phase != Phase::PreviewStarting {
                self.event(
                    false,
                    "PreviewStarting",
                    format!("starting revision {revision} on {preview}"),
                );
            }
            self.status().phase = Phase::PreviewStarting;
            self.progress(
                "PreviewStarting",
                format!(
                    "{preview} (revision {revision}) starting: {}",
                    observed.describe()
                ),
            );
        }
        false
    }

    /// A promotion request that cannot be honoured: a condition and an Event, nothing changed.
    fn refuse(&mut self, note: String) {
        let already = self
            .input
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == condition::PROGRESSING && c.reason == "PromotionRefused");
        if !already {
            self.event(true, "PromotionRefused", note.clone());
        }
        self.progressing = (
            self.plan.status.phase != Phase::Healthy,
            "PromotionRefused",
            note,
        );
    }

    fn switchover(&mut self, sw: SwitchoverProgress) -> bool {
        self.status().phase = Phase::Switching;
        let to = sw.to;
        let (api, ai) = self.full();
        let aborted = self.spec().strategy_aborts(&sw.revision) && !sw.rollback;
        // Until the old colour scales down, an abort rolls back.
        if aborted {
            match (sw.step, sw.from) {
                (SwitchoverStep::Switching, _) => {
                    self.event(
                        true,
                        "SwitchoverAborted",
                        format!("switchover to {to} aborted before traffic moved"),
                    );
                    self.status().switchover = None;
                    return true;
                }
                (SwitchoverStep::Activating | SwitchoverStep::ScaleDownPending, Some(from))
                    if self.observed(from).has_ready_pods() =>
                {
                    let back = self
                        .observed(from)
                        .revision()
                        .unwrap_or_default()
                        .to_owned();
                    self.start_switchover(Some(to), from, back, true);
                    return true;
                }
                _ => {
                    let note = format!(
                        "abort of revision {} refused: the old colour is already scaled down; change the spec back to roll back",
                        sw.revision
                    );
                    if !self
                        .input
                        .status
                        .conditions
                        .iter()
                        .any(|c| c.reason == "AbortRefused")
                    {
                        self.event(true, "AbortRefused", note.clone());
                    }
                    self.degraded = Some(("AbortRefused", note));
                }
            }
        }
        // A newer revision before traffic moved: drop this switchover, roll out the newer one.
        if sw.step == SwitchoverStep::Switching
            && !sw.rollback
            && sw.revision != self.revision
            && sw.from.is_some()
        {
            self.event(
                false,
                "SwitchoverSuperseded",
                format!(
                    "spec changed to revision {} before the switch to {to}",
                    self.revision
                ),
            );
            self.status().switchover = None;
            return true;
        }
        let target = self.observed(to).clone();
        let set_step = |this: &mut Self, step: SwitchoverStep| {
            if let Some(s) = this.status().switchover.as_mut() {
                s.step = step;
            }
        };
        match sw.step {
            SwitchoverStep::Switching => {
                let action = self.size(to, api, ai);
                self.plan.set_color(to, action);
                self.plan.active_service = sw.from.or(self.input.observed.active_service);
                self.plan.preview_service = sw.from.map(|_| to);
                if target.is_ready_with(&sw.revision, api, ai) {
                    self.event(
                        false,
                        "TrafficSwitched",
                        format!("{} now selects {to}", self.spec().service.name),
                    );
                    set_step(self, SwitchoverStep::Activating);
                    return true;
                }
                self.progress(
                    "Switching",
                    format!(
                        "scaling {to} to full size before traffic moves: {}",
                        target.describe()
                    ),
                );
                false
            }
            SwitchoverStep::Activating => {
                self.plan.active_service = Some(to);
                self.plan.preview_service = sw.from;
                self.plan.jobs.push(JobRequest::Activate {
                    id: sw.id,
                    color: to,
                });
                match self.input.observed.activate.clone() {
                    JobState::Succeeded { .. } => {
                        self.status().active_color = Some(to);
                        self.event(
                            false,
                            "Activated",
                            format!(
                                "{to} is the active colour in the database; it claims analysis work"
                            ),
                        );
                        match sw.from {
                            Some(_) => {
                                let delay = SignedDuration::from_secs(i64::from(
                                    self.spec().strategy.scale_down_delay_seconds,
                                ));
                                let at =
                                    self.input.now.checked_add(delay).unwrap_or(self.input.now);
                                if let Some(s) = self.status().switchover.as_mut() {
                                    s.step = SwitchoverStep::ScaleDownPending;
                                    s.scale_down_at = Some(Time(at));
                                }
                            }
                            None => self.finish_switchover(&sw, None),
                        }
                        true
                    }
                    JobState::Failed { message } => {
                        let note = format!(
                            "activate Job for {to} failed: {message}; delete the Job to retry"
                        );
                        if !self
                            .input
                            .status
                            .conditions
                            .iter()
                            .any(|c| c.reason == "ActivationFailed")
                        {
                            self.event(true, "ActivationFailed", note.clone());
                        }
                        self.degraded = Some(("ActivationFailed", note.clone()));
                        self.progressing = (true, "ActivationFailed", note);
                        false
                    }
                    JobState::Absent | JobState::Running => {
                        self.progress("Activating", format!("recording {to} as the active colour"));
                        false
                    }
                }
            }
            SwitchoverStep::ScaleDownPending => {
                let from = sw
                    .from
                    .expect("only switchovers with an old colour wait to scale down");
                self.plan.active_service = Some(to);
                self.plan.preview_service = Some(from);
                let at = sw.scale_down_at.map_or(self.input.now, |t| t.0);
                if self.input.now >= at {
                    self.event(
                        false,
                        "ScalingDown",
                        format!("scaling {from} down; its pods drain"),
                    );
                    set_step(self, SwitchoverStep::Draining);
                    return true;
                }
                let wait = at.duration_since(self.input.now);
                let wait = Duration::try_from(wait).unwrap_or(PROGRESS_REQUEUE);
                self.progress(
                    "ScaleDownPending",
                    format!("{from} scales down at {at} (abort now rolls back to it)"),
                );
                self.plan.requeue_after =
                    wait.max(Duration::from_millis(100)) + Duration::from_millis(50);
                false
            }
            SwitchoverStep::Draining => {
                let from = sw.from.expect("only switchovers with an old colour drain");
                self.plan.active_service = Some(to);
                self.plan.preview_service = Some(from);
                let action = self.size(from, 0, 0);
                self.plan.set_color(from, action);
                let pods = self.observed(from).pods;
                if pods == 0 {
                    set_step(self, SwitchoverStep::Recovering);
                    return true;
                }
                self.progress(
                    "Draining",
                    format!("waiting for {pods} pod(s) of {from} to drain and go"),
                );
                false
            }
            SwitchoverStep::Recovering => {
                let from = sw
                    .from
                    .expect("only switchovers with an old colour recover");
                self.plan.active_service = Some(to);
                self.plan.preview_service = Some(from);
                let action = self.size(from, 0, 0);
                self.plan.set_color(from, action);
                if self.observed(from).pods > 0 {
                    // Recovering while old pods live would analyse their claims twice.
                    set_step(self, SwitchoverStep::Draining);
                    return true;
                }
                self.plan.jobs.push(JobRequest::Recover { id: sw.id, from });
                match self.input.observed.recover.clone() {
                    JobState::Succeeded { message } => {
                        let summary = message.as_deref().and_then(parse_summary);
                        match &summary {
                            Some(s) if s.still_processing > 0 => self.event(
                                true,
                                "RecoveryIncomplete",
                                format!("{} node(s) claimed by {from} are still PROCESSING; their leases return them", s.still_processing),
                            ),
                            Some(s) => self.event(
                                false,
                                "Recovered",
                                format!("{} node(s) left by {from} returned to PENDING", s.returned_to_pending),
                            ),
                            None => self.event(true, "RecoverySummaryMissing", "recover Job succeeded without a JSON summary".to_owned()),
                        }
                        self.plan.jobs.clear();
                        self.finish_switchover(&sw, summary);
                        true
                    }
                    JobState::Failed { message } => {
                        let note = format!(
                            "recover Job for {from} failed: {message}; delete the Job to retry (expired leases also return the claims)"
                        );
                        if !self
                            .input
                            .status
                            .conditions
                            .iter()
                            .any(|c| c.reason == "RecoveryFailed")
                        {
                            self.event(true, "RecoveryFailed", note.clone());
                        }
                        self.degraded = Some(("RecoveryFailed", note.clone()));
                        self.progressing = (true, "RecoveryFailed", note);
                        false
                    }
                    JobState::Absent | JobState::Running => {
                        self.progress(
                            "Recovering",
                            format!("returning claims of {from} to PENDING"),
                        );
                        false
                    }
                }
            }
        }
    }

    fn finish_switchover(&mut self, sw: &SwitchoverProgress, recovery: Option<RecoverySummary>) {
        let now = self.input.now;
        let status = self.status();
        status.active_color = Some(sw.to);
        status.switchover = None;
        status.last_switchover = Some(SwitchoverRecord {
            from: sw.from,
            to: sw.to,
            revision: sw.revision.clone(),
            rollback: sw.rollback,
            started_at: sw.started_at.clone(),
            finished_at: Time(now),
            recovery,
        });
        self.event(
            false,
            "SwitchoverCompleted",
            format!("{} serves revision {}", sw.to, sw.revision),
        );
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
            Some(c) if active_ready => (true, "Serving", format!("{c} serves with ready pods")),
            Some(c) => (false, "ActiveUnavailable", format!("{c} has no ready pods")),
            None => (false, "NotDeployed", "no colour serves yet".to_owned()),
        };
        if status.active_color.is_some() && !active_ready && self.degraded.is_none() {
            self.degraded = Some(("ActiveUnavailable", ready_message.clone()));
        }
        let generation = self.input.generation;
        let now = self.input.now;
        set_condition(
            &mut status.conditions,
            condition::READY,
            ready_status,
            ready_reason,
            &ready_message,
            generation,
            now,
        );
        let (p_status, p_reason, p_message) = &self.progressing;
        let p_message = if p_message.is_empty() {
            "no rollout in progress"
        } else {
            p_message.as_str()
        };
        set_condition(
            &mut status.conditions,
            condition::PROGRESSING,
            *p_status,
            p_reason,
            p_message,
            generation,
            now,
        );
        let (d_status, d_reason, d_message) = match &self.degraded {
            Some((reason, message)) => (true, *reason, message.as_str()),
            None => (false, "AsExpected", "nothing failed"),
        };
        set_condition(
            &mut status.conditions,
            condition::DEGRADED,
            d_status,
            d_reason,
            d_message,
            generation,
            now,
        );
        if status.switchover.is_some() || self.progressing.0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MutrDeployment;
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
        event: Option<&'static str>,
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
                event: Some("MigrationStarted"),
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
                event: Some("SwitchoverStarted"),
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
                event: Some("PreviewStarting"),
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
                event: Some("PromotionRefused"),
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
                event: Some("TrafficSwitched"),
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
                event: Some("ScalingDown"),
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
                event: Some("RollingBack"),
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
                event: Some("Adopted"),
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
            if let Some(event) = case.event {
                assert!(
                    plan.events.iter().any(|e| e.reason == event),
                    "{name}: {:?}",
                    plan.events
                );
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
}
