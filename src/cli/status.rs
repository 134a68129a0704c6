//! `serin status [NAME] [-n NS | -A] [--watch] [-o json]`: one line per Canary: its phase,
//! weight, step k of n as a bar, failed checks of the threshold, the last value of each metric
//! against its range, what it waits for and when its next step is due. `--watch` redraws on
//! every change (and each second, for the countdown).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde::Serialize;
use serin_core::{ConditionStatus, Phase, Stepping, Strategy};

use crate::api::canary::MetricVerdict;
use crate::api::{Canary, Provider};
use crate::cli::cluster::{self, ClusterArgs};
use crate::controller::reconcile::{commands, group};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One Canary (default: all in the namespace).
    pub name: Option<String>,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Canaries of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only the members of this release group (`serin.flagger.app/release-group`).
    #[arg(long, value_name = "GROUP", conflicts_with = "name")]
    pub group: Option<String>,
    /// Redraw on every change until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// One Canary's line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// Its release group, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub phase: String,
    pub weight: u32,
    /// `(k, n)`: steps done of the release's steps.
    pub step: (u32, u32),
    pub failed_checks: u32,
    pub threshold: u32,
    pub metrics: Vec<String>,
    pub waiting_for: String,
    /// Seconds until the next step is due, for a running release.
    pub next_step_in: Option<i64>,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    cluster::runtime()?.block_on(status(args))
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (client, default_ns) = cluster::connect(&args.cluster).await?;
    let api: Api<Canary> = match args.all_namespaces {
        true => Api::all(client),
        false => Api::namespaced(client, args.namespace.as_deref().unwrap_or(&default_ns)),
    };
    let wanted = |c: &Canary| {
        args.name.as_ref().is_none_or(|n| *n == c.name_any())
            && args
                .group
                .as_deref()
                .is_none_or(|g| group::name(c) == Some(g))
    };
    if !args.watch {
        let list = api
            .list(&ListParams::default())
            .await
            .context("cannot list Canaries")?;
        let canaries: Vec<Canary> = list.items.into_iter().filter(|c| wanted(c)).collect();
        if let Some(name) = args.name.as_ref().filter(|_| canaries.is_empty()) {
            eprintln!("serin: Canary {name} not found");
            return Ok(ExitCode::from(1));
        }
        if let Some(group) = args.group.as_ref().filter(|_| canaries.is_empty()) {
            eprintln!("serin: no Canary is in release group {group:?}");
            return Ok(ExitCode::from(1));
        }
        print!("{}", render(&canaries, args.output, Utc::now())?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut canaries: BTreeMap<(String, String), Canary> = BTreeMap::new();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = String::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))) if wanted(&c) => {
                    canaries.insert((c.namespace().unwrap_or_default(), c.name_any()), c);
                }
                Some(Ok(watcher::Event::Delete(c))) => {
                    canaries.remove(&(c.namespace().unwrap_or_default(), c.name_any()));
                }
                Some(Ok(watcher::Event::Init)) => canaries.clear(),
                Some(Err(e)) => eprintln!("serin: watch: {e}"),
                None => return Ok(ExitCode::SUCCESS),
                _ => {}
            },
            _ = tick.tick() => {}
        }
        let list: Vec<Canary> = canaries.values().cloned().collect();
        let text = render(&list, args.output, Utc::now())?;
        if text != last {
            redraw(&text);
            last = text;
        }
    }
}

/// In a terminal, in place (as `kubectl argo rollouts get --watch`); else one table per change.
fn redraw(text: &str) {
    if std::io::stdout().is_terminal() {
        print!("\x1b[H\x1b[2J{text}");
    } else {
        println!("{text}");
    }
}

fn render(canaries: &[Canary], output: Output, now: DateTime<Utc>) -> anyhow::Result<String> {
    let rows: Vec<Row> = canaries.iter().map(|c| row(c, now)).collect();
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&rows)? + "\n",
        Output::Table => table(&rows),
    })
}

