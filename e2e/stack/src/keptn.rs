//! A stand-in for Keptn's metrics operator (`metrics.keptn.sh/v1beta1`), on either control
//! plane, answering from the traffic world. Every half second it reads, through the API:
//!
//! - **KeptnMetrics**: each one due (never fetched, or `status.lastUpdated` older than
//!   `spec.fetchIntervalSeconds`, default 10) gets `status.value` (the number as text, as
//!   Keptn writes it) and `status.lastUpdated`. Its `spec.query` is a world measure
//!   (`traffic::measures`), optionally restricted by a label selector over the requests'
//!   `workload` and `service`: `request-success-rate{workload=podinfo}`, over the metric's
//!   namespace and the last `spec.range.interval` (default `1m`). No request in the window, or
//!   a query it cannot read, leaves `status.value` empty with the reason in `status.errMsg`.
//!   `spec.provider` is not read: the world is the only provider.
//! - **Analyses** not yet `Completed`: the AnalysisDefinition they name
//!   (`spec.analysisDefinition.name`, in `.namespace` or the Analysis's) is evaluated over the
//!   last `spec.timeframe.recent` (default `1m`; `from`/`to` are not read). Each objective's
//!   AnalysisValueTemplate (`analysisValueTemplateRef`, in the definition's namespace unless
//!   named) holds a query as above, with `{{.key}}` replaced by the Analysis's `spec.args`;
//!   the objective fails when its value meets `target.failure` (`lessThan`,
//!   `lessThanOrEqual`, `greaterThan`, `greaterThanOrEqual`, `equalTo` with a `fixedValue`,
//!   or `inRange` / `notInRange` with `lowBound` and `highBound`), has no value, or cannot be
//!   read. The score is the passed objectives' `weight` (default 1) over the total; the
//!   Analysis passes when the score reaches `spec.totalScore.passPercentage` (default 100)
//!   and no `keyObjective` failed. It gets `status.state: Completed`, `status.pass`,
//!   `status.warning: false` and `status.raw` (the objectives' values, JSON text).
//!   `warning` targets are not evaluated. An Analysis whose definition does not exist is left
//!   as it is (Keptn retries; here the next pass does), so it never completes.
//!
//! The CRDs are in `e2e/crds/keptn.yaml` (minimal: free-form `spec` and `status`, the status
//! subresource on KeptnMetric and Analysis).

use crate::selector::LabelSelector;
use crate::traffic::measures::{self, Measure};
use crate::traffic::world::World;
use anyhow::{Context, Result, anyhow, bail};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const GROUP: &str = "metrics.keptn.sh";
const VERSION: &str = "v1beta1";
const PASS: Duration = Duration::from_millis(500);

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

struct Operator {
    client: Client,
    world: Arc<World>,
    /// The namespace served (`None`: every namespace).
    namespace: Option<String>,
}

/// Runs until the task is aborted, serving `namespace` (`None`: every namespace). Needs the
/// CRDs of `e2e/crds/keptn.yaml`.
pub async fn run(client: Client, world: Arc<World>, namespace: Option<String>) -> Result<()> {
    let operator = Operator {
        client,
        world,
        namespace,
    };
    let mut tick = tokio::time::interval(PASS);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = operator.fetch_metrics().await {
            tracing::debug!("keptn stand-in: KeptnMetrics: {e:#}");
        }
        if let Err(e) = operator.complete_analyses().await {
            tracing::debug!("keptn stand-in: Analyses: {e:#}");
        }
    }
}

/// A query: a measure and an optional `{selector}`.
fn parse_query(query: &str) -> Result<(Measure, LabelSelector)> {
    let query = query.trim();
    let (name, selector) = match query.split_once('{') {
        Some((name, rest)) => {
            let selector = rest
                .strip_suffix('}')
                .ok_or_else(|| anyhow!("query {query:?}: the selector has no closing brace"))?;
            (name.trim(), selector)
        }
        None => (query, ""),
    };
    let measure = Measure::parse(name).ok_or_else(|| {
        anyhow!(
            "query {query:?}: unknown measure {name:?} (the stand-in knows {})",
            Measure::names()
        )
    })?;
    let selector = LabelSelector::parse(selector).map_err(|e| anyhow!("query {query:?}: {e}"))?;
    Ok((measure, selector))
}

fn duration_at(object: &Value, pointer: &str) -> Result<Duration> {
    match object.pointer(pointer).and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => crate::scenario::parse_duration(text.trim()),
        _ => Ok(Duration::from_secs(60)),
    }
}

fn now_text() -> String {
    crate::clock::timestamp()
}

