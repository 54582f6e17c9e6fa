//! `kubectl mutr`: status, promote, abort and wait for people and CI scripts. Every verb reads the
//! `MutrDeployment`'s status (what the operator decided) and changes only its spec.

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::crd::{Color, MutrDeployment, MutrDeploymentStatus, Phase};
use crate::error::{Error, Result};
use crate::reconcile::condition;

/// Drive MutrDeployment rollouts: status, promote, abort, wait.
#[derive(Debug, Parser)]
#[command(name = "kubectl-mutr", version)]
pub struct PluginCli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, env = "MUTR_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, env = "MUTR_OUTPUT", value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// Plugin verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Show colours, phase, conditions and the last switchover.
    Status(Target),
    /// Request promotion of the preview colour (sets spec.activeColor); refused while it is not ready.
    Promote(Target),
    /// Abort the rollout in flight (sets spec.abortedRevision): the preview scales down, or a
    /// switchover rolls back while the old colour still runs.
    Abort(Target),
    /// Wait until the rollout reaches a state; exits non-zero when it fails or times out.
    Wait(WaitArgs),
}

/// Which MutrDeployment.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Its name; may be left out when the namespace holds exactly one.
    pub name: Option<String>,
}

/// Options of `wait`.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Which MutrDeployment.
    #[command(flatten)]
    pub target: Target,
    /// The state to wait for.
    #[arg(long = "for", value_enum)]
    pub condition: WaitFor,
    /// Give up after this long (e.g. 90s, 10m).
    #[arg(long, env = "MUTR_WAIT_TIMEOUT", value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    /// How often to read the status.
    #[arg(long, env = "MUTR_WAIT_INTERVAL", value_parser = parse_duration, default_value = "2s")]
    pub interval: Duration,
}

/// States `wait` can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// The preview colour runs the desired revision and is ready (or already serves it).
    PreviewReady,
    /// The desired revision serves on the active colour and no switchover is in flight.
    Promoted,
}

/// Parses `500ms`, `90s`, `10m`, `1h`.
///
/// # Errors
/// The text is not a number followed by one of those units.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("{text:?} is not a duration like 500ms, 90s, 10m or 1h");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| err())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(err()),
    }
}

/// Runs one verb, writing its report to `out`.
///
/// # Errors
/// The API failed, the verb was refused, or a wait failed or timed out.
pub async fn run(client: Client, cli: &PluginCli, out: &mut (impl Write + Send)) -> Result<()> {
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<MutrDeployment> = Api::namespaced(client, &namespace);
    match &cli.verb {
        Verb::Status(target) => {
            let md = resolve(&api, target).await?;
            report(out, cli.output, &md, None)
        }
        Verb::Promote(target) => {
            let md = resolve(&api, target).await?;
            let color = promotable(&md)?;
            patch_spec(&api, &md, json!({ "spec": { "activeColor": color } })).await?;
            report(
                out,
                cli.output,
                &md,
                Some(&format!("promotion of {color} requested")),
            )
        }
        Verb::Abort(target) => {
            let md = resolve(&api, target).await?;
            let (revision, back_to) = abortable(&md)?;
            let mut spec = json!({ "abortedRevision": revision });
            if let Some(color) = back_to {
                spec["activeColor"] = json!(color);
            }
            patch_spec(&api, &md, json!({ "spec": spec })).await?;
            report(
                out,
                cli.output,
                &md,
                Some(&format!("rollout of revision {revision} aborted")),
            )
        }
        Verb::Wait(args) => {
            let name = resolve(&api, &args.target).await?.name_any();
            let deadline = Instant::now() + args.timeout;
            loop {
                let md = api
                    .get(&name)
                    .await
                    .map_err(Error::kube(format!("get MutrDeployment {name}")))?;
                match reached(&md, args.condition) {
                    Ok(true) => {
                        return report(
                            out,
                            cli.output,
                            &md,
                            Some(&format!("{:?} reached", args.condition)),
                        );
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        report(out, cli.output, &md, None)?;
                        return Err(Error::Refused(reason));
                    }
                }
                let now = Instant::now();
                if now >= deadline {
                    report(out, cli.output, &md, None)?;
                    return Err(Error::Timeout(
                        args.timeout,
                        format!("{name} did not reach {:?}", args.condition),
                    ));
                }
                tokio::time::sleep(args.interval.min(deadline - now)).await;
            }
        }
    }
}

