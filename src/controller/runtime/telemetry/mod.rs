//! serin's own metrics, under Flagger's metric names *and* labels so existing dashboards and
//! alert rules keep working, plus `serin_*` ones. Registry and Prometheus text encoding from
//! `prometheus-client`; served on `--port` with `/healthz` and `/readyz` by `server`.
//!
//! Label values are bounded: target and namespace names (one series per canary), a fixed
//! vocabulary for strategies, outcomes and error reasons. A canary's gauges and its duration
//! histogram are removed when the Canary goes away, so dashboards show no ghosts; its outcome
//! counters stay (they are history, and `increase()` over them stays right).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub mod api_requests;
pub mod progress;
pub mod server;

type F64Gauge = Gauge<f64, AtomicU64>;

/// Go's `prometheus.DefBuckets`, which Flagger's duration histogram uses.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Step lateness: fine below a second (the goal at 10,000 canaries is p99 < 1 s), coarse
/// above.
const LATENESS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    mesh_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

/// A canary as Flagger's recorder labels it: `name` is the *target's* name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CanaryLabels {
    name: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeightLabels {
    workload: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnalysisLabels {
    name: String,
    namespace: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    name: String,
    namespace: String,
    deployment_strategy: String,
    analysis_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    provider_type: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryErrorLabels {
    provider: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
    /// The resource's plural (`virtualservices`, `leases`): a set fixed by serin's code.
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// How a release ended, for `flagger_canary_successes_total` / `_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    Failed,
}

pub struct Telemetry {
    registry: Registry,
    info: Family<InfoLabels, Gauge>,
    total: Family<NamespaceLabels, Gauge>,
    status: Family<CanaryLabels, Gauge>,
    weight: Family<WeightLabels, Gauge>,
    duration: Family<CanaryLabels, Histogram>,
    analysis: Family<AnalysisLabels, F64Gauge>,
    successes: Family<OutcomeLabels, Counter>,
    failures: Family<OutcomeLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    stale_writes: Counter,
    triggers: Family<TriggerLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    queries: Family<ProviderLabels, Histogram>,
    query_errors: Family<QueryErrorLabels, Counter>,
    api_requests: Family<MethodLabels, Counter>,
    reconcile: Histogram,
    lateness: Histogram,
    /// Metric names with an analysis series, per canary, so `forget` can remove them.
    analysed: Mutex<HashMap<CanaryLabels, BTreeSet<String>>>,
    /// Reconciles in flight and the last to finish, for `/healthz`.
    pub progress: progress::Progress,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    // Long on purpose: one registration per metric family (name, help, buckets), a table.
    pub fn new() -> Telemetry {
        let mut registry = Registry::default();
        let info = Family::<InfoLabels, Gauge>::default();
        let total = Family::<NamespaceLabels, Gauge>::default();
        let status = Family::<CanaryLabels, Gauge>::default();
        let weight = Family::<WeightLabels, Gauge>::default();
        let duration = histograms::<CanaryLabels>();
        let analysis = Family::<AnalysisLabels, F64Gauge>::default();
        let successes = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<OutcomeLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        let stale_writes = Counter::default();
        let triggers = Family::<TriggerLabels, Counter>::default();
        let alerts = Family::<AlertLabels, Counter>::default();
        let queries = histograms::<ProviderLabels>();
        let query_errors = Family::<QueryErrorLabels, Counter>::default();
        let api_requests = Family::<MethodLabels, Counter>::default();
        let reconcile = Histogram::new(DEFAULT_BUCKETS);
        let lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register(
            "flagger_info",
            "Information about the controller (serin, speaking Flagger's API)",
            info.clone(),
        );
        registry.register(
            "flagger_canary_total",
            "Canaries per namespace",
            total.clone(),
        );
        registry.register(
            "flagger_canary_status",
            "Last status of a canary: 0 progressing, 1 any other phase, 2 failed",
            status.clone(),
        );
        registry.register(
            "flagger_canary_weight",
            "Traffic weight of the primary and the canary workload",
            weight.clone(),
        );
        registry.register(
            "flagger_canary_duration_seconds",
            "Duration of the reconciles of a canary under analysis",
            duration.clone(),
        );
        registry.register(
            "flagger_canary_metric_analysis",
            "Last value of each metric check (request-duration in seconds)",
            analysis.clone(),
        );
        registry.register(
            "flagger_canary_successes",
            "Releases promoted",
            successes.clone(),
        );
        registry.register(
            "flagger_canary_failures",
            "Releases rolled back or failed",
            failures.clone(),
        );
        registry.register(
            "serin_reconcile_errors",
            "Reconciles that failed, by reason (blocked specs and transient errors)",
            errors.clone(),
        );
        registry.register(
            "serin_status_writes_refused",
            "Status writes refused because another writer changed the status after the copy the \
             step was decided on (a deposed or a new leader): decided again at once",
            stale_writes.clone(),
        );
        registry.register(
            "serin_reconcile_triggers",
            "Reconciles asked for by watch events, by the kind of object that changed (Canary: \
             changes other than serin's own status writes), counted before the queue merges \
             the requests for a Canary already waiting",
            triggers.clone(),
        );
        registry.register(
            "serin_alerts",
            "Alert deliveries by provider type and result (delivered, failed after retries, dropped)",
            alerts.clone(),
        );
        registry.register(
            "serin_metric_query_duration_seconds",
            "Latency of metric provider queries, by provider",
            queries.clone(),
        );
        registry.register(
            "serin_metric_query_errors",
            "Metric provider queries that failed, by provider and kind",
            query_errors.clone(),
        );
        registry.register(
            "serin_api_requests",
            "Requests to the Kubernetes API server, by method and resource",
            api_requests.clone(),
        );
        registry.register(
            "serin_reconcile_duration_seconds",
            "Duration of every reconcile",
            reconcile.clone(),
        );
        registry.register(
            "serin_step_lateness_seconds",
            "How long after its due time each analysis or promotion step ran (a controller \
             that keeps up stays in the lowest buckets)",
            lateness.clone(),
        );
        Telemetry {
            registry,
            info,
            total,
            status,
            weight,
            duration,
            analysis,
            successes,
            failures,
            errors,
            stale_writes,
            triggers,
            alerts,
            queries,
            query_errors,
            api_requests,
            reconcile,
            lateness,
            analysed: Mutex::default(),
            progress: Default::default(),
        }
    }

    pub fn info(&self, version: &str, mesh_provider: &str) {
        let labels = InfoLabels {
            version: version.into(),
            mesh_provider: mesh_provider.into(),
        };
        self.info.get_or_create(&labels).set(1);
    }

    /// Replaces the per-namespace canary counts (namespaces without canaries drop out).
    pub fn canaries(&self, per_namespace: &std::collections::BTreeMap<String, i64>) {
        self.total.clear();
        for (namespace, n) in per_namespace {
            let labels = NamespaceLabels {
                namespace: namespace.clone(),
            };
            self.total.get_or_create(&labels).set(*n);
        }
    }

    /// Flagger's status code: 0 progressing, 2 failed, 1 any other phase.
    pub fn status(&self, namespace: &str, target: &str, code: i64) {
        self.status
            .get_or_create(&canary(namespace, target))
            .set(code);
    }

    pub fn weights(&self, namespace: &str, target: &str, primary: u32, canary: u32) {
        for (workload, weight) in [
            (format!("{target}-primary"), primary),
            (target.into(), canary),
        ] {
            let labels = WeightLabels {
                workload,
                namespace: namespace.into(),
            };
            self.weight.get_or_create(&labels).set(i64::from(weight));
        }
    }

    pub fn duration(&self, namespace: &str, target: &str, seconds: f64) {
        self.duration
            .get_or_create(&canary(namespace, target))
            .observe(seconds);
    }

    pub fn metric_analysis(&self, namespace: &str, target: &str, metric: &str, value: f64) {
        let labels = AnalysisLabels {
            name: target.into(),
            namespace: namespace.into(),
            metric: metric.into(),
        };
        self.analysis.get_or_create(&labels).set(value);
        if let Ok(mut analysed) = self.analysed.lock() {
            analysed
                .entry(canary(namespace, target))
                .or_default()
                .insert(metric.into());
        }
    }

    pub fn outcome(
        &self,
        namespace: &str,
        target: &str,
        outcome: Outcome,
        strategy: &str,
        status: &str,
    ) {
        let labels = OutcomeLabels {
            name: target.into(),
            namespace: namespace.into(),
            deployment_strategy: strategy.into(),
            analysis_status: status.into(),
        };
        let family = match outcome {
            Outcome::Promoted => &self.successes,
            Outcome::Failed => &self.failures,
        };
        family.get_or_create(&labels).inc();
    }

    pub fn reconcile_error(&self, reason: &str) {
        let labels = ReasonLabels {
            reason: reason.into(),
        };
        self.errors.get_or_create(&labels).inc();
    }

    /// A status write refused by its precondition ([`Error::Stale`](super::error::Error)).
    pub fn stale_write(&self) {
        self.stale_writes.inc();
    }

    /// The counter of reconciles asked for by changes of `kind` (a kind name: bounded).
    pub fn triggers(&self, kind: &str) -> Counter {
        self.triggers
            .get_or_create(&TriggerLabels {
                kind: kind.to_string(),
            })
            .clone()
    }

    pub fn alert(&self, kind: &str, result: &str) {
        let labels = AlertLabels {
            provider_type: kind.into(),
            result: result.into(),
        };
        self.alerts.get_or_create(&labels).inc();
    }

    /// One metric provider query: its latency, and its failure's kind if it failed.
    pub fn metric_query(&self, provider: &str, seconds: f64, error: Option<&str>) {
        let labels = ProviderLabels {
            provider: provider.into(),
        };
        self.queries.get_or_create(&labels).observe(seconds);
        if let Some(kind) = error {
            let labels = QueryErrorLabels {
                provider: provider.into(),
                kind: kind.into(),
            };
            self.query_errors.get_or_create(&labels).inc();
        }
    }

    /// One request to the API server (`method`: GET, POST, PATCH, ...) about `resource`.
    pub fn api_request(&self, method: &str, resource: &str) {
        let labels = MethodLabels {
            method: method.into(),
            resource: resource.into(),
        };
        self.api_requests.get_or_create(&labels).inc();
    }

    pub fn reconciled(&self, seconds: f64) {
        self.reconcile.observe(seconds);
    }

    /// A time-gated step ran `seconds` after it was due.
    pub fn step_late(&self, seconds: f64) {
        self.lateness.observe(seconds);
    }

    /// Removes a gone canary's gauges and duration histogram.
    pub fn forget(&self, namespace: &str, target: &str) {
        let labels = canary(namespace, target);
        self.status.remove(&labels);
        self.duration.remove(&labels);
        for workload in [format!("{target}-primary"), target.to_string()] {
            self.weight.remove(&WeightLabels {
                workload,
                namespace: namespace.into(),
            });
        }
        let metrics = match self.analysed.lock() {
            Ok(mut analysed) => analysed.remove(&labels).unwrap_or_default(),
            Err(_) => BTreeSet::new(),
        };
        for metric in metrics {
            self.analysis.remove(&AnalysisLabels {
                name: target.into(),
                namespace: namespace.into(),
                metric,
            });
        }
    }

    /// Prometheus text exposition format (0.0.4), as Flagger's Go client serves it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

/// A family of histograms with Go's default buckets.
fn histograms<L: Clone + std::hash::Hash + Eq>() -> Family<L, Histogram, fn() -> Histogram> {
    Family::new_with_constructor(|| Histogram::new(DEFAULT_BUCKETS))
}

fn canary(namespace: &str, target: &str) -> CanaryLabels {
    CanaryLabels {
        name: target.into(),
        namespace: namespace.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flaggers_names_and_labels_and_forgets_a_canary() {
        let t = Telemetry::new();
        t.status("te\"st", "podinfo", 2);
        t.weights("test", "podinfo", 90, 10);
        t.duration("test", "podinfo", 0.2);
        t.metric_analysis("test", "podinfo", "request-success-rate", 99.5);
        t.outcome("test", "podinfo", Outcome::Failed, "canary", "completed");
        t.outcome("test", "podinfo", Outcome::Failed, "canary", "completed");
        let text = t.render();
        for line in [
            "# TYPE flagger_canary_status gauge",
            "flagger_canary_status{name=\"podinfo\",namespace=\"te\\\"st\"} 2",
            "flagger_canary_weight{workload=\"podinfo-primary\",namespace=\"test\"} 90",
            "flagger_canary_weight{workload=\"podinfo\",namespace=\"test\"} 10",
            "# TYPE flagger_canary_duration_seconds histogram",
            "flagger_canary_duration_seconds_bucket{name=\"podinfo\",namespace=\"test\",le=\"0.25\"} 1",
            "flagger_canary_duration_seconds_count{name=\"podinfo\",namespace=\"test\"} 1",
            "flagger_canary_metric_analysis{name=\"podinfo\",namespace=\"test\",metric=\"request-success-rate\"} 99.5",
            "# TYPE flagger_canary_failures_total counter",
            "flagger_canary_failures_total{name=\"podinfo\",namespace=\"test\",deployment_strategy=\"canary\",analysis_status=\"completed\"} 2",
        ] {
            assert!(text.contains(line), "{line}\n---\n{text}");
        }
        t.forget("test", "podinfo");
        t.forget("te\"st", "podinfo");
        let text = t.render();
        for gone in [
            "flagger_canary_status{",
            "flagger_canary_weight{",
            "flagger_canary_duration_seconds_count{",
            "flagger_canary_metric_analysis{",
        ] {
            assert!(!text.contains(gone), "{gone}\n---\n{text}");
        }
        assert!(text.contains("flagger_canary_failures_total{"), "{text}");
    }

    #[test]
    fn step_lateness_is_a_histogram_with_fine_buckets_below_a_second() {
        let t = Telemetry::new();
        t.step_late(0.3);
        t.step_late(3.0);
        let text = t.render();
        for line in [
            "# TYPE serin_step_lateness_seconds histogram",
            "serin_step_lateness_seconds_bucket{le=\"0.25\"} 0",
            "serin_step_lateness_seconds_bucket{le=\"0.5\"} 1",
            "serin_step_lateness_seconds_bucket{le=\"5\"} 2",
            "serin_step_lateness_seconds_count 2",
        ] {
            assert!(text.contains(line), "{line}\n---\n{text}");
        }
    }
}