impl Operator {
    fn api(&self, ns: Option<&str>, kind: &str, plural: &str) -> Api<DynamicObject> {
        let ar = resource(kind, plural);
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// The value of a query over the last `window` of `namespace`'s requests.
    fn evaluate(&self, namespace: &str, query: &str, window: Duration) -> Result<f64> {
        let (measure, selector) = parse_query(query)?;
        measures::overall(&self.world, namespace, measure, &selector, window)
            .ok_or_else(|| anyhow!("no requests match {query:?} in the last {window:?}"))
    }

    async fn fetch_metrics(&self) -> Result<()> {
        let metrics = self
            .api(self.namespace.as_deref(), "KeptnMetric", "keptnmetrics")
            .list(&ListParams::default())
            .await?;
        for metric in metrics.items {
            if !due(&metric) {
                continue;
            }
            let ns = metric.namespace().unwrap_or_default();
            let query = metric
                .data
                .pointer("/spec/query")
                .and_then(Value::as_str)
                .unwrap_or("");
            let value = duration_at(&metric.data, "/spec/range/interval")
                .and_then(|window| self.evaluate(&ns, query, window));
            let status = match value {
                Ok(v) => json!({"value": v.to_string(), "errMsg": "", "lastUpdated": now_text()}),
                Err(e) => {
                    json!({"value": "", "errMsg": format!("{e:#}"), "lastUpdated": now_text()})
                }
            };
            let api = self.api(Some(&ns), "KeptnMetric", "keptnmetrics");
            api.patch_status(
                &metric.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .with_context(|| format!("status of KeptnMetric {ns}/{}", metric.name_any()))?;
        }
        Ok(())
    }

    async fn complete_analyses(&self) -> Result<()> {
        let analyses = self
            .api(self.namespace.as_deref(), "Analysis", "analyses")
            .list(&ListParams::default())
            .await?;
        for analysis in analyses.items {
            let state = analysis
                .data
                .pointer("/status/state")
                .and_then(Value::as_str);
            if state == Some("Completed") || analysis.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let ns = analysis.namespace().unwrap_or_default();
            let name = analysis.name_any();
            let Some(status) = self.verdict(&ns, &analysis.data).await? else {
                continue;
            };
            let api = self.api(Some(&ns), "Analysis", "analyses");
            match api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": status})),
                )
                .await
            {
                Ok(_) => {}
                // Deleted meanwhile: its reader gave up.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e).with_context(|| format!("status of Analysis {ns}/{name}")),
            }
        }
        Ok(())
    }

    /// The status of a completed Analysis, or `None` while its definition does not exist.
    async fn verdict(&self, ns: &str, analysis: &Value) -> Result<Option<Value>> {
        let Some(definition_name) = analysis
            .pointer("/spec/analysisDefinition/name")
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        let definition_ns = analysis
            .pointer("/spec/analysisDefinition/namespace")
            .and_then(Value::as_str)
            .unwrap_or(ns);
        let Some(definition) = self
            .api(
                Some(definition_ns),
                "AnalysisDefinition",
                "analysisdefinitions",
            )
            .get_opt(definition_name)
            .await?
        else {
            return Ok(None);
        };
        let window = duration_at(analysis, "/spec/timeframe/recent")?;
        let args: BTreeMap<String, String> = analysis
            .pointer("/spec/args")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), String::from),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let objectives = definition
            .data
            .pointer("/spec/objectives")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (mut total, mut achieved, mut key_failed) = (0.0, 0.0, false);
        let mut raw = Vec::new();
        for objective in &objectives {
            let weight = objective
                .get("weight")
                .and_then(Value::as_f64)
                .unwrap_or(1.0);
            let outcome = self
                .objective(ns, definition_ns, objective, &args, window)
                .await;
            let passed = outcome.as_ref().is_ok_and(|(_, failed)| !failed);
            total += weight;
            if passed {
                achieved += weight;
            } else if objective.get("keyObjective").and_then(Value::as_bool) == Some(true) {
                key_failed = true;
            }
            raw.push(match outcome {
                Ok((value, _)) => json!({"objective": objective, "value": value, "pass": passed}),
                Err(e) => json!({"objective": objective, "error": format!("{e:#}"), "pass": false}),
            });
        }
        let pass_percentage = definition
            .data
            .pointer("/spec/totalScore/passPercentage")
            .and_then(Value::as_f64)
            .unwrap_or(100.0);
        let score = if total > 0.0 {
            100.0 * achieved / total
        } else {
            0.0
        };
        let pass = !key_failed && total > 0.0 && score >= pass_percentage;
        let raw = json!({"objectiveResults": raw, "totalScore": score, "maximumScore": 100});
        Ok(Some(json!({
            "state": "Completed",
            "pass": pass,
            "warning": false,
            "raw": raw.to_string(),
        })))
    }

    /// One objective's value and whether it meets its failure target.
    async fn objective(
        &self,
        ns: &str,
        definition_ns: &str,
        objective: &Value,
        args: &BTreeMap<String, String>,
        window: Duration,
    ) -> Result<(f64, bool)> {
        let reference = objective
            .get("analysisValueTemplateRef")
            .context("no analysisValueTemplateRef")?;
        let name = reference
            .get("name")
            .and_then(Value::as_str)
            .context("analysisValueTemplateRef has no name")?;
        let template_ns = reference
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(definition_ns);
        let template = self
            .api(
                Some(template_ns),
                "AnalysisValueTemplate",
                "analysisvaluetemplates",
            )
            .get(name)
            .await
            .with_context(|| format!("AnalysisValueTemplate {template_ns}/{name}"))?;
        let query = template
            .data
            .pointer("/spec/query")
            .and_then(Value::as_str)
            .context("the AnalysisValueTemplate has no spec.query")?;
        let value = self.evaluate(ns, &substitute(query, args)?, window)?;
        let failed = match objective.pointer("/target/failure") {
            Some(target) => meets(target, value)?,
            None => false,
        };
        Ok((value, failed))
    }
}

