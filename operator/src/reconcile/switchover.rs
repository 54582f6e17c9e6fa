//! A switchover in flight, one function per step (`SwitchoverStep`): the target scales to full size
//! and the stable Service flips (`Switching`), the activate Job records the new active colour
//! (`Activating`), the scale-down delay (`ScaleDownPending`), the old colour drains (`Draining`), and
//! the recover Job returns what it left claimed (`Recovering`). Before the steps: an abort, which
//! rolls back while the old colour still runs, and a newer spec, which supersedes a switchover that
//! has not moved traffic yet.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::events::{Reason, Severity};
use super::observed::JobState;
use super::plan::{AfterFailure, JobRequest, PROGRESS_REQUEUE, Planner, parse_summary};
use crate::crd::{
    Color, Phase, RecoverySummary, SwitchoverProgress, SwitchoverRecord, SwitchoverStep,
};

/// What a step decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// The state changed: plan the next step in the same pass.
    Again,
    /// Wait for the cluster.
    Wait,
}

impl Next {
    fn again(self) -> bool {
        self == Next::Again
    }
}

impl Planner<'_> {
    pub(super) fn switchover(&mut self, sw: SwitchoverProgress) -> bool {
        self.status().phase = Phase::Switching;
        if let Some(next) = self.abort_if_requested(&sw) {
            return next.again();
        }
        if let Some(next) = self.supersede_if_spec_changed(&sw) {
            return next.again();
        }
        let next = match sw.step {
            SwitchoverStep::Switching => self.switching(&sw),
            SwitchoverStep::Activating => self.activating(&sw),
            SwitchoverStep::ScaleDownPending => self.scale_down_pending(&sw),
            SwitchoverStep::Draining => self.draining(&sw),
            SwitchoverStep::Recovering => self.recovering(&sw),
        };
        next.again()
    }

    fn set_step(&mut self, step: SwitchoverStep) {
        if let Some(s) = self.status().switchover.as_mut() {
            s.step = step;
        }
    }

    /// `spec.abortedRevision` names the target revision: before traffic moved the switchover is
    /// dropped; while the old colour still runs a rollback switchover starts; after that the abort
    /// is refused (and the switchover goes on).
    fn abort_if_requested(&mut self, sw: &SwitchoverProgress) -> Option<Next> {
        if sw.rollback || !self.spec().strategy_aborts(&sw.revision) {
            return None;
        }
        let to = sw.to;
        match (sw.step, sw.from) {
            (SwitchoverStep::Switching, _) => {
                self.event(
                    Severity::Warning,
                    Reason::SwitchoverAborted,
                    format!("switchover to {to} aborted before traffic moved"),
                );
                self.status().switchover = None;
                Some(Next::Again)
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
                Some(Next::Again)
            }
            _ => {
                let note = format!(
                    "abort of revision {} refused: the old colour is already scaled down; change the spec back to roll back",
                    sw.revision
                );
                self.fail(Reason::AbortRefused, note, AfterFailure::Unchanged);
                None
            }
        }
    }

    /// A newer revision before traffic moved: drop this switchover, roll out the newer one.
    fn supersede_if_spec_changed(&mut self, sw: &SwitchoverProgress) -> Option<Next> {
        if sw.step != SwitchoverStep::Switching
            || sw.rollback
            || sw.revision == self.revision
            || sw.from.is_none()
        {
            return None;
        }
        self.event(
            Severity::Normal,
            Reason::SwitchoverSuperseded,
            format!(
                "spec changed to revision {} before the switch to {}",
                self.revision, sw.to
            ),
        );
        self.status().switchover = None;
        Some(Next::Again)
    }

    /// The target scales to its full counts; the stable Service flips once it is available there.
    fn switching(&mut self, sw: &SwitchoverProgress) -> Next {
        let to = sw.to;
        let (api, ai) = self.full();
        let action = self.size(to, api, ai);
        self.plan.set_color(to, action);
        self.plan.active_service = sw.from.or(self.input.observed.active_service);
        self.plan.preview_service = sw.from.map(|_| to);
        let target = self.observed(to).clone();
        if target.is_ready_with(&sw.revision, api, ai) {
            self.event(
                Severity::Normal,
                Reason::TrafficSwitched,
                format!("{} now selects {to}", self.spec().service.name),
            );
            self.set_step(SwitchoverStep::Activating);
            return Next::Again;
        }
        self.progress(
            Reason::Switching,
            format!(
                "scaling {to} to full size before traffic moves: {}",
                target.describe()
            ),
        );
        Next::Wait
    }

    /// The stable Service selects the target; the activate Job records it as the active colour.
    fn activating(&mut self, sw: &SwitchoverProgress) -> Next {
        let to = sw.to;
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
                    Severity::Normal,
                    Reason::Activated,
                    format!("{to} is the active colour in the database; it claims analysis work"),
                );
                match sw.from {
                    Some(_) => {
                        let delay = SignedDuration::from_secs(i64::from(
                            self.spec().strategy.scale_down_delay_seconds,
                        ));
                        let at = self.input.now.checked_add(delay).unwrap_or(self.input.now);
                        if let Some(s) = self.status().switchover.as_mut() {
                            s.step = SwitchoverStep::ScaleDownPending;
                            s.scale_down_at = Some(Time(at));
                        }
                    }
                    None => self.finish_switchover(sw, None),
                }
                Next::Again
            }
            JobState::Failed { message } => {
                let note =
                    format!("activate Job for {to} failed: {message}; delete the Job to retry");
                self.fail(
                    Reason::ActivationFailed,
                    note,
                    AfterFailure::KeepsProgressing,
                );
                Next::Wait
            }
            JobState::Absent | JobState::Running => {
                self.progress(
                    Reason::Activating,
                    format!("recording {to} as the active colour"),
                );
                Next::Wait
            }
        }
    }

    /// The old colour keeps running until `scale_down_at` (an abort now rolls back to it).
    fn scale_down_pending(&mut self, sw: &SwitchoverProgress) -> Next {
        let from = sw
            .from
            .expect("only switchovers with an old colour wait to scale down");
        self.plan.active_service = Some(sw.to);
        self.plan.preview_service = Some(from);
        let at = sw.scale_down_at.as_ref().map_or(self.input.now, |t| t.0);
        if self.input.now >= at {
            self.event(
                Severity::Normal,
                Reason::ScalingDown,
                format!("scaling {from} down; its pods drain"),
            );
            self.set_step(SwitchoverStep::Draining);
            return Next::Again;
        }
        let wait = at.duration_since(self.input.now);
        let wait = Duration::try_from(wait).unwrap_or(PROGRESS_REQUEUE);
        self.progress(
            Reason::ScaleDownPending,
            format!("{from} scales down at {at} (abort now rolls back to it)"),
        );
        self.plan.requeue_after = wait.max(Duration::from_millis(100)) + Duration::from_millis(50);
        Next::Wait
    }

    /// The old colour is at zero; wait until none of its pods is left.
    fn draining(&mut self, sw: &SwitchoverProgress) -> Next {
        let from = sw.from.expect("only switchovers with an old colour drain");
        self.plan.active_service = Some(sw.to);
        self.plan.preview_service = Some(from);
        let action = self.size(from, 0, 0);
        self.plan.set_color(from, action);
        let pods = self.observed(from).pods;
        if pods == 0 {
            self.set_step(SwitchoverStep::Recovering);
            return Next::Again;
        }
        self.progress(
            Reason::Draining,
            format!("waiting for {pods} pod(s) of {from} to drain and go"),
        );
        Next::Wait
    }

    /// The recover Job returns the old colour's claims to PENDING, only while none of its pods lives.
    fn recovering(&mut self, sw: &SwitchoverProgress) -> Next {
        let from = sw
            .from
            .expect("only switchovers with an old colour recover");
        self.plan.active_service = Some(sw.to);
        self.plan.preview_service = Some(from);
        let action = self.size(from, 0, 0);
        self.plan.set_color(from, action);
        if self.observed(from).pods > 0 {
            // Recovering while old pods live would analyse their claims twice.
            self.set_step(SwitchoverStep::Draining);
            return Next::Again;
        }
        self.plan.jobs.push(JobRequest::Recover { id: sw.id, from });
        match self.input.observed.recover.clone() {
            JobState::Succeeded { message } => {
                let summary = message.as_deref().and_then(parse_summary);
                self.report_recovery(from, summary.as_ref());
                self.plan.jobs.clear();
                self.finish_switchover(sw, summary);
                Next::Again
            }
            JobState::Failed { message } => {
                let note = format!(
                    "recover Job for {from} failed: {message}; delete the Job to retry (expired leases also return the claims)"
                );
                self.fail(Reason::RecoveryFailed, note, AfterFailure::KeepsProgressing);
                Next::Wait
            }
            JobState::Absent | JobState::Running => {
                self.progress(
                    Reason::Recovering,
                    format!("returning claims of {from} to PENDING"),
                );
                Next::Wait
            }
        }
    }

    fn report_recovery(&mut self, from: Color, summary: Option<&RecoverySummary>) {
        match summary {
            Some(s) if s.still_processing > 0 => self.event(
                Severity::Warning,
                Reason::RecoveryIncomplete,
                format!(
                    "{} node(s) claimed by {from} are still PROCESSING; their leases return them",
                    s.still_processing
                ),
            ),
            Some(s) => self.event(
                Severity::Normal,
                Reason::Recovered,
                format!(
                    "{} node(s) left by {from} returned to PENDING",
                    s.returned_to_pending
                ),
            ),
            None => self.event(
                Severity::Warning,
                Reason::RecoverySummaryMissing,
                "recover Job succeeded without a JSON summary".to_owned(),
            ),
        }
    }

    pub(super) fn finish_switchover(
        &mut self,
        sw: &SwitchoverProgress,
        recovery: Option<RecoverySummary>,
    ) {
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
            Severity::Normal,
            Reason::SwitchoverCompleted,
            format!("{} serves revision {}", sw.to, sw.revision),
        );
    }
}
