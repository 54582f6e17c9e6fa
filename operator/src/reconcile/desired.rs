//! A [`Plan`] as the list of operations the adapter performs, in order, and `mutr-operator render`
//! prints: server-side applies of the desired objects, replica counts, Jobs created once, and
//! deletions of optional objects that were turned off. Pure; the RBAC the operator needs is exactly
//! the verbs these operations use (`Operation::verbs`, tested against `operator/README.md`).

use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use super::observed::{Observed, WorkloadObserved};
use super::plan::{ColorAction, Plan};
use super::resources::{self, Names, monitoring, policy, scaling};
use crate::crd::{Color, MutrDeployment};

/// Field manager of the applies that set only `spec.replicas` of a Deployment an autoscaler owns.
/// A manager of its own, so that the operator's main apply can leave the field out without the API
/// server deleting it (it would fall back to 1), and the autoscaler's writes take it over.
pub const REPLICAS_MANAGER: &str = "mutr-operator-replicas";

/// An API resource the operator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKind {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource (plural).
    pub plural: &'static str,
}

impl ObjectKind {
    /// `group/version`, or `version` for the core group.
    #[must_use]
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Deployments.
pub const DEPLOYMENT: ObjectKind = ObjectKind {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
};
/// Services.
pub const SERVICE: ObjectKind = ObjectKind {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
};
/// Jobs.
pub const JOB: ObjectKind = ObjectKind {
    group: "batch",
    version: "v1",
    kind: "Job",
    plural: "jobs",
};
/// PodDisruptionBudgets.
pub const PDB: ObjectKind = ObjectKind {
    group: "policy",
    version: "v1",
    kind: "PodDisruptionBudget",
    plural: "poddisruptionbudgets",
};
/// NetworkPolicies.
pub const NETWORK_POLICY: ObjectKind = ObjectKind {
    group: "networking.k8s.io",
    version: "v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
};
/// HorizontalPodAutoscalers.
pub const HPA: ObjectKind = ObjectKind {
    group: "autoscaling",
    version: "v2",
    kind: "HorizontalPodAutoscaler",
    plural: "horizontalpodautoscalers",
};
/// KEDA ScaledObjects.
pub const SCALED_OBJECT: ObjectKind = ObjectKind {
    group: "keda.sh",
    version: "v1alpha1",
    kind: "ScaledObject",
    plural: "scaledobjects",
};
/// Prometheus Operator ServiceMonitors.
pub const SERVICE_MONITOR: ObjectKind = ObjectKind {
    group: "monitoring.coreos.com",
    version: "v1",
    kind: "ServiceMonitor",
    plural: "servicemonitors",
};

/// One thing the adapter does.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// Server-side apply (field manager `mutr-operator`, forced); creates the object if absent.
    Apply {
        /// What it is.
        kind: ObjectKind,
        /// The object (apiVersion, kind, metadata with name, namespace and owner).
        object: Value,
    },
    /// Server-side apply of a Deployment's `spec.replicas` alone, by [`REPLICAS_MANAGER`].
    ApplyReplicas {
        /// The Deployment.
        name: String,
        /// The count.
        replicas: i32,
    },
    /// JSON merge patch of a Deployment's `spec.replicas` (a colour that runs an older revision,
    /// whose template must not change); a missing Deployment is skipped.
    Scale {
        /// The Deployment.
        name: String,
        /// The count.
        replicas: i32,
    },
    /// Create the Job unless one of its name exists (Jobs are immutable; their names are
    /// deterministic).
    CreateJob(Box<Job>),
    /// Delete an optional object that is turned off; a missing one (or a kind whose CRD is not
    /// installed) is skipped.
    Delete {
        /// What it is.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
}

impl Operation {
    /// (API group, resource, verb) of each Kubernetes API call the adapter makes for it.
    #[must_use]
    pub fn verbs(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        match self {
            // A server-side apply is a PATCH; when it creates the object it needs `create` too.
            Operation::Apply { kind, .. } => vec![
                (kind.group, kind.plural, "patch"),
                (kind.group, kind.plural, "create"),
            ],
            Operation::ApplyReplicas { .. } | Operation::Scale { .. } => {
                vec![("apps", "deployments", "patch")]
            }
            Operation::CreateJob(_) => vec![("batch", "jobs", "get"), ("batch", "jobs", "create")],
            Operation::Delete { kind, .. } => vec![(kind.group, kind.plural, "delete")],
        }
    }