/// Whether a KeptnMetric is due a fetch.
fn due(metric: &DynamicObject) -> bool {
    let interval = metric
        .data
        .pointer("/spec/fetchIntervalSeconds")
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(10.0);
    let last = metric
        .data
        .pointer("/status/lastUpdated")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match last {
        None => true,
        Some(last) => {
            let age = crate::clock::utc().signed_duration_since(last);
            age.num_milliseconds() as f64 >= interval * 1000.0
        }
    }
}

/// `{{.key}}` (spaces allowed inside the braces) replaced by the Analysis's argument.
fn substitute(query: &str, args: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").context("an unclosed {{ in the query")?;
        let key = after[..end].trim();
        let key = key
            .strip_prefix('.')
            .with_context(|| format!("{{{{{key}}}}} is not an argument (write {{{{.{key}}}}})"))?;
        let value = args
            .get(key)
            .with_context(|| format!("the Analysis has no argument {key:?}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `value` meets a Keptn target (`{lessThan: {fixedValue: 99}}`, ...).
fn meets(target: &Value, value: f64) -> Result<bool> {
    let number = |v: Option<&Value>| -> Result<f64> {
        match v {
            Some(Value::Number(n)) => n.as_f64().context("not a number"),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .with_context(|| format!("{s:?} is not a number")),
            _ => bail!("a target needs a number"),
        }
    };
    let fixed = |op: &Value| number(op.get("fixedValue"));
    let range = |op: &Value| -> Result<(f64, f64)> {
        Ok((number(op.get("lowBound"))?, number(op.get("highBound"))?))
    };
    let object = target.as_object().context("a target is an object")?;
    let Some((operator, operand)) = object.iter().next() else {
        bail!("an empty target")
    };
    Ok(match operator.as_str() {
        "lessThan" => value < fixed(operand)?,
        "lessThanOrEqual" => value <= fixed(operand)?,
        "greaterThan" => value > fixed(operand)?,
        "greaterThanOrEqual" => value >= fixed(operand)?,
        "equalTo" => value == fixed(operand)?,
        "inRange" => {
            let (low, high) = range(operand)?;
            (low..=high).contains(&value)
        }
        "notInRange" => {
            let (low, high) = range(operand)?;
            !(low..=high).contains(&value)
        }
        other => bail!("operator {other:?} is not emulated"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_a_measure_and_a_selector() {
        assert!(parse_query("request-success-rate").is_ok());
        assert!(parse_query(" request-success-rate{workload=podinfo,service!=x} ").is_ok());
        assert!(parse_query("request-success-rate{workload=podinfo").is_err());
        assert!(parse_query("rate(x[1m])").is_err());
    }

    #[test]
    fn arguments_fill_the_template() {
        let args = BTreeMap::from([("workload".to_string(), "podinfo".to_string())]);
        assert_eq!(
            substitute("request-success-rate{workload={{ .workload }}}", &args).unwrap(),
            "request-success-rate{workload=podinfo}"
        );
        assert!(substitute("x{{.missing}}", &args).is_err());
        assert!(substitute("x{{workload}}", &args).is_err());
    }

    #[test]
    fn targets_compare_as_keptn_does() {
        assert!(meets(&json!({"lessThan": {"fixedValue": 99}}), 70.0).unwrap());
        assert!(!meets(&json!({"lessThan": {"fixedValue": "99"}}), 100.0).unwrap());
        assert!(meets(&json!({"inRange": {"lowBound": 1, "highBound": 2}}), 1.5).unwrap());
        assert!(meets(&json!({"notInRange": {"lowBound": 1, "highBound": 2}}), 3.0).unwrap());
        assert!(meets(&json!({"between": {}}), 1.0).is_err());
    }
}
