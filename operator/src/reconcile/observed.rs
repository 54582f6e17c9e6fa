//! What the reconciler saw in the cluster for one `MutrDeployment`, as plain values: the input of
//! [`super::plan`] besides the spec and the last status.

use serde::Deserialize;

use crate::crd::Color;

/// One Deployment as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
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
    /// The operator's server-side apply owns `spec.replicas` (it set the count itself); an
    /// autoscaler taking over needs the count handed over first (see `desired.rs`).
    pub replicas_applied: bool,
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ColorObserved {
    /// The API Deployment, if it exists.
    pub api: Option<WorkloadObserved>,
    /// The AI server Deployment, if it exists.
    pub ai: Option<WorkloadObserved>,
    /// Pods of the colour that still exist (terminating ones included).
    pub pods: u32,
}

impl ColorObserved {
    /// Revision of the colour's Deployments: the one they agree on, or the one that exists when the
    /// other was deleted (so that it is recreated at the same revision instead of starting a rollout).
    #[must_use]
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

    pub(crate) fn describe(&self) -> String {
        let part = |w: &Option<WorkloadObserved>| match w {
            Some(w) => format!("{}/{} ready", w.ready, w.desired),
            None => "absent".to_owned(),
        };
        format!("api {}, ai-server {}", part(&self.api), part(&self.ai))
    }
}

/// A Job as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "state")]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
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
