//! MUTR operator: the `MutrDeployment` custom resource, its blue/green reconciler and the
//! `kubectl mutr` plugin. `reconcile` is the pure core (state machine, desired objects), `k8s` the
//! adapter that observes the cluster and applies what the core decides.
#![forbid(unsafe_code)]

pub mod cli;
pub mod crd;
pub mod error;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod reconcile;
pub mod render;
pub mod server;
