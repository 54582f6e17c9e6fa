//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager, server-side apply with
//! conflict detection): only the replica holding the Lease runs the controller.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// A held or awaited leadership: `receiver` turns true while this replica leads.
pub struct Leadership {
    /// Leadership state.
    pub receiver: watch::Receiver<bool>,
    /// The background task renewing the Lease.
    pub task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Starts competing for the Lease.
///
/// # Errors
/// The Lease could not be read or created.
pub async fn start(client: Client, config: &LeaseConfig) -> Result<Leadership, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration.as_secs().max(2))
        .with_grace(
            config
                .grace
                .as_secs()
                .clamp(1, config.duration.as_secs().max(2) - 1),
        )
        .build()
        .await?;
    let (receiver, task) = manager.watch().await;
    info!(lease = %config.name, identity = %config.identity, "competing for leadership");
    Ok(Leadership { receiver, task })
}

/// Waits until this replica leads. Returns false if the election task stopped.
pub async fn acquired(receiver: &mut watch::Receiver<bool>) -> bool {
    receiver.wait_for(|leading| *leading).await.is_ok()
}

/// Completes when this replica stops leading (or the election task stops).
pub async fn lost(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|leading| !*leading).await;
}
