//! `mutr-operator render`: the objects the operator would apply for a `MutrDeployment` in a given
//! observed state, without a cluster. The same pure path as the controller (plan, then operations);
//! only the I/O differs. Used by people to see what a spec does and by the offline checks
//! (`hack/checks/deploy.sh`), which validate the output against the Kubernetes schemas.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::crd::{Color, MutrDeployment};
use crate::reconcile::desired::{self, Operation};
use crate::reconcile::{ColorObserved, Input, JobState, Observed, WorkloadObserved, plan};

/// Options of `render`.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// YAML file with one or more `MutrDeployment`s (other documents are skipped); `-` for stdin.
    /// A document's `status` is taken as the operator's last status.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// YAML of the observed cluster (`blue`, `green`: `{api, ai: {revision, desired, ready,
    /// available, updated, current}, pods}`, `activeService`, and `migration`, `activate`,
    /// `recover`: `{state: Absent|Running|Succeeded|Failed, message}`).
    /// Default: the active colour (`spec.activeColor`, else blue) runs the spec's revision, ready at
    /// full size, behind the stable Service.
    #[arg(long)]
    pub observed: Option<PathBuf>,
    /// Print every object the resource can make the operator apply (both Services, every Job, the
    /// optional objects that are on), whatever the state; what the offline checks validate.
    #[arg(long)]
    pub all: bool,
    /// Namespace for resources that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Errors of `render`.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file could not be read.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// A document is not YAML or not a valid `MutrDeployment`.
    #[error("{0}: not a valid MutrDeployment")]
    Parse(PathBuf, #[source] serde_yaml::Error),
    /// The observed state could not be parsed.
    #[error("{0}: not a valid observed state")]
    Observed(PathBuf, #[source] serde_yaml::Error),
    /// No `MutrDeployment` in the input.
    #[error("{0}: no MutrDeployment found")]
    Empty(PathBuf),
}

fn read(path: &PathBuf) -> Result<String, RenderError> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| RenderError::Read(path.clone(), e))
    } else {
        std::fs::read_to_string(path).map_err(|e| RenderError::Read(path.clone(), e))
    }
}

/// The `MutrDeployment`s of a YAML stream, with a namespace and a uid (owner references need one).
///
/// # Errors
/// See [`RenderError`].
pub fn parse(text: &str, path: &Path, namespace: &str) -> Result<Vec<MutrDeployment>, RenderError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| RenderError::Parse(path.to_path_buf(), e))?;
        if value.get("kind").and_then(serde_yaml::Value::as_str) != Some("MutrDeployment") {
            continue;
        }
        let mut md: MutrDeployment =
            serde_yaml::from_value(value).map_err(|e| RenderError::Parse(path.to_path_buf(), e))?;
        md.metadata
            .namespace
            .get_or_insert_with(|| namespace.to_owned());
        md.metadata
            .uid
            .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".to_owned());
        md.metadata.generation.get_or_insert(1);
        out.push(md);
    }
    if out.is_empty() {
        return Err(RenderError::Empty(path.to_path_buf()));
    }
    Ok(out)
}

/// The default observed state: the active colour serves the spec's revision at full size.
#[must_use]
pub fn steady(md: &MutrDeployment) -> Observed {
    let color = md.spec.active_color.unwrap_or(Color::Blue);
    let (api, ai) = md.spec.serving_replicas();
    let workload = |n: i32| WorkloadObserved {
        revision: Some(md.spec.revision()),
        desired: n,
        ready: n,
        available: n,
        updated: n,
        current: true,
        replicas_applied: md.spec.api.autoscaling.is_none(),
    };
    let serving = ColorObserved {
        api: Some(workload(api)),
        ai: Some(workload(ai)),
        pods: u32::try_from(api + ai).unwrap_or(0),
    };
    let mut observed = Observed {
        active_service: Some(color),
        migration: JobState::Succeeded { message: None },
        ..Observed::default()
    };
    match color {
        Color::Blue => observed.blue = serving,
        Color::Green => observed.green = serving,
    }
    observed
}

