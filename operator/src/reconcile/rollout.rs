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

    pub(super) fn steady_or_rollout(&mut self) -> bool {
        let revision = self.revision.clone();
        let aborted = self.spec().strategy_aborts(&revision);
        if self.plan.status.active_color.is_none()
            && let Some(serving) = self.input.observed.active_service
            && self.observed(serving).has_ready_pods()
        {
            // The stable Service already selects a serving colour but the status does not say so
            // (the resource was re-created without its status): adopt it rather than deploy anew.
            self.status().active_color = Some(serving);
            self.event(Severity::Normal, Reason::Adopted, format!("{serving} already serves through the stable Service; adopting it as the active colour"));
        }
        let Some(active) = self.plan.status.active_color else {
            // First creation: migrate, then a switchover from nothing to the requested colour.
            if aborted {
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
                self.event(Severity::Warning, Reason::RolloutAborted, format!("rollout of revision {revision} aborted; {preview} scaled down, {active} keeps serving"));
            }
            self.status().phase = Phase::Aborted;
            self.degraded = Some(Degraded {
                reason: Reason::RolloutAborted,
                message: format!(
                    "rollout of revision {revision} was aborted; change the spec or clear spec.abortedRevision to roll out again"
                ),
            });
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
                    Severity::Normal,
                    Reason::PreviewReady,
                    format!(
                        "{preview} runs revision {revision} and is ready; promote it to switch"
                    ),
                );
            }
            self.status().phase = Phase::AwaitingPromotion;
            self.progress(
                Reason::AwaitingPromotion,
                format!("{preview} runs revision {revision} and is ready for promotion"),
            );
        } else {
            if self.input.status.phase != Phase::PreviewStarting {
                self.event(
                    Severity::Normal,
                    Reason::PreviewStarting,
                    format!("starting revision {revision} on {preview}"),
                );
            }
            self.status().phase = Phase::PreviewStarting;
            self.progress(
                Reason::PreviewStarting,
                format!(
                    "{preview} (revision {revision}) starting: {}",
                    observed.describe()
                ),
            );
        }
        false
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
