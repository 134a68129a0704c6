//! `serin plan -f CANARY.yaml [-o json]`: what a release of a Canary does, step by step on
//! the happy path (every workload ready at once, every gate and check passing), and the
//! minimum wall time of a full release. It is the engine itself, driven by
//! `serin_core::simulate`, so it cannot disagree with what the controller does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use serin_core::simulate::{self, Simulation};
use serin_core::{Plan, Probe, Stepping, Strategy};

use crate::api::{Canary, Provider};
use crate::cli::check::{parse_documents, read};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Canary manifest (YAML; other kinds in the file are ignored).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub planning: ControllerDefaults,
}

/// The controller's flags a Canary's planned steps depend on, for the commands that show
/// them (`serin plan`, `serin report`, `serin dashboard`).
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerDefaults {
    /// The controller's `--mesh-provider`, for the planned steps of a Canary without
    /// `spec.provider`.
    #[arg(long, value_name = "PROVIDER", default_value = "istio")]
    pub mesh_provider: Provider,
    /// The controller's `--min-analysis-interval`, for the planned steps.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_min_interval)]
    pub min_analysis_interval: Duration,
}

pub(crate) fn parse_min_interval(s: &str) -> Result<Duration, String> {
    crate::api::parse_duration(s).map_err(|e| e.to_string())
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let file = args.file.display().to_string();
    let text = read(&args.file).with_context(|| format!("{file}: cannot read"))?;
    let objects = parse_documents(&text).with_context(|| format!("{file}: cannot parse"))?;
    let canaries: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o.get("kind").and_then(Value::as_str) == Some("Canary")
                && o.get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.starts_with("flagger.app/"))
        })
        .collect();
    if canaries.is_empty() {
        anyhow::bail!("{file}: no Canary (flagger.app) in this file");
    }

    let mut invalid = false;
    let mut reports = Vec::new();
    for object in canaries {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_string();
        match plan_of(object, &args) {
            Ok((plan, sim)) => {
                let group = object
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(crate::api::canary::RELEASE_GROUP))
                    .and_then(Value::as_str)
                    .map(|g| g.trim().to_string());
                reports.push((plan, sim, group));
            }
            Err(problems) => {
                invalid = true;
                for p in problems {
                    println!("{file}: Canary/{name}: {p}");
                }
            }
        }
    }
    if invalid {
        println!("run `serin check -f {file}` for details; nothing planned");
        return Ok(ExitCode::from(1));
    }
    match args.output {
        Output::Json => {
            let docs: Vec<Value> = reports
                .iter()
                .map(|(p, s, g)| to_json(p, s, g.as_deref()))
                .collect();
            let out = if docs.len() == 1 {
                docs.into_iter().next().unwrap_or(Value::Null)
            } else {
                Value::Array(docs)
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Output::Text => {
            for (i, (plan, sim, group)) in reports.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", to_text(plan, sim, group.as_deref()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_of(
    object: &Value,
    args: &PlanArgs,
) -> Result<(Plan, Simulation), Vec<crate::api::Problem>> {
    let checked = crate::api::validate::object(object, args.planning.mesh_provider);
    if let Some(checked) = checked
        && !checked.problems.is_empty()
    {
        return Err(checked.problems);
    }
    let canary: Canary = serde_json::from_value(object.clone())
        .map_err(|e| vec![crate::api::Problem::new("spec", e.to_string())])?;
    let plan = crate::canary_plan::from_canary(
        &canary,
        args.planning.mesh_provider,
        args.planning.min_analysis_interval,
    )?;
    let sim = simulate::happy_path(&plan)
        .map_err(|e| vec![crate::api::Problem::new("spec.analysis", e.to_string())])?;
    Ok((plan, sim))
}

fn to_json(plan: &Plan, sim: &Simulation, group: Option<&str>) -> Value {
    let ticks: Vec<Value> = sim
        .steps
        .iter()
        .map(|s| {
            json!({
                "atSeconds": s.at_seconds,
                "phase": s.phase.as_str(),
                "canaryWeight": s.canary_weight,
                "primaryWeight": s.primary_weight,
                "mirrored": s.mirrored,
                "iterations": s.iterations,
                "gates": s.probes,
                "events": s.events,
            })
        })
        .collect();
    json!({
        "canary": plan.canary,
        "strategy": plan.strategy.label(),
        "plan": plan,
        "ticks": ticks,
        "minDurationSeconds": sim.min_duration_seconds,
        "analyses": sim.analyses,
        "releaseGroup": group,
    })
}

/// `group`: the Canary's release group, whose members' steps and promotion wait for each
/// other (the simulation is of this Canary alone).
fn to_text(plan: &Plan, sim: &Simulation, group: Option<&str>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Canary {} ({} strategy)",
        plan.canary,
        plan.strategy.label()
    );
    let _ = writeln!(
        out,
        "  {}; interval {}; rollback after {} failed check(s); progress deadline {}",
        traffic(plan),
        human(plan.interval.num_seconds()),
        plan.threshold,
        human(plan.progress_deadline.num_seconds()),
    );
    if plan.in_place() {
        let _ = writeln!(
            out,
            "  StatefulSet released in place: each weight is the share of its pods on the new \
             revision (rounded up; at least one, never all), moved by its partition; promotion \
             rolls every pod"
        );
    }
    if plan.skip_analysis {
        let _ = writeln!(out, "  skipAnalysis: promoted without analysis");
    }
    if plan.rollback_window > 0 {
        let _ = writeln!(
            out,
            "  rollbackWindow: a target set back to one of the {} revision(s) promoted before \
             the current one is promoted again at once, without analysis",
            plan.rollback_window
        );
    }
    if let Some(group) = group {
        let _ = writeln!(
            out,
            "  release group {group}: each step waits for the other members to be at most one \
             step behind, promotion for every member's last check, and a member's failure \
             rolls this release back (times below are this Canary's alone)"
        );
    }
    if plan.suspend {
        let _ = writeln!(
            out,
            "  suspend: true; nothing happens until it is unsuspended (shown as if it were)"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:>8}  {:<17} {:>7} {:>7} {:>5}  WHAT",
        "AT", "PHASE", "PRIMARY", "CANARY", "ITER"
    );
    for s in &sim.steps {
        let mut what: Vec<String> = s.probes.iter().map(|p| gate_name(*p).to_string()).collect();
        what.extend(s.events.iter().cloned());
        let canary = if s.mirrored {
            "mirror".to_string()
        } else {
            s.canary_weight.to_string()
        };
        let _ = writeln!(
            out,
            "  {:>8}  {:<17} {:>7} {:>7} {:>5}  {}",
            human(s.at_seconds),
            s.phase.as_str(),
            s.primary_weight,
            canary,
            s.iterations,
            what.join("; ")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Minimum wall time of a release: {} (from a new revision to Succeeded, with workloads \
         ready at once and every check passing)",
        human(sim.min_duration_seconds)
    );
    let _ = writeln!(
        out,
        "Analyses before promotion: {} (a judged metric's confidence is shared by every one)",
        sim.analyses
    );
    if matches!(plan.strategy, Strategy::AbTesting { .. }) {
        let _ = writeln!(
            out,
            "A/B testing: the weights apply to requests matching analysis.match; all other \
             requests stay on the primary."
        );
    }
    out
}

fn traffic(plan: &Plan) -> String {
    match &plan.strategy {
        Strategy::Canary { stepping, mirror } => {
            let m = if *mirror { ", mirrored first" } else { "" };
            match stepping {
                Stepping::Linear { step, max_weight } => {
                    format!("weight step {step} up to {max_weight}{m}")
                }
                Stepping::List { weights } => {
                    let w: Vec<String> = weights.iter().map(u32::to_string).collect();
                    format!("weight steps {}{m}", w.join(", "))
                }
            }
        }
        Strategy::AbTesting { iterations } => format!("A/B testing, {iterations} iterations"),
        Strategy::BlueGreen { iterations, mirror } => {
            let m = if *mirror { ", with mirroring" } else { "" };
            format!("blue/green, {iterations} iterations{m}")
        }
    }
}

fn gate_name(p: Probe) -> &'static str {
    match p {
        Probe::ConfirmRollout => "confirm-rollout gate",
        Probe::Rollback => "rollback hooks",
        Probe::PreRollout => "pre-rollout hooks",
        Probe::Analysis => "analysis (rollout hooks, metrics)",
        Probe::ConfirmTrafficIncrease => "confirm-traffic-increase gate",
        Probe::ConfirmPromotion => "confirm-promotion gate",
    }
}

/// Seconds as `1h2m3s`, `4m`, `10s`.
fn human(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollback_window_is_printed() {
        let mut plan = Plan::example(serin_core::Stepping::Linear {
            step: 20,
            max_weight: 60,
        });
        let sim = serin_core::simulate::happy_path(&plan).unwrap();
        assert!(!to_text(&plan, &sim, None).contains("rollbackWindow"));
        plan.rollback_window = 3;
        assert!(to_text(&plan, &sim, None).contains("one of the 3 revision(s) promoted before"));
    }

    #[test]
    fn a_stateful_set_says_its_weights_are_pods() {
        let mut plan = Plan::example(serin_core::Stepping::Linear {
            step: 20,
            max_weight: 60,
        });
        let sim = serin_core::simulate::happy_path(&plan).unwrap();
        assert!(!to_text(&plan, &sim, None).contains("in place"));
        plan.target_kind = "StatefulSet".into();
        let text = to_text(&plan, &sim, None);
        assert!(text.contains("StatefulSet released in place"), "{text}");
    }

    #[test]
    fn the_release_group_is_printed() {
        let plan = Plan::example(serin_core::Stepping::Linear {
            step: 20,
            max_weight: 60,
        });
        let sim = serin_core::simulate::happy_path(&plan).unwrap();
        assert!(!to_text(&plan, &sim, None).contains("release group"));
        let text = to_text(&plan, &sim, Some("checkout"));
        assert!(
            text.contains("release group checkout: each step waits"),
            "{text}"
        );
        assert_eq!(
            to_json(&plan, &sim, Some("checkout"))["releaseGroup"],
            "checkout"
        );
    }

    #[test]
    fn durations_print_like_kubectl() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(190), "3m10s");
        assert_eq!(human(3600), "1h");
        assert_eq!(human(3661), "1h1m1s");
    }
}
