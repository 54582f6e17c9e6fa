//! Command line of `mutr-operator` and what each subcommand does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube::Client;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::k8s::{self, Context};
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::render::RenderArgs;
use crate::server::{self, Health};

/// Kubernetes operator for MutrDeployment: blue/green rollouts with drain and recovery.
#[derive(Debug, Parser)]
#[command(
    name = "mutr-operator",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Options of `run`, which runs when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
    /// Log format.
    #[arg(long, env = "MUTR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do; `run` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (clusters).
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the CustomResourceDefinition as YAML.
    Crd,
    /// Print the objects the operator would apply for a MutrDeployment (no cluster needed).
    Render(RenderArgs),
}

/// Options of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "MUTR_OPERATOR_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Watch only this namespace (all namespaces when empty).
    #[arg(long, env = "MUTR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Turn leader election off (only for a single replica, e.g. when running outside the cluster).
    #[arg(long, env = "MUTR_LEADER_ELECTION_DISABLED")]
    pub no_leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(long, env = "MUTR_LEASE_NAME", default_value = "mutr-operator-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace; `POD_NAMESPACE` from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Identity in the Lease and in Events (the pod name; `POD_NAME` from the downward API).
    #[arg(long, env = "POD_NAME", default_value_t = default_identity())]
    pub identity: String,
    /// How long the Lease lasts without renewal.
    #[arg(long, env = "MUTR_LEASE_DURATION", value_parser = crate::plugin::parse_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// How long before expiry the leader renews the Lease.
    #[arg(long, env = "MUTR_LEASE_GRACE", value_parser = crate::plugin::parse_duration, default_value = "5s")]
    pub lease_grace: Duration,
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "mutr-operator".into())
}

/// Sets up tracing.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// Errors of `mutr-operator run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster configuration.
    #[error("cannot build a Kubernetes client")]
    Client(#[source] kube::Error),
    /// The metrics address could not be bound.
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// Leader election could not start.
    #[error("leader election failed")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    /// Leadership was lost; the process exits so that a restarted replica competes again.
    #[error("lost leadership")]
    LostLeadership,
}

/// Runs the controller with its HTTP endpoint and leader election until SIGTERM.
///
/// # Errors
/// See [`RunError`].
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Metrics::new();
    let alive = Arc::new(AtomicBool::new(true));
    let listener = TcpListener::bind(args.addr)
        .await
        .map_err(|e| RunError::Listen(args.addr, e))?;
    info!(addr = %args.addr, "serving /healthz and /metrics");
    let health = Health {
        metrics: metrics.clone(),
        alive: alive.clone(),
    };
    let http = tokio::spawn(server::serve(listener, health, shutdown_signal()));
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        Some(args.identity.clone()),
    ));

    let result = if args.no_leader_election {
        k8s::run(ctx, args.watch_namespace.clone(), shutdown_signal()).await;
        Ok(())
    } else {
        let config = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: args.identity.clone(),
            duration: args.lease_duration,
            grace: args.lease_grace,
        };
        let mut leadership = leader::start(client, &config)
            .await
            .map_err(RunError::Lease)?;
        tokio::select! {
            acquired = leader::acquired(&mut leadership.receiver) => {
                if !acquired {
                    return Err(RunError::LostLeadership);
                }
                info!("leading: starting the controller");
                let lost = Arc::new(AtomicBool::new(false));
                let lost_flag = lost.clone();
                let receiver = leadership.receiver.clone();
                let stop = async move {
                    tokio::select! {
                        () = shutdown_signal() => {}
                        () = leader::lost(receiver) => lost_flag.store(true, Ordering::SeqCst),
                    }
                };
                k8s::run(ctx, args.watch_namespace.clone(), stop).await;
                if lost.load(Ordering::SeqCst) { Err(RunError::LostLeadership) } else { Ok(()) }
            }
            () = shutdown_signal() => Ok(()),
        }
    };
    alive.store(false, Ordering::Relaxed);
    if let Err(error) = &result {
        error!(%error, "controller stopped");
    }
    http.abort();
    result
}
