//! The reasons of the Events the operator publishes and of its conditions, as one enum: a reason is
//! part of the interface (`kubectl describe`, alerts, `kubectl mutr wait` print them), so each is
//! spelt once, here.

use std::fmt;

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident ),+ $(,)?) => {
        /// A CamelCase reason of an Event or a condition.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $name, )+
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),+];

            /// The reason as written in Events and conditions.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$name => stringify!($name), )+
                }
            }
        }
    };
}

reasons! {
    // ---- rollout (Events and the Progressing condition)
    /// The migration Job of a new revision was created.
    MigrationStarted,
    /// The migration Job is running (condition only).
    Migrating,
    /// The migration Job succeeded.
    MigrationSucceeded,
    /// The migration Job failed; no pod of the revision was started.
    MigrationFailed,
    /// The new revision's pods are starting on the preview colour.
    PreviewStarting,
    /// The preview is ready (Event).
    PreviewReady,
    /// The preview is ready and waits for a promotion (condition).
    AwaitingPromotion,
    /// A promotion was requested while it could not be honoured.
    PromotionRefused,
    /// A colour already served through the stable Service and was adopted.
    Adopted,
    /// The rollout of the spec's revision was aborted.
    RolloutAborted,
    // ---- switchover
    /// A switchover started.
    SwitchoverStarted,
    /// A rollback switchover started (abort after traffic moved).
    RollingBack,
    /// The switchover waits for the target to be available at full size (condition).
    Switching,
    /// An abort dropped the switchover before traffic moved.
    SwitchoverAborted,
    /// A newer spec replaced the switchover before traffic moved.
    SwitchoverSuperseded,
    /// The stable Service selects the target.
    TrafficSwitched,
    /// The activate Job is running (condition).
    Activating,
    /// The target is the active colour in the database.
    Activated,
    /// The activate Job failed.
    ActivationFailed,
    /// The old colour waits out the scale-down delay (condition).
    ScaleDownPending,
    /// The old colour is being scaled down.
    ScalingDown,
    /// The old colour's pods are draining (condition).
    Draining,
    /// The recover Job is running (condition).
    Recovering,
    /// The recover Job returned the old colour's claims.
    Recovered,
    /// The recover Job left nodes PROCESSING.
    RecoveryIncomplete,
    /// The recover Job succeeded without its JSON summary.
    RecoverySummaryMissing,
    /// The recover Job failed.
    RecoveryFailed,
    /// The switchover finished.
    SwitchoverCompleted,
    /// An abort came after the old colour scaled down.
    AbortRefused,
    // ---- steady conditions
    /// Nothing in flight (Progressing).
    Idle,
    /// The active colour has ready pods (Ready).
    Serving,
    /// The active colour has no ready pods (Ready, Degraded).
    ActiveUnavailable,
    /// No colour serves yet (Ready).
    NotDeployed,
    /// Nothing failed (Degraded).
    AsExpected,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something went as planned.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

/// An Event to publish on the `MutrDeployment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `Normal` or `Warning`.
    pub severity: Severity,
    /// Why.
    pub reason: Reason,
    /// What happened, for a person reading `kubectl describe`.
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_camel_case_words() {
        let mut seen = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            let s = reason.as_str();
            assert!(s.chars().next().is_some_and(char::is_uppercase), "{s}");
            assert!(s.chars().all(char::is_alphanumeric), "{s}");
            assert!(seen.insert(s), "{s} twice");
        }
    }
}