async fn resolve(api: &Api<MutrDeployment>, target: &Target) -> Result<MutrDeployment> {
    if let Some(name) = &target.name {
        return api
            .get(name)
            .await
            .map_err(Error::kube(format!("get MutrDeployment {name}")));
    }
    let mut list = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list MutrDeployments"))?
        .items;
    match list.len() {
        1 => Ok(list.remove(0)),
        0 => Err(Error::Ambiguous(
            "no MutrDeployment in this namespace".into(),
        )),
        _ => Err(Error::Ambiguous(format!(
            "several MutrDeployments here ({}); name one",
            list.iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn patch_spec(
    api: &Api<MutrDeployment>,
    md: &MutrDeployment,
    patch: serde_json::Value,
) -> Result<()> {
    let name = md.name_any();
    let params = PatchParams {
        field_manager: Some("kubectl-mutr".into()),
        ..PatchParams::default()
    };
    api.patch(&name, &params, &Patch::Merge(patch))
        .await
        .map_err(Error::kube(format!("patch MutrDeployment {name}")))?;
    Ok(())
}

fn current(md: &MutrDeployment) -> Option<&MutrDeploymentStatus> {
    let status = md.status.as_ref()?;
    (status.observed_generation >= md.metadata.generation).then_some(status)
}

/// The colour a promotion would switch to, when the status says it is ready.
///
/// # Errors
/// Nothing to promote, or the preview is not ready.
pub fn promotable(md: &MutrDeployment) -> Result<Color> {
    let status = current(md).ok_or_else(|| {
        Error::Refused("the operator has not processed the latest spec yet; try again".into())
    })?;
    let active = status.active_color.ok_or_else(|| {
        Error::Refused("no colour serves yet; the first one is promoted by itself".into())
    })?;
    if status.switchover.is_some() {
        return Err(Error::Refused("a switchover is already in flight".into()));
    }
    let preview = active.other();
    let revision = status.revision.clone().unwrap_or_default();
    match status.colors.get(preview) {
        Some(c) if c.revision.as_deref() == Some(&revision) && c.ready => Ok(preview),
        Some(c) if c.revision.as_deref() == Some(&revision) => Err(Error::Refused(format!(
            "{preview} is not ready (api {}/{}, ai-server {}/{} ready); promotion refused",
            c.api_ready_replicas, c.api_replicas, c.ai_ready_replicas, c.ai_replicas
        ))),
        _ if status
            .colors
            .get(active)
            .and_then(|c| c.revision.as_deref())
            == Some(&revision) =>
        {
            Err(Error::Refused(format!(
                "revision {revision} already serves on {active}; nothing to promote"
            )))
        }
        _ => Err(Error::Refused(format!(
            "{preview} does not run revision {revision} yet (phase {})",
            status.phase
        ))),
    }
}

/// The revision to abort, and the colour to point `spec.activeColor` back to.
///
/// # Errors
/// Nothing is in flight.
pub fn abortable(md: &MutrDeployment) -> Result<(String, Option<Color>)> {
    let status = md
        .status
        .as_ref()
        .ok_or_else(|| Error::Refused("no status yet; nothing to abort".into()))?;
    if let Some(sw) = &status.switchover {
        if sw.rollback {
            return Err(Error::Refused("a rollback is already in flight".into()));
        }
        return Ok((sw.revision.clone(), sw.from));
    }
    let revision = status
        .revision
        .clone()
        .ok_or_else(|| Error::Refused("no revision yet; nothing to abort".into()))?;
    let active = status.active_color;
    let serving = active
        .and_then(|c| status.colors.get(c))
        .and_then(|c| c.revision.clone());
    if serving.as_deref() == Some(&revision) {
        return Err(Error::Refused(format!(
            "revision {revision} already serves; nothing in flight to abort"
        )));
    }
    if md.spec.aborted_revision.as_deref() == Some(&revision) {
        return Err(Error::Refused(format!(
            "revision {revision} is already aborted"
        )));
    }
    Ok((revision, active))
}

/// Whether `md` has reached `what`: `Err` when the rollout failed or was aborted.
///
/// # Errors
/// The rollout stopped in `Failed` or `Aborted`.
pub fn reached(md: &MutrDeployment, what: WaitFor) -> std::result::Result<bool, String> {
    let Some(status) = current(md) else {
        return Ok(false);
    };
    if matches!(status.phase, Phase::Failed | Phase::Aborted) {
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::DEGRADED && c.status == "True")
            .map_or_else(String::new, |c| format!(": {}: {}", c.reason, c.message));
        return Err(format!("rollout {}{degraded}", status.phase));
    }
    let revision = status.revision.as_deref();
    let serving = status
        .active_color
        .and_then(|c| status.colors.get(c))
        .filter(|c| c.ready && c.revision.as_deref() == revision);
    let promoted =
        status.phase == Phase::Healthy && status.switchover.is_none() && serving.is_some();
    Ok(match what {
        WaitFor::Promoted => promoted,
        WaitFor::PreviewReady => {
            let preview = status
                .preview_color
                .and_then(|c| status.colors.get(c))
                .is_some_and(|c| c.ready && c.revision.as_deref() == revision);
            preview
                || promoted
                || status
                    .switchover
                    .as_ref()
                    .is_some_and(|s| Some(s.revision.as_str()) == revision)
        }
    })
}

fn report(
    out: &mut impl Write,
    output: Output,
    md: &MutrDeployment,
    action: Option<&str>,
) -> Result<()> {
    let status = md.status.clone().unwrap_or_default();
    match output {
        Output::Json => {
            let doc = json!({
                "name": md.name_any(),
                "namespace": md.namespace(),
                "generation": md.metadata.generation,
                "action": action,
                "spec": { "activeColor": md.spec.active_color, "abortedRevision": md.spec.aborted_revision, "autoPromote": md.spec.strategy.auto_promote },
                "status": status,
            });
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(|e| Error::Output(e.into()))?;
            writeln!(out).map_err(Error::Output)
        }
        Output::Text => write_text(out, md, &status, action).map_err(Error::Output),
    }
}

fn write_text(
    out: &mut impl Write,
    md: &MutrDeployment,
    status: &MutrDeploymentStatus,
    action: Option<&str>,
) -> std::io::Result<()> {
    if let Some(action) = action {
        writeln!(out, "{action}")?;
    }
    let show = |c: Option<Color>| c.map_or_else(|| "-".to_owned(), |c| c.to_string());
    writeln!(
        out,
        "Name:      {}/{}",
        md.namespace().unwrap_or_default(),
        md.name_any()
    )?;
    writeln!(out, "Phase:     {}", status.phase)?;
    writeln!(
        out,
        "Revision:  {}",
        status.revision.as_deref().unwrap_or("-")
    )?;
    writeln!(
        out,
        "Active:    {}    Preview: {}",
        show(status.active_color),
        show(status.preview_color)
    )?;
    if let Some(sw) = &status.switchover {
        writeln!(
            out,
            "Switchover {}: {} -> {} at step {}{}",
            sw.id,
            show(sw.from),
            sw.to,
            sw.step,
            if sw.rollback { " (rollback)" } else { "" }
        )?;
    }
    writeln!(out, "COLOUR  REVISION    API     AI      READY")?;
    for color in Color::ALL {
        if let Some(c) = status.colors.get(color) {
            writeln!(
                out,
                "{:<7} {:<11} {:<7} {:<7} {}",
                color.as_str(),
                c.revision.as_deref().unwrap_or("-"),
                format!("{}/{}", c.api_ready_replicas, c.api_replicas),
                format!("{}/{}", c.ai_ready_replicas, c.ai_replicas),
                c.ready
            )?;
        }
    }
    for c in &status.conditions {
        writeln!(
            out,
            "{:<12} {:<6} {}: {}",
            c.type_, c.status, c.reason, c.message
        )?;
    }
    if let Some(last) = &status.last_switchover {
        let recovered = last.recovery.as_ref().map_or_else(
            || "no recovery".to_owned(),
            |r| {
                format!(
                    "{} returned to PENDING, {} still processing",
                    r.returned_to_pending, r.still_processing
                )
            },
        );
        writeln!(
            out,
            "Last switchover: {} -> {} (revision {}), finished {}, {recovered}",
            show(last.from),
            last.to,
            last.revision,
            last.finished_at.0
        )?;
    }
    Ok(())
}