pub fn row(canary: &Canary, now: DateTime<Utc>) -> Row {
    let status = canary.status.clone().unwrap_or_default();
    let plan = crate::canary_plan::from_canary(canary, Provider::Istio, Duration::ZERO).ok();
    let weight = status.canary_weight.max(0) as u32;
    let iterations = status.iterations.max(0) as u32;
    let step = plan
        .as_ref()
        .map_or((0, 0), |p| steps(&p.strategy, weight, iterations));
    let metrics = status
        .metrics
        .iter()
        .flatten()
        .map(|m| match m.verdict {
            MetricVerdict::Pass => m.summary(),
            _ => format!("{} FAIL", m.summary()),
        })
        .collect();
    let running = status.phase.is_active();
    let next_step_in = match (&plan, status.last_step_time) {
        (Some(p), Some(last)) if running => Some((last + p.interval - now).num_seconds().max(0)),
        _ => None,
    };
    Row {
        namespace: canary.namespace().unwrap_or_default(),
        name: canary.name_any(),
        group: group::name(canary).map(String::from),
        phase: status.phase.as_str().to_string(),
        weight,
        step,
        failed_checks: status.failed_checks.max(0) as u32,
        threshold: plan.as_ref().map_or(0, |p| p.threshold),
        metrics,
        waiting_for: waiting_for(canary, status.phase),
        next_step_in,
    }
}

/// Steps done and the release's steps: weights for a canary, iterations otherwise.
fn steps(strategy: &Strategy, weight: u32, iterations: u32) -> (u32, u32) {
    match strategy {
        Strategy::Canary {
            stepping: Stepping::Linear { step, max_weight },
            ..
        } => {
            let step = (*step).max(1);
            (weight.div_ceil(step), max_weight.div_ceil(step))
        }
        Strategy::Canary {
            stepping: Stepping::List { weights },
            ..
        } => {
            let done = weights.iter().filter(|w| **w <= weight).count() as u32;
            (done, weights.len() as u32)
        }
        Strategy::AbTesting { iterations: n } | Strategy::BlueGreen { iterations: n, .. } => {
            (iterations.min(*n), *n)
        }
    }
}

fn waiting_for(canary: &Canary, phase: Phase) -> String {
    if commands::paused(canary) {
        return "paused (serin resume)".into();
    }
    if canary.spec.suspend == Some(true) {
        return "suspended (spec.suspend)".into();
    }
    let conditions = canary.status.as_ref().and_then(|s| s.conditions.clone());
    if let Some(blocked) = conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == ConditionStatus::False)
    {
        return format!(
            "a fix: {}",
            blocked.message.as_deref().unwrap_or(&blocked.reason)
        );
    }
    let queued = canary
        .status
        .as_ref()
        .is_some_and(|s| s.waiting_for.as_deref() == Some("concurrency"));
    match phase {
        Phase::New | Phase::Initializing => "the primary to be ready",
        Phase::Waiting if queued => "a release slot (--max-progressing)",
        Phase::Waiting => "the confirm-rollout gate",
        Phase::WaitingPromotion => match group::name(canary) {
            Some(g) => return format!("release group {g}, or the confirm-promotion gate"),
            None => "the confirm-promotion gate",
        },
        Phase::Progressing => "the next check",
        Phase::Promoting => "the primary's rollout",
        Phase::Finalising => "the target to scale down",
        Phase::Initialized | Phase::Succeeded | Phase::Failed => return at_rest(canary),
        Phase::Terminating | Phase::Terminated => "deletion",
    }
    .into()
}

/// Between releases: a new revision, and how many earlier ones would come back at once
/// (`analysis.rollbackWindow`).
fn at_rest(canary: &Canary) -> String {
    let window = canary
        .spec
        .analysis()
        .map_or(0, |a| a.rollback_window() as usize);
    let kept = canary
        .status
        .as_ref()
        .and_then(|s| s.promoted_before.as_ref())
        .map_or(0, Vec::len)
        .min(window);
    match kept {
        0 => "a new revision".into(),
        n => format!("a new revision; {n} earlier revision(s) roll back without analysis"),
    }
}

