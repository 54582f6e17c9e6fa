//! The Kubernetes adapter: the kube-runtime controller and everything that talks to the API
//! server. One reconcile observes the cluster (`observe.rs`), asks the pure core what to do
//! ([`crate::reconcile::plan`], then [`crate::reconcile::desired::operations`]), performs those
//! operations (`apply.rs`: server-side apply with one field manager and owner references, Jobs
//! created once), publishes the plan's Events and writes the status through the status subresource.

mod apply;
mod observe;

pub use apply::{perform, publish, write_status};
pub use observe::observe;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, debug, info_span, warn};

use crate::crd::{FIELD_MANAGER, MutrDeployment};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::reconcile::resources::{Names, labels};
use crate::reconcile::{Input, desired};

/// How long to wait before retrying a reconcile that failed.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(15);

/// The clock the reconciler reads; tests replace it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events on the reconciled objects.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    /// The current time.
    pub clock: Clock,
}

impl Context {
    /// A context with the system clock; `instance` names this replica in Events.
    #[must_use]
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            clock: Arc::new(Timestamp::now),
        }
    }
}

/// Reconciles one `MutrDeployment`.
///
/// # Errors
/// A Kubernetes API call failed; the controller retries after [`error_policy`]'s delay.
pub async fn reconcile(md: Arc<MutrDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let namespace = md
        .namespace()
        .ok_or_else(|| Error::NoNamespace(md.name_any()))?;
    let span = info_span!("reconcile", namespace = %namespace, name = %md.name_any());
    let result = reconcile_inner(&md, &ctx, &namespace)
        .instrument(span)
        .await;
    ctx.metrics.reconciled(started.elapsed());
    result
}

/// Decides when to retry a failed reconcile.
pub fn error_policy(md: Arc<MutrDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = %md.name_any(), error = %error, source = ?std::error::Error::source(error), "reconcile failed");
    ctx.metrics.failed();
    Action::requeue(ERROR_REQUEUE)
}

async fn reconcile_inner(md: &MutrDeployment, ctx: &Context, namespace: &str) -> Result<Action> {
    let names = Names::of(md);
    let status = md.status.clone().unwrap_or_default();
    let observed = observe(&ctx.client, namespace, md, &names, &status).await?;
    let plan = crate::reconcile::plan(Input {
        generation: md.metadata.generation.unwrap_or_default(),
        spec: &md.spec,
        status: &status,
        observed: &observed,
        now: (ctx.clock)(),
    });
    debug!(?plan, "plan");
    perform(
        &ctx.client,
        namespace,
        &desired::operations(md, &plan, &observed),
    )
    .await?;
    publish(ctx, md, &plan).await;
    if plan.status.switchover_count > status.switchover_count {
        ctx.metrics.switchover_started();
    }
    if plan.status.last_switchover != status.last_switchover {
        ctx.metrics.switchover_completed();
    }
    if plan.status != status {
        write_status(&ctx.client, namespace, md, &plan.status).await?;
    }
    Ok(Action::requeue(plan.requeue_after))
}

/// Runs the controller until `shutdown` completes. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!("{}=mutr-operator", labels::MANAGED_BY));
    Controller::new(
        api::<MutrDeployment>(&client, ns),
        watcher::Config::default(),
    )
    .owns(api::<Deployment>(&client, ns), owned.clone())
    .owns(api::<Service>(&client, ns), owned.clone())
    .owns(api::<Job>(&client, ns), owned)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => debug!(%object, "reconciled"),
            Err(error) => debug!(%error, "controller event"),
        }
    })
    .await;
}