/// The YAML documents `render` prints for one resource.
#[must_use]
pub fn render(md: &MutrDeployment, observed: &Observed, all: bool) -> Vec<String> {
    if all {
        return desired::all_objects(md).iter().map(to_yaml).collect();
    }
    let mut status = md.status.clone().unwrap_or_default();
    if md.status.is_none() && observed.active_service.is_some() {
        // No status given: the default state is a settled one.
        status.active_color = observed.active_service;
        status.migrated_revision = Some(md.spec.revision());
    }
    let plan = plan(Input {
        generation: md.metadata.generation.unwrap_or(1),
        spec: &md.spec,
        status: &status,
        observed,
        now: k8s_openapi::jiff::Timestamp::now(),
    });
    desired::operations(md, &plan, observed)
        .iter()
        .map(|op| match op {
            Operation::ApplyReplicas { name, replicas } => {
                format!(
                    "# set spec.replicas of Deployment {name} to {replicas} (field manager {})\n",
                    desired::REPLICAS_MANAGER
                )
            }
            Operation::Scale { name, replicas } => {
                format!("# scale Deployment {name} to {replicas} (template left as it is)\n")
            }
            Operation::Delete { kind, name } => {
                format!("# delete {} {name} if it exists\n", kind.kind)
            }
            other => to_yaml(&other.object().unwrap_or_else(|| json!({}))),
        })
        .collect()
}

fn to_yaml(value: &Value) -> String {
    serde_yaml::to_string(value).expect("JSON values serialize as YAML")
}

/// Runs `render`: prints the documents separated by `---`.
///
/// # Errors
/// See [`RenderError`].
pub fn run(args: &RenderArgs) -> Result<String, RenderError> {
    let mds = parse(&read(&args.file)?, &args.file, &args.namespace)?;
    let given = match &args.observed {
        Some(path) => Some(
            serde_yaml::from_str::<Observed>(&read(path)?)
                .map_err(|e| RenderError::Observed(path.clone(), e))?,
        ),
        None => None,
    };
    let mut out = String::new();
    for md in &mds {
        let observed = given.clone().unwrap_or_else(|| steady(md));
        for doc in render(md, &observed, args.all) {
            if doc.starts_with('#') {
                out.push_str(&doc);
            } else {
                out.push_str("---\n");
                out.push_str(&doc);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str = r"
apiVersion: mutr.io/v1alpha1
kind: MutrDeployment
metadata: { name: mutr }
spec:
  api: { image: api:1, replicas: 2 }
  aiServer: { image: ai:1 }
  database: { name: db }
  redis: { name: rd }
";

    fn kinds(docs: &[String]) -> Vec<String> {
        docs.iter()
            .filter(|d| !d.starts_with('#'))
            .map(|d| {
                let v: Value = serde_yaml::from_str(d).unwrap();
                format!(
                    "{}/{}",
                    v["kind"].as_str().unwrap(),
                    v["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn the_steady_state_renders_the_serving_colour_and_its_surroundings() {
        let path = PathBuf::from("md.yaml");
        let md = &parse(MD, &path, "shop").unwrap()[0];
        let docs = render(md, &steady(md), false);
        let names = kinds(&docs);
        for expected in [
            "Service/mutr-ai-blue",
            "Service/mutr-ai-metrics",
            "Deployment/mutr-api-blue",
            "Deployment/mutr-ai-blue",
            "PodDisruptionBudget/mutr-api-blue",
            "NetworkPolicy/mutr-ai-green",
            "Service/mutr-api",
            "Service/mutr-api-preview",
        ] {
            assert!(
                names.contains(&expected.to_owned()),
                "{expected} missing from {names:?}"
            );
        }
        assert!(
            !names
                .iter()
                .any(|k| k.starts_with("Deployment/mutr-api-green")),
            "{names:?}"
        );
        assert!(
            docs.iter()
                .any(|d| d.starts_with("# delete HorizontalPodAutoscaler mutr-api-blue"))
        );
        let all = kinds(&render(md, &steady(md), true));
        assert!(
            all.iter().any(|k| k.starts_with("Job/mutr-recover-")),
            "{all:?}"
        );
    }

    #[test]
    fn an_observed_state_from_yaml_drives_the_plan() {
        // Blue serves the old revision; the new one starts on green at preview size.
        let observed: Observed = serde_yaml::from_str(
            r"
blue:
  api: { revision: old, desired: 2, ready: 2, available: 2, updated: 2, current: true }
  ai: { revision: old, desired: 1, ready: 1, available: 1, updated: 1, current: true }
  pods: 3
activeService: blue
migration: { state: Succeeded }
",
        )
        .unwrap();
        let path = PathBuf::from("md.yaml");
        let mut md = parse(MD, &path, "shop").unwrap().remove(0);
        md.status = Some(crate::crd::MutrDeploymentStatus {
            active_color: Some(Color::Blue),
            ..Default::default()
        });
        let names = kinds(&render(&md, &observed, false));
        assert!(
            names.contains(&"Deployment/mutr-api-green".to_owned()),
            "{names:?}"
        );
        assert!(
            !names.contains(&"Deployment/mutr-api-blue".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn a_file_without_a_mutr_deployment_is_an_error() {
        let path = PathBuf::from("x.yaml");
        assert!(matches!(
            parse("kind: Service\n", &path, "ns"),
            Err(RenderError::Empty(_))
        ));
    }
}
