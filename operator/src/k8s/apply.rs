//! Performs the operations of a plan ([`crate::reconcile::desired::Operation`]) against the API
//! server, publishes the plan's Events and writes the status.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource};
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use crate::crd::{FIELD_MANAGER, MutrDeployment, MutrDeploymentStatus};
use crate::error::{Error, Result};
use crate::reconcile::desired::{DEPLOYMENT, ObjectKind, Operation, REPLICAS_MANAGER};
use crate::reconcile::{Plan, Severity};

fn api(client: &Client, namespace: &str, kind: ObjectKind) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: kind.group.to_owned(),
        version: kind.version.to_owned(),
        api_version: kind.api_version(),
        kind: kind.kind.to_owned(),
        plural: kind.plural.to_owned(),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Performs the operations in order; the first failure stops the reconcile (it is retried).
///
/// # Errors
/// A Kubernetes API call failed.
pub async fn perform(client: &Client, namespace: &str, operations: &[Operation]) -> Result<()> {
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    for operation in operations {
        match operation {
            Operation::Apply { kind, object } => {
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                api(client, namespace, *kind)
                    .patch(name, &ssa, &Patch::Apply(object))
                    .await
                    .map_err(Error::kube(format!("apply {} {name}", kind.kind)))?;
            }
            Operation::ApplyReplicas { name, replicas } => {
                let patch = json!({
                    "apiVersion": DEPLOYMENT.api_version(),
                    "kind": DEPLOYMENT.kind,
                    "spec": { "replicas": replicas },
                });
                api(client, namespace, DEPLOYMENT)
                    .patch(
                        name,
                        &PatchParams::apply(REPLICAS_MANAGER).force(),
                        &Patch::Apply(&patch),
                    )
                    .await
                    .map_err(Error::kube(format!(
                        "apply the replicas of Deployment {name}"
                    )))?;
            }
            Operation::Scale { name, replicas } => {
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
                match api(client, namespace, DEPLOYMENT)
                    .patch(name, &params, &patch)
                    .await
                {
                    // A colour missing one of its Deployments has no pods of it to scale.
                    Err(e) if not_found(&e) => {}
                    result => {
                        result.map_err(Error::kube(format!("scale Deployment {name}")))?;
                    }
                }
            }
            Operation::CreateJob(job) => create_job(client, namespace, job).await?,
            Operation::Delete { kind, name } => {
                match api(client, namespace, *kind)
                    .delete(name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => info!(kind = kind.kind, %name, "deleted (turned off)"),
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(Error::kube(format!("delete {} {name}", kind.kind))(e)),
                }
            }
        }
    }
    Ok(())
}

async fn create_job(client: &Client, namespace: &str, job: &Job) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let name = job.metadata.name.clone().unwrap_or_default();
    if jobs
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get Job {name}")))?
        .is_some()
    {
        return Ok(());
    }
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match jobs.create(&params, job).await {
        Ok(_) => info!(job = %name, "created Job"),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(Error::kube(format!("create Job {name}"))(e)),
    }
    Ok(())
}

/// Publishes the plan's Events on the resource. A failure to publish is logged, not returned: an
/// Event that cannot be published must not stop the rollout, and the status says the same.
pub async fn publish(ctx: &Context, md: &MutrDeployment, plan: &Plan) {
    let reference = md.object_ref(&());
    for decision in &plan.events {
        let reason = decision.reason.as_str();
        info!(reason, note = %decision.note, "decision");
        let event = Event {
            type_: match decision.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: reason.into(),
            note: Some(decision.note.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason, "cannot publish Event");
        }
    }
}

/// Writes the status through the status subresource (server-side apply).
///
/// # Errors
/// The API call failed.
pub async fn write_status(
    client: &Client,
    namespace: &str,
    md: &MutrDeployment,
    status: &MutrDeploymentStatus,
) -> Result<()> {
    let api: Api<MutrDeployment> = Api::namespaced(client.clone(), namespace);
    let name = md.metadata.name.clone().unwrap_or_default();
    let patch = json!({
        "apiVersion": MutrDeployment::api_version(&()),
        "kind": MutrDeployment::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!("write status of {name}")))?;
    Ok(())
}
