//! The controller: observe the cluster for one `MutrDeployment`, ask [`switchover::plan`] what to do,
//! apply it (server-side apply with one field manager, owner references), publish its Events and
//! write the status through the status subresource.

pub mod switchover;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::crd::{Color, FIELD_MANAGER, MutrDeployment, MutrDeploymentStatus};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::resources::{self, Names, labels};
use switchover::{
    ColorAction, ColorObserved, Input, JobRequest, JobState, Observed, Plan, WorkloadObserved,
};

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
    let plan = switchover::plan(Input {
        generation: md.metadata.generation.unwrap_or_default(),
        spec: &md.spec,
        status: &status,
        observed: &observed,
        now: (ctx.clock)(),
    });
    debug!(?plan, "plan");
    apply(&ctx.client, namespace, md, &names, &plan).await?;
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

fn workload(deployment: Option<Deployment>) -> Option<WorkloadObserved> {
    let d = deployment?;
    let generation = d.metadata.generation.unwrap_or_default();
    let revision = d.labels().get(labels::REVISION).cloned();
    let desired = d.spec.replicas.unwrap_or(1);
    let status = d.status.unwrap_or_default();
    Some(WorkloadObserved {
        revision,
        desired,
        ready: status.ready_replicas.unwrap_or_default(),
        available: status.available_replicas.unwrap_or_default(),
        updated: status.updated_replicas.unwrap_or_default(),
        current: status.observed_generation.unwrap_or_default() >= generation,
    })
}

async fn job_state(
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    name: &str,
    want_message: bool,
) -> Result<JobState> {
    let Some(job) = jobs
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get Job {name}")))?
    else {
        return Ok(JobState::Absent);
    };
    let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
    let is = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if let Some(failed) = is("Failed") {
        let message = [failed.reason.as_deref(), failed.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return Ok(JobState::Failed { message });
    }
    if is("Complete").is_none() {
        return Ok(JobState::Running);
    }
    let mut message = None;
    if want_message {
        let selector = format!("batch.kubernetes.io/job-name={name}");
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::kube(format!("list pods of Job {name}")))?;
        message = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .flat_map(|p| {
                p.status
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default()
            })
            .find_map(|c| c.state.and_then(|s| s.terminated).and_then(|t| t.message));
    }
    Ok(JobState::Succeeded { message })
}

/// Reads everything [`switchover::plan`] needs.
///
/// # Errors
/// A Kubernetes API call failed.
pub async fn observe(
    client: &Client,
    namespace: &str,
    md: &MutrDeployment,
    names: &Names,
    status: &MutrDeploymentStatus,
) -> Result<Observed> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let mut observed = Observed::default();
    for color in Color::ALL {
        let get = |name: String| {
            let deployments = deployments.clone();
            async move {
                deployments
                    .get_opt(&name)
                    .await
                    .map_err(Error::kube(format!("get Deployment {name}")))
            }
        };
        let selector = names.color_selector(color);
        let pod_list = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::kube(format!("list pods {selector}")))?;
        let colour = ColorObserved {
            api: workload(get(names.api(color)).await?),
            ai: workload(get(names.ai(color)).await?),
            pods: u32::try_from(pod_list.items.len()).unwrap_or(u32::MAX),
        };
        match color {
            Color::Blue => observed.blue = colour,
            Color::Green => observed.green = colour,
        }
    }
    let stable = names.stable();
    observed.active_service = services
        .get_opt(&stable)
        .await
        .map_err(Error::kube(format!("get Service {stable}")))?
        .and_then(|s| s.spec?.selector?.get(labels::COLOR)?.parse().ok());
    let revision = md.spec.revision();
    if md.spec.strategy.migrations && status.migrated_revision.as_deref() != Some(&revision) {
        let name = names.job(&JobRequest::Migrate { revision });
        observed.migration = job_state(&jobs, &pods, &name, false).await?;
    }
    if let Some(sw) = &status.switchover {
        let activate = names.job(&JobRequest::Activate {
            id: sw.id,
            color: sw.to,
        });
        observed.activate = job_state(&jobs, &pods, &activate, false).await?;
        if let Some(from) = sw.from {
            let recover = names.job(&JobRequest::Recover { id: sw.id, from });
            observed.recover = job_state(&jobs, &pods, &recover, true).await?;
        }
    }
    Ok(observed)
}

/// Applies a plan's objects and Jobs.
///
/// # Errors
/// A Kubernetes API call failed.
pub async fn apply(
    client: &Client,
    namespace: &str,
    md: &MutrDeployment,
    names: &Names,
    plan: &Plan,
) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    for color in Color::ALL {
        let service = resources::ai_service(md, color);
        let name = names.ai(color);
        services
            .patch(&name, &ssa, &Patch::Apply(&service))
            .await
            .map_err(Error::kube(format!("apply Service {name}")))?;
        match plan.color(color) {
            ColorAction::Keep => {}
            ColorAction::Apply { api, ai } => {
                for deployment in [
                    resources::api_deployment(md, color, api),
                    resources::ai_deployment(md, color, ai),
                ] {
                    let name = deployment.name_any();
                    deployments
                        .patch(&name, &ssa, &Patch::Apply(&deployment))
                        .await
                        .map_err(Error::kube(format!("apply Deployment {name}")))?;
                }
            }
            ColorAction::Scale { api, ai } => {
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                for (name, replicas) in [(names.api(color), api), (names.ai(color), ai)] {
                    match deployments
                        .patch(
                            &name,
                            &params,
                            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
                        )
                        .await
                    {
                        // A colour missing one of its Deployments has no pods of it to scale.
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(e) => return Err(Error::kube(format!("scale Deployment {name}"))(e)),
                    }
                }
            }
        }
    }
    for (color, preview) in [(plan.active_service, false), (plan.preview_service, true)] {
        let Some(color) = color else { continue };
        let service = resources::api_service(md, color, preview);
        let name = service.name_any();
        services
            .patch(&name, &ssa, &Patch::Apply(&service))
            .await
            .map_err(Error::kube(format!("apply Service {name}")))?;
    }
    for request in &plan.jobs {
        let name = names.job(request);
        if jobs
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("get Job {name}")))?
            .is_some()
        {
            continue;
        }
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match jobs.create(&params, &resources::job(md, request)).await {
            Ok(_) => info!(job = %name, "created Job"),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("create Job {name}"))(e)),
        }
    }
    Ok(())
}

async fn publish(ctx: &Context, md: &MutrDeployment, plan: &Plan) {
    let reference = md.object_ref(&());
    for decision in &plan.events {
        info!(reason = decision.reason, note = %decision.note, "decision");
        let event = Event {
            type_: if decision.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: decision.reason.into(),
            note: Some(decision.note.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        // An Event that cannot be published must not stop the rollout; the status says the same.
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason = decision.reason, "cannot publish Event");
        }
    }
}

async fn write_status(
    client: &Client,
    namespace: &str,
    md: &MutrDeployment,
    status: &MutrDeploymentStatus,
) -> Result<()> {
    let api: Api<MutrDeployment> = Api::namespaced(client.clone(), namespace);
    let patch = json!({
        "apiVersion": MutrDeployment::api_version(&()),
        "kind": MutrDeployment::kind(&()),
        "status": status,
    });
    api.patch_status(
        &md.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!("write status of {}", md.name_any())))?;
    Ok(())
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
