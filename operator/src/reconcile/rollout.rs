//! Outside a switchover: first creation (migrate, then switch from nothing), a new revision on the
//! idle colour (migrate, preview, promotion when requested and ready), steady state, abort before
//! promotion, and adoption of a colour that already serves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::events::{Reason, Severity};
use super::observed::JobState;
use super::plan::{
    AfterFailure, ColorAction, Degraded, JobRequest, PROGRESS_REQUEUE, Planner, Progressing,
    condition,
};
use crate::crd::{Color, Phase, SwitchoverProgress, SwitchoverStep};

impl Planner<'_> {
    pub(super) fn start_switchover(
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
            Reason::RollingBack
        } else {
            Reason::SwitchoverStarted
        };
        self.event(
            Severity::Normal,
            reason,
            format!("switching from {from_text} to {to} (revision {revision})"),
        );
    }

    pub(super) fn migration_done(&mut self) -> Option<bool> {
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
                    Severity::Normal,
                    Reason::MigrationSucceeded,
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
                self.status().phase = Phase::Failed;
                self.fail(Reason::MigrationFailed, note, AfterFailure::Stops);
                None
            }
            JobState::Absent | JobState::Running => {
                if self.input.observed.migration == JobState::Absent
                    && self.input.status.phase != Phase::Migrating
                {
                    self.event(
                        Severity::Normal,
                        Reason::MigrationStarted,
                        format!("running mutr-api migrate for revision {revision}"),
                    );
                }
                self.plan.jobs.push(JobRequest::Migrate {
                    revision: revision.clone(),
                });
                self.status().phase = Phase::Migrating;
                self.progress(
                    Reason::Migrating,
                    format!("migration Job of revision {revision} is running"),
                );
                None
            }
        }
    }

    /// Outside a switchover: adopt a lost status, create, stay steady, or roll a new revision out.
    /// Returns true when a switchover started (the next step acts in the same pass).
    pub(super) fn steady_or_rollout(&mut self) -> bool {
        self.adopt_if_status_lost();
        let Some(active) = self.plan.status.active_color else {
            return self.first_creation();
        };
        let preview = active.other();
        self.plan.active_service = Some(active);
        self.plan.preview_service = Some(preview);
        if self.observed(active).revision() == Some(self.revision.as_str()) {
            self.steady(active);
            return false;
        }
        self.new_revision(active)
    }

    /// The stable Service already selects a serving colour but the status does not say so (the
    /// resource was re-created without its status): adopt it rather than deploy anew.
    fn adopt_if_status_lost(&mut self) {
        if self.plan.status.active_color.is_none()
            && let Some(serving) = self.input.observed.active_service
            && self.observed(serving).has_ready_pods()
        {
            self.status().active_color = Some(serving);
            self.event(
                Severity::Normal,
                Reason::Adopted,
                format!("{serving} already serves through the stable Service; adopting it as the active colour"),
            );
        }
    }

    /// First creation: migrate, then a switchover from nothing to the requested colour.
    fn first_creation(&mut self) -> bool {
        let revision = self.revision.clone();
        if self.spec().strategy_aborts(&revision) {
            self.status().phase = Phase::Aborted;
            self.degraded = Some(Degraded {
                reason: Reason::RolloutAborted,
                message: format!("revision {revision} was aborted"),
            });
            return false;
        }
        if self.migration_done() != Some(true) {
            return false;
        }
        let to = self.spec().active_color.unwrap_or(Color::Blue);
        self.start_switchover(None, to, revision, false);
        true
    }

    /// The active colour runs the spec's revision: apply it in place (replica changes) and keep the
    /// preview scaled down; a promotion request has nothing to promote.
    fn steady(&mut self, active: Color) {
        let preview = active.other();
        let (api, ai) = self.full();
        self.plan.set_color(active, ColorAction::Apply { api, ai });
        self.scale_to_zero_if_up(preview);
        self.status().phase = Phase::Healthy;
        if self.spec().active_color == Some(preview) && !self.spec().strategy.auto_promote {
            let note = format!(
                "{preview} runs no new revision: nothing to promote (spec revision {} already serves on {active})",
                self.revision
            );
            self.refuse(note);
        }
    }

    /// A new revision goes to the idle colour: abort, migrate, start the preview, and promote it when
    /// it is requested and ready.
    fn new_revision(&mut self, active: Color) -> bool {
        let preview = active.other();
        let revision = self.revision.clone();
        if self.spec().strategy_aborts(&revision) {
            self.abort_preview(active);
            return false;
        }
        if self.migration_done() != Some(true) {
            return false;
        }
        let (api, ai) = self.spec().preview_replicas();
        self.plan.set_color(preview, ColorAction::Apply { api, ai });
        let observed = self.observed(preview).clone();
        let ready = observed.is_ready_with(&revision, api, ai);
        let auto = self.spec().strategy.auto_promote;
        let requested = auto || self.spec().active_color == Some(preview);
        if ready && requested {
            self.start_switchover(Some(active), preview, revision, false);
            return true;
        }
        if requested && !auto {
            let note = format!(
                "{preview} (revision {revision}) is not ready: {}",
                observed.describe()
            );
            self.status().phase = Phase::PreviewStarting;
            self.refuse(note);
            self.plan.requeue_after = PROGRESS_REQUEUE;
            return false;
        }
        let (phase, event, note, progress) = if ready {
            (
                Phase::AwaitingPromotion,
                Reason::PreviewReady,
                format!("{preview} runs revision {revision} and is ready; promote it to switch"),
                (
                    Reason::AwaitingPromotion,
                    format!("{preview} runs revision {revision} and is ready for promotion"),
                ),
            )
        } else {
            (
                Phase::PreviewStarting,
                Reason::PreviewStarting,
                format!("starting revision {revision} on {preview}"),
                (
                    Reason::PreviewStarting,
                    format!(
                        "{preview} (revision {revision}) starting: {}",
                        observed.describe()
                    ),
                ),
            )
        };
        // One Event when the phase is entered, not one per reconcile.
        if self.input.status.phase != phase {
            self.event(Severity::Normal, event, note);
        }
        self.status().phase = phase;
        self.progress(progress.0, progress.1);
        false
    }

    /// `spec.abortedRevision` names the new revision before its promotion: the preview scales down.
    fn abort_preview(&mut self, active: Color) {
        let preview = active.other();
        let revision = self.revision.clone();
        self.scale_to_zero_if_up(preview);
        if self.input.status.phase != Phase::Aborted {
            self.event(
                Severity::Warning,
                Reason::RolloutAborted,
                format!("rollout of revision {revision} aborted; {preview} scaled down, {active} keeps serving"),
            );
        }
        self.status().phase = Phase::Aborted;
        self.degraded = Some(Degraded {
            reason: Reason::RolloutAborted,
            message: format!(
                "rollout of revision {revision} was aborted; change the spec or clear spec.abortedRevision to roll out again"
            ),
        });
    }

    /// A promotion request that cannot be honoured: a condition and an Event, nothing changed.
    pub(super) fn refuse(&mut self, note: String) {
        if !self.had_condition(condition::PROGRESSING, Reason::PromotionRefused) {
            self.event(Severity::Warning, Reason::PromotionRefused, note.clone());
        }
        self.progressing = Progressing {
            active: self.plan.status.phase != Phase::Healthy,
            reason: Reason::PromotionRefused,
            message: note,
        };
    }
}
