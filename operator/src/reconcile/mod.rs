//! The pure core of the operator: what the cluster should hold for a `MutrDeployment`, computed
//! from plain values without any I/O. [`plan`] is the blue/green state machine (spec, last status,
//! observations → actions, status, Events); [`resources`] builds the objects those actions apply;
//! [`desired`] turns a plan into the list of operations the adapter (`crate::k8s`) performs and
//! `mutr-operator render` prints.

pub mod desired;
pub mod events;
pub mod observed;
pub mod plan;
pub mod resources;
mod rollout;
mod switchover;

#[cfg(test)]
mod tests;

pub use events::{Decision, Reason, Severity};
pub use observed::{ColorObserved, JobState, Observed, WorkloadObserved};
pub use plan::{
    ColorAction, IDLE_REQUEUE, Input, JobRequest, PROGRESS_REQUEUE, Plan, condition, parse_summary,
    plan, set_condition,
};
