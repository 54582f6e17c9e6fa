//! MUTR operator: the `MutrDeployment` custom resource, its blue/green reconciler and the
//! `kubectl mutr` plugin.
#![forbid(unsafe_code)]

pub mod cli;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod reconcile;
pub mod resources;
pub mod server;
