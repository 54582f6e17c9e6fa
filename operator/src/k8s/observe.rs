//! Reads everything [`crate::reconcile::plan`] needs: both colours' Deployments and pod counts, the
//! stable Service's colour, and the Jobs of the rollout in flight.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::crd::{Color, FIELD_MANAGER, MutrDeployment, MutrDeploymentStatus};
use crate::error::{Error, Result};
use crate::reconcile::resources::{Names, labels};
use crate::reconcile::{ColorObserved, JobRequest, JobState, Observed, WorkloadObserved};

fn workload(deployment: Option<Deployment>) -> Option<WorkloadObserved> {
    let d = deployment?;
    let generation = d.metadata.generation.unwrap_or_default();
    let revision = d.labels().get(labels::REVISION).cloned();
    let desired = d.spec.replicas.unwrap_or(1);
    let status = d.status.unwrap_or_default();
    let replicas_applied = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| {
            f.manager.as_deref() == Some(FIELD_MANAGER) && f.operation.as_deref() == Some("Apply")
        })
        .any(|f| {
            f.fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0["f:spec"].get("f:replicas").is_some())
        });
    Some(WorkloadObserved {
        replicas_applied,
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