fn bar((done, total): (u32, u32)) -> String {
    let total = total.max(1);
    let width = total.min(10);
    let filled = (done.min(total) * width).div_ceil(total);
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled as usize),
        "-".repeat((width - filled) as usize)
    )
}

fn table(rows: &[Row]) -> String {
    let mut cells = vec![
        [
            "NAMESPACE",
            "NAME",
            "PHASE",
            "WEIGHT",
            "STEP",
            "FAILED",
            "METRICS",
            "WAITING FOR",
            "NEXT STEP",
        ]
        .map(String::from),
    ];
    for r in rows {
        cells.push([
            r.namespace.clone(),
            match &r.group {
                Some(g) => format!("{} [{g}]", r.name),
                None => r.name.clone(),
            },
            r.phase.clone(),
            format!("{}%", r.weight),
            bar(r.step),
            format!("{}/{}", r.failed_checks, r.threshold),
            if r.metrics.is_empty() {
                "-".into()
            } else {
                r.metrics.join(", ")
            },
            r.waiting_for.clone(),
            r.next_step_in.map_or("-".into(), |s| format!("in {s}s")),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_running_release_shows_its_step_checks_metrics_and_countdown() {
        let now = Utc::now();
        let canary: Canary = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "30s", "threshold": 5, "stepWeight": 10, "maxWeight": 50}},
            "status": {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 1,
                "lastStepTime": (now - chrono::TimeDelta::seconds(10)).to_rfc3339(),
                "metrics": [{"name": "request-success-rate", "value": 99.5, "thresholdMin": 99.0,
                             "verdict": "pass"}]}
        }))
        .unwrap();
        let r = row(&canary, now);
        assert_eq!(r.phase, "Progressing");
        assert_eq!(r.step, (2, 5));
        assert_eq!((r.failed_checks, r.threshold), (1, 5));
        assert_eq!(r.metrics, ["request-success-rate 99.50 >= 99"]);
        assert_eq!(r.waiting_for, "the next check");
        assert!(
            matches!(r.next_step_in, Some(19..=20)),
            "{:?}",
            r.next_step_in
        );
        let text = table(&[r]);
        assert!(text.contains("[##---] 2/5"), "{text}");
        assert!(text.contains("20%"), "{text}");
    }

    #[test]
    fn a_release_group_member_names_its_group() {
        let canary: Canary = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "cart", "namespace": "test",
                "annotations": {"serin.flagger.app/release-group": "shop"}},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"},
                "service": {"port": 9898},
                "analysis": {"interval": "30s", "threshold": 5, "stepWeight": 10, "maxWeight": 50}},
            "status": {"phase": "WaitingPromotion", "canaryWeight": 50}
        }))
        .unwrap();
        let r = row(&canary, Utc::now());
        assert_eq!(r.group.as_deref(), Some("shop"));
        assert_eq!(
            r.waiting_for,
            "release group shop, or the confirm-promotion gate"
        );
        assert!(table(&[r]).contains("cart [shop]"));
    }

    #[test]
    fn a_canary_at_rest_says_which_revisions_roll_back_at_once() {
        let canary = |window: i32, before: Value| -> Canary {
            serde_json::from_value(json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": "podinfo", "namespace": "test"},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "analysis": {"interval": "30s", "threshold": 5, "iterations": 3,
                                 "rollbackWindow": window}},
                "status": {"phase": "Succeeded", "promotedBefore": before}
            }))
            .unwrap()
        };
        let now = Utc::now();
        assert_eq!(
            row(&canary(2, json!(["a", "b"])), now).waiting_for,
            "a new revision; 2 earlier revision(s) roll back without analysis"
        );
        assert_eq!(
            row(&canary(0, json!(["a"])), now).waiting_for,
            "a new revision"
        );
    }

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar((0, 4)), "[----] 0/4");
        assert_eq!(bar((4, 4)), "[####] 4/4");
        assert_eq!(bar((10, 20)), "[#####-----] 10/20");
    }
}
