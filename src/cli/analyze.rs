//! `serin analyze -f CANARY.yaml`: run a canary's metric checks once, now, against the real
//! providers, and print what each returned. For testing queries before a release.
//!
//! MetricTemplates and their Secrets are read from the cluster (`--kubeconfig`, else the usual
//! kubeconfig lookup or the in-cluster config), exactly as the controller reads them. Output,
//! per canary: a table (metric, provider, value, accepted range, verdict), then each metric's
//! rendered query and, when it did not pass, why; then the step's outcome.
//!
//! Exit status: 0 when every metric passes, 1 when any fails, has no data under a `hold`
//! policy, or errs, 2 when the file or the cluster cannot be read.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::analysis::provider::format_value;
use crate::analysis::{Analyzer, Evaluation};
use crate::api::canary::MetricVerdict;
use crate::api::{Canary, Provider};
use crate::cli::check::{parse_documents, read};

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// YAML file with the Canary (or Canaries) to analyze; `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The cluster holding the MetricTemplates and Secrets.
    #[command(flatten)]
    pub cluster: crate::cli::cluster::ClusterArgs,
    /// Prometheus of the builtin metrics and of templates without an address (the
    /// controller's `--metrics-server`); a Canary's `spec.metricsServer` overrides it.
    #[arg(long, value_name = "URL", default_value = "http://prometheus:9090")]
    pub metrics_server: String,
    /// Provider assumed for Canaries without `spec.provider` (the controller's
    /// `--mesh-provider`).
    #[arg(long, value_name = "PROVIDER", default_value = "istio")]
    pub mesh_provider: Provider,
    /// Per-request timeout of the metric providers, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub timeout: u64,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let text = read(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let canaries = canaries(&text).with_context(|| format!("{}", args.file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(analyze(args, canaries))
}

/// The `flagger.app` Canaries of a YAML stream.
fn canaries(text: &str) -> anyhow::Result<Vec<Canary>> {
    let mut canaries = Vec::new();
    for object in parse_documents(text)? {
        let is_canary = object.get("kind").and_then(|k| k.as_str()) == Some("Canary")
            && object
                .get("apiVersion")
                .and_then(|v| v.as_str())
                .is_some_and(|v| v.starts_with("flagger.app/"));
        if !is_canary {
            continue;
        }
        let name = object
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string();
        let canary: Canary = serde_json::from_value(object)
            .with_context(|| format!("Canary {name} is not valid"))?;
        canaries.push(canary);
    }
    anyhow::ensure!(!canaries.is_empty(), "no flagger.app Canary in the file");
    Ok(canaries)
}

async fn analyze(args: AnalyzeArgs, canaries: Vec<Canary>) -> anyhow::Result<ExitCode> {
    let (client, default_namespace) = crate::cli::cluster::connect(&args.cluster).await?;
    let analyzer = Analyzer::new(client, args.metrics_server.clone(), args.mesh_provider)?
        .with_timeout(Duration::from_secs(args.timeout.max(1)))?;

    let mut all_pass = true;
    let mut stdout = std::io::stdout().lock();
    for (index, mut canary) in canaries.into_iter().enumerate() {
        if canary.metadata.namespace.is_none() {
            canary.metadata.namespace = Some(default_namespace.clone());
        }
        let route = analyzer.knative_route(&canary).await;
        let evaluation = analyzer.run(&canary, route.as_deref()).await;
        all_pass &= evaluation.outcome == serin_core::Analysis::Pass;
        if index > 0 {
            writeln!(stdout)?;
        }
        stdout.write_all(report(&canary, &evaluation).as_bytes())?;
    }
    Ok(if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The printed report of one canary.
pub fn report(canary: &Canary, evaluation: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Canary {}/{}",
        canary.metadata.namespace.as_deref().unwrap_or("default"),
        canary.metadata.name.as_deref().unwrap_or("?")
    );
    if evaluation.checks.is_empty() {
        let _ = writeln!(out, "no metrics in spec.analysis.metrics");
        return out;
    }
    let mut rows = vec![[
        "METRIC".to_string(),
        "PROVIDER".to_string(),
        "VALUE".to_string(),
        "RANGE".to_string(),
        "VERDICT".to_string(),
    ]];
    for check in &evaluation.checks {
        let value = check.observation.value.map_or_else(
            || "-".to_string(),
            |v| format!("{}{}", format_value(v), check.unit),
        );
        let verdict = match check.observation.verdict {
            MetricVerdict::Pass => "pass",
            MetricVerdict::Fail => "fail",
            MetricVerdict::NoData => "no data",
            MetricVerdict::Error => "error",
        };
        rows.push([
            check.name.clone(),
            check.provider.clone(),
            value,
            check.bounds.describe(check.unit),
            verdict.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(out);
    for check in &evaluation.checks {
        let _ = writeln!(
            out,
            "{}: {}",
            check.name,
            check.query.as_deref().unwrap_or("(query not rendered)")
        );
        if let Some(message) = &check.observation.message {
            let _ = writeln!(out, "  {message}");
        }
    }
    let _ = writeln!(out);
    let _ = match &evaluation.outcome {
        serin_core::Analysis::Pass => writeln!(out, "result: pass"),
        serin_core::Analysis::Fail(reason) => writeln!(out, "result: fail: {reason}"),
        serin_core::Analysis::Hold(reason) => writeln!(out, "result: hold: {reason}"),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flagger_canaries_are_read() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
                    apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: podinfo}\n\
                    spec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n  \
                    service: {port: 80}\n  analysis: {}\n";
        let found = canaries(text).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].metadata.name.as_deref(), Some("podinfo"));
        assert!(canaries("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").is_err());
    }
}