    /// The object an `Apply` or `CreateJob` writes.
    #[must_use]
    pub fn object(&self) -> Option<Value> {
        match self {
            Operation::Apply { object, .. } => Some(object.clone()),
            Operation::CreateJob(job) => Some(serde_json::to_value(job).expect("a Job serializes")),
            _ => None,
        }
    }
}

fn apply<T: serde::Serialize>(kind: ObjectKind, object: &T) -> Operation {
    Operation::Apply {
        kind,
        object: serde_json::to_value(object).expect("objects built here serialize"),
    }
}

/// The replica count to hand to [`REPLICAS_MANAGER`] for a Deployment an autoscaler owns, given the
/// count the plan wants and the Deployment as observed: only where the rollout needs it (a new
/// Deployment, a colour scaled to zero, fewer replicas than a serving colour needs) or while the
/// operator's main apply still owns the field (the hand-over), never below what the autoscaler chose.
#[must_use]
pub fn autoscaled_replicas(planned: i32, observed: Option<&WorkloadObserved>) -> Option<i32> {
    let Some(w) = observed else {
        return Some(planned);
    };
    if planned == 0 {
        return (w.desired != 0 || w.replicas_applied).then_some(0);
    }
    if w.replicas_applied {
        return Some(w.desired.max(planned));
    }
    (w.desired < planned).then_some(planned)
}

/// Everything the adapter does for a plan, in order.
#[must_use]
pub fn operations(md: &MutrDeployment, plan: &Plan, observed: &Observed) -> Vec<Operation> {
    let spec = &md.spec;
    let names = Names::of(md);
    let mut ops = Vec::new();
    for color in Color::ALL {
        ops.push(apply(SERVICE, &resources::ai_service(md, color)));
    }
    ops.push(apply(SERVICE, &resources::ai_metrics_service(md)));
    for color in Color::ALL {
        let seen = observed.color(color);
        match plan.color(color) {
            ColorAction::Keep => {}
            ColorAction::Apply { api, ai } => {
                let api_scaled = spec.api.autoscaling.is_some();
                let ai_scaled = spec.ai_server.autoscaling.is_some();
                let parts = [
                    (
                        names.api(color),
                        api,
                        api_scaled,
                        seen.api.as_ref(),
                        resources::api_deployment(md, color, (!api_scaled).then_some(api)),
                    ),
                    (
                        names.ai(color),
                        ai,
                        ai_scaled,
                        seen.ai.as_ref(),
                        resources::ai_deployment(md, color, (!ai_scaled).then_some(ai)),
                    ),
                ];
                for (name, planned, scaled, seen, deployment) in parts {
                    let replicas = scaled
                        .then(|| autoscaled_replicas(planned, seen))
                        .flatten()
                        .map(|replicas| Operation::ApplyReplicas { name, replicas });
                    // The hand-over comes first on an existing Deployment (so that the main apply
                    // dropping the field does not reset it), after the apply that creates one.
                    match (seen, replicas) {
                        (Some(_), Some(r)) => ops.extend([r, apply(DEPLOYMENT, &deployment)]),
                        (None, Some(r)) => ops.extend([apply(DEPLOYMENT, &deployment), r]),
                        (_, None) => ops.push(apply(DEPLOYMENT, &deployment)),
                    }
                }
            }
            ColorAction::Scale { api, ai } => {
                ops.push(Operation::Scale {
                    name: names.api(color),
                    replicas: api,
                });
                ops.push(Operation::Scale {
                    name: names.ai(color),
                    replicas: ai,
                });
            }
        }
    }
    for color in Color::ALL {
        for component in policy::COMPONENTS {
            let name = policy::pdb_name(&names, component, color);
            ops.push(if spec.pod_disruption_budget.enabled {
                apply(PDB, &policy::pod_disruption_budget(md, component, color))
            } else {
                Operation::Delete { kind: PDB, name }
            });
        }
        ops.push(if spec.network_policy.enabled {
            apply(NETWORK_POLICY, &policy::ai_network_policy(md, color))
        } else {
            Operation::Delete {
                kind: NETWORK_POLICY,
                name: names.ai(color),
            }
        });
        ops.push(match scaling::api_hpa(md, color) {
            Some(hpa) => Operation::Apply {
                kind: HPA,
                object: hpa,
            },
            None => Operation::Delete {
                kind: HPA,
                name: names.api(color),
            },
        });
        let paused = (plan.status.active_color != Some(color)).then(|| match plan.color(color) {
            ColorAction::Apply { ai, .. } | ColorAction::Scale { ai, .. } => ai,
            ColorAction::Keep => observed.color(color).ai.as_ref().map_or(0, |w| w.desired),
        });
        ops.push(match scaling::ai_scaled_object(md, color, paused) {
            Some(so) => Operation::Apply {
                kind: SCALED_OBJECT,
                object: so,
            },
            None => Operation::Delete {
                kind: SCALED_OBJECT,
                name: names.ai(color),
            },
        });
    }
    for (color, preview) in [(plan.active_service, false), (plan.preview_service, true)] {
        if let Some(color) = color {
            ops.push(apply(SERVICE, &resources::api_service(md, color, preview)));
        }
    }
    for (component, name) in [
        ("api", format!("{}-api", names.instance())),
        ("ai-server", names.ai_metrics()),
    ] {
        ops.push(match monitoring::service_monitor(md, component) {
            Some(sm) => Operation::Apply {
                kind: SERVICE_MONITOR,
                object: sm,
            },
            None => Operation::Delete {
                kind: SERVICE_MONITOR,
                name,
            },
        });
    }
    for request in &plan.jobs {
        ops.push(Operation::CreateJob(Box::new(resources::job(md, request))));
    }
    ops
}

/// Every object a `MutrDeployment` can make the operator apply, whatever the rollout state:
/// used by `mutr-operator render --all` and the offline checks, which validate each kind.
#[must_use]
pub fn all_objects(md: &MutrDeployment) -> Vec<Value> {
    use super::plan::JobRequest;
    let mut out = vec![
        json!(resources::ai_service(md, Color::Blue)),
        json!(resources::ai_metrics_service(md)),
        json!(resources::api_deployment(
            md,
            Color::Blue,
            Some(md.spec.api.replicas)
        )),
        json!(resources::ai_deployment(
            md,
            Color::Blue,
            Some(md.spec.ai_server.replicas)
        )),
        json!(resources::api_service(md, Color::Blue, false)),
        json!(resources::api_service(md, Color::Green, true)),
    ];
    if md.spec.pod_disruption_budget.enabled {
        out.push(json!(policy::pod_disruption_budget(md, "api", Color::Blue)));
        out.push(json!(policy::pod_disruption_budget(
            md,
            "ai-server",
            Color::Blue
        )));
    }
    if md.spec.network_policy.enabled {
        out.push(json!(policy::ai_network_policy(md, Color::Blue)));
    }
    out.extend(scaling::api_hpa(md, Color::Blue));
    out.extend(scaling::ai_scaled_object(md, Color::Blue, None));
    out.extend(monitoring::service_monitor(md, "api"));
    out.extend(monitoring::service_monitor(md, "ai-server"));
    for request in [
        JobRequest::Migrate {
            revision: md.spec.revision(),
        },
        JobRequest::Activate {
            id: 1,
            color: Color::Blue,
        },
        JobRequest::Recover {
            id: 1,
            from: Color::Green,
        },
    ] {
        out.push(json!(resources::job(md, &request)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MutrDeploymentStatus;
    use crate::reconcile::observed::ColorObserved;
    use crate::reconcile::plan::{IDLE_REQUEUE, JobRequest};

    fn md(extra: Value) -> MutrDeployment {
        let mut spec = json!({
            "api": { "image": "api:1", "replicas": 2 }, "aiServer": { "image": "ai:1" },
            "database": { "name": "db" }, "redis": { "name": "rd" },
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                match (spec.get_mut(k), v) {
                    (Some(Value::Object(into)), Value::Object(from)) => {
                        into.extend(from.clone());
                    }
                    _ => {
                        spec.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut md: MutrDeployment = serde_json::from_value(json!({
            "apiVersion": "mutr.io/v1alpha1", "kind": "MutrDeployment",
            "metadata": { "name": "mutr", "namespace": "shop", "uid": "u" }, "spec": spec,
        }))
        .unwrap();
        md.metadata.uid = Some("u".into());
        md
    }

    fn plan(blue: ColorAction, green: ColorAction, active: Option<Color>) -> Plan {
        Plan {
            blue,
            green,
            active_service: active,
            preview_service: active.map(Color::other),
            jobs: vec![JobRequest::Activate {
                id: 1,
                color: Color::Blue,
            }],
            status: MutrDeploymentStatus {
                active_color: active,
                ..Default::default()
            },
            events: Vec::new(),
            requeue_after: IDLE_REQUEUE,
        }
    }

    fn w(desired: i32, replicas_applied: bool) -> WorkloadObserved {
        WorkloadObserved {
            desired,
            replicas_applied,
            ..Default::default()
        }
    }

    #[test]
    fn an_autoscaler_keeps_its_count_unless_the_rollout_needs_another() {
        // (planned, observed) -> count handed to the replicas manager
        let cases = [
            (3, None, Some(3)),              // a new Deployment starts at the planned count
            (3, Some(w(5, false)), None),    // the autoscaler scaled up: left alone
            (3, Some(w(3, false)), None),    // nothing to do
            (3, Some(w(1, false)), Some(3)), // below what a serving colour needs
            (0, Some(w(4, false)), Some(0)), // the old colour scales down
            (0, Some(w(0, false)), None),    // already down
            (3, Some(w(5, true)), Some(5)),  // hand-over: keep the current count, own it elsewhere
            (0, Some(w(0, true)), Some(0)),  // hand-over of a colour at zero
        ];
        for (planned, observed, expected) in cases {
            assert_eq!(
                autoscaled_replicas(planned, observed.as_ref()),
                expected,
                "planned {planned}, observed {observed:?}"
            );
        }
    }

    #[test]
    fn without_autoscaling_the_operator_applies_replicas_itself() {
        let m = md(json!({}));
        let ops = operations(
            &m,
            &plan(
                ColorAction::Apply { api: 2, ai: 1 },
                ColorAction::Keep,
                Some(Color::Blue),
            ),
            &Observed::default(),
        );
        let api = ops
            .iter()
            .find_map(|o| match o {
                Operation::Apply { kind, object }
                    if *kind == DEPLOYMENT && object["metadata"]["name"] == "mutr-api-blue" =>
                {
                    Some(object)
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(api["spec"]["replicas"], 2);
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Operation::ApplyReplicas { .. }))
        );
        // Optional objects that are off are deleted; those on by default are applied.
        let deleted: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Operation::Delete { kind, .. } => Some(kind.kind),
                _ => None,
            })
            .collect();
        for kind in ["HorizontalPodAutoscaler", "ScaledObject", "ServiceMonitor"] {
            assert!(deleted.contains(&kind), "{kind} not deleted: {deleted:?}");
        }
        for kind in ["PodDisruptionBudget", "NetworkPolicy"] {
            assert!(!deleted.contains(&kind));
        }
        assert!(
            matches!(ops.last(), Some(Operation::CreateJob(_))),
            "Jobs come last"
        );
    }

    #[test]
    fn with_autoscaling_the_replicas_are_handed_over_before_the_main_apply() {
        let m = md(json!({
            "api": { "autoscaling": { "minReplicas": 2, "maxReplicas": 5 } },
            "aiServer": { "autoscaling": { "minReplicas": 1, "maxReplicas": 3, "prometheusAddress": "http://p" } },
        }));
        let observed = Observed {
            blue: ColorObserved {
                api: Some(w(4, true)),
                ai: Some(w(1, false)),
                pods: 5,
            },
            ..Default::default()
        };
        let ops = operations(
            &m,
            &plan(
                ColorAction::Apply { api: 2, ai: 1 },
                ColorAction::Scale { api: 0, ai: 0 },
                Some(Color::Blue),
            ),
            &observed,
        );
        let position = |pred: &dyn Fn(&Operation) -> bool| ops.iter().position(pred);
        let handover = position(&|o| matches!(o, Operation::ApplyReplicas { name, replicas: 4 } if name == "mutr-api-blue")).unwrap();
        let apply = position(&|o| matches!(o, Operation::Apply { kind, object } if *kind == DEPLOYMENT && object["metadata"]["name"] == "mutr-api-blue")).unwrap();
        assert!(
            handover < apply,
            "the count is owned elsewhere before the main apply drops it"
        );
        let Operation::Apply { object, .. } = &ops[apply] else {
            unreachable!()
        };
        assert_eq!(object["spec"].get("replicas"), None);
        // The AI server at its minimum, not applied by the operator: nothing to hand over.
        assert!(
            position(
                &|o| matches!(o, Operation::ApplyReplicas { name, .. } if name == "mutr-ai-blue")
            )
            .is_none()
        );
        // KEDA: the active colour's ScaledObject runs, the other is paused at the rollout's count.
        let scaled = |name: &str| {
            ops.iter()
                .find_map(|o| match o {
                    Operation::Apply { kind, object }
                        if *kind == SCALED_OBJECT && object["metadata"]["name"] == name =>
                    {
                        Some(object.clone())
                    }
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(scaled("mutr-ai-blue")["metadata"]["annotations"], json!({}));
        assert_eq!(
            scaled("mutr-ai-green")["metadata"]["annotations"][scaling::KEDA_PAUSED_REPLICAS],
            "0"
        );
        assert!(
            ops.iter()
                .any(|o| matches!(o, Operation::Apply { kind, .. } if *kind == HPA))
        );
    }
}
