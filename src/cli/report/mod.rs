//! `serin report NAME [-n NS] [-o FILE] [--format html|md]`: the current or last release of a
//! Canary in one file to attach to an incident or a pull request. HTML by default, one
//! self-contained page (summary, the canary's weight over time, the last analysis' metrics
//! against their ranges, a chart per metric of every analysis of the release, the last
//! releases from `status.history`, the events, the planned steps); `--format md` the same as
//! Markdown, without the charts.

mod charts;
pub(crate) mod html;
mod markdown;
pub(crate) mod model;
mod series;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::api::canary::{MetricObservation, MetricVerdict};
use crate::api::{Canary, Provider};
use crate::cli::cluster::{self, ClusterArgs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    Md,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The Canary.
    pub name: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
    #[command(flatten)]
    pub planning: crate::cli::plan::ControllerDefaults,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Events read, at most (one list; the report shows the latest of them).
const EVENTS_READ: u32 = 500;

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = cluster::runtime()?.block_on(gather(&args))?;
    let text = match args.format {
        Format::Html => html::render(&report),
        Format::Md => markdown::render(&report),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("--output {}: cannot write", path.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn gather(args: &ReportArgs) -> anyhow::Result<model::Report> {
    let (client, default_ns) = cluster::connect(&args.cluster).await?;
    let ns = args.namespace.as_deref().unwrap_or(&default_ns);
    let canary = Api::<Canary>::namespaced(client.clone(), ns)
        .get_opt(&args.name)
        .await
        .with_context(|| format!("cannot read Canary {ns}/{}", args.name))?
        .with_context(|| format!("no Canary {}/{}: see `serin status -n {ns}`", ns, args.name))?;
    let (report, unread) = report_of(
        &client,
        &canary,
        args.planning.mesh_provider,
        args.planning.min_analysis_interval,
    )
    .await;
    if let Some(e) = unread {
        eprintln!("serin report: events of {ns}/{} not read: {e}", args.name);
    }
    Ok(report)
}

/// The report of `canary`: its events read with `client`, its planned steps with the
/// controller's `mesh_provider` and `min_interval`. Events are the timeline, not the verdict:
/// when they cannot be read (no permission) the report shows the status, and the error comes
/// back beside it.
pub(crate) async fn report_of(
    client: &kube::Client,
    canary: &Canary,
    mesh_provider: Provider,
    min_interval: Duration,
) -> (model::Report, Option<kube::Error>) {
    let ns = canary.namespace().unwrap_or_default();
    let params = ListParams::default()
        .fields(&format!("involvedObject.name={}", canary.name_any()))
        .limit(EVENTS_READ);
    let (events, unread) = match Api::<Event>::namespaced(client.clone(), &ns)
        .list(&params)
        .await
    {
        Ok(list) => (list.items, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let planned = crate::canary_plan::from_canary(canary, mesh_provider, min_interval)
        .ok()
        .and_then(|plan| serin_core::simulate::happy_path(&plan).ok())
        .map(|sim| sim.steps)
        .unwrap_or_default();
    let report = model::Report::new(canary, events, &planned, Utc::now());
    (report, unread)
}

/// `≥ 99`, `≤ 500`, `1 … 5`, or `-`.
fn range(m: &MetricObservation) -> String {
    match (m.threshold_min, m.threshold_max) {
        (Some(min), Some(max)) => format!("{min} … {max}"),
        (Some(min), None) => format!("≥ {min}"),
        (None, Some(max)) => format!("≤ {max}"),
        (None, None) => "-".into(),
    }
}

/// A verdict with a symbol, readable without colour.
fn verdict(v: MetricVerdict) -> &'static str {
    match v {
        MetricVerdict::Pass => "✔ pass",
        MetricVerdict::Fail => "✖ fail",
        MetricVerdict::NoData => "– no data",
        MetricVerdict::Error => "✖ error",
    }
}

/// A time to the second, UTC.
fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}
