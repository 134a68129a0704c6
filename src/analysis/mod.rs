//! Metric analysis: every metric check of a canary run once, now, with the value, bounds and
//! verdict of each kept for the status, events and gauges.
//!
//! Each metric is one of, in this order of precedence:
//! - `templateRef`: a MetricTemplate (in `templateRef.namespace` or the canary's), whose
//!   provider runs the rendered query with credentials from the Secret in the template's
//!   namespace (read on every check);
//! - inline `query` (deprecated): rendered and run on the canary's Prometheus
//!   (`spec.metricsServer`, else the controller's `--metrics-server`);
//! - `request-success-rate` / `request-duration` by name: the builtin query of the canary's
//!   observer ([`builtin`]), on the same Prometheus.
//!
//! Flagger runs the builtin *and* the template when a templated metric has a builtin's name;
//! here the template wins, so naming a custom metric `request-duration` does not add a second,
//! unrelated check.
//!
//! A metric's interval defaults to `1m` for every kind (Flagger leaves `{{ interval }}` empty
//! for templates, which renders an invalid range selector). Metrics run concurrently: a tick
//! takes as long as the slowest provider, not the sum of them.

pub mod builtin;
mod comparison;
mod error_counts;
pub mod judge;
pub mod provider;
pub mod secret;
pub mod template;
pub mod thresholds;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};
use serin_core::stats;

use crate::api::canary::{
    CanaryMetric, MetricObservation, MetricVerdict, NoDataPolicy, STATUS_METRICS_MAX,
};
use crate::api::metric_template::MetricTemplate;
use crate::api::{Canary, MetricProviderType, Provider, parse_duration};
use builtin::{Builtin, Observer};
use provider::cloud::Cloud;
use provider::cloudwatch::CloudWatch;
use provider::datadog::Datadog;
use provider::dynatrace::Dynatrace;
use provider::externalmetrics::ExternalMetrics;
use provider::graphite::Graphite;
use provider::influxdb::{self, InfluxDb};
use provider::keptn::Keptn;
use provider::newrelic::NewRelic;
use provider::prometheus::Prometheus;
use provider::splunk::Splunk;
use provider::stackdriver::Stackdriver;
use provider::{Http, MetricProvider, Query, QueryError, Reading, SecretData};
use template::TemplateVars;
use thresholds::{Bounds, CheckOutcome};

/// A metric's window when `interval` is unset (Flagger's builtin default).
pub const DEFAULT_METRIC_INTERVAL: &str = "1m";
/// [`DEFAULT_METRIC_INTERVAL`] as a duration.
const DEFAULT_METRIC_WINDOW: Duration = Duration::from_secs(60);

/// Runs metric checks. Cheap to clone and share: one pooled HTTP client for every provider.
#[derive(Clone)]
pub struct Analyzer {
    http: Http,
    kube: kube::Client,
    metrics_server: String,
    mesh_provider: Provider,
    check_budget: Option<Duration>,
    caches: Option<Caches>,
    /// The controller's own cloud credentials (CloudWatch, Stackdriver without a key).
    cloud: std::sync::Arc<Cloud>,
    /// The end of every query's window.
    clock: crate::clock::Clock,
}

/// Reflector stores the controller already keeps; lookups fall back to a GET on a miss (a
/// template in a namespace the controller does not watch, or a cache still filling).
#[derive(Clone)]
pub struct Caches {
    pub templates: Store<MetricTemplate>,
    /// `None` when the controller does not watch Secrets (config tracking off).
    pub secrets: Option<Store<Secret>>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("metrics_server", &self.metrics_server)
            .field("mesh_provider", &self.mesh_provider)
            .field("timeout", &self.http.timeout)
            .finish_non_exhaustive()
    }
}

/// The result of one run of a canary's metric checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Pass when every metric passes; Fail(reason) for the first failing metric (in spec
    /// order); Hold(reason) when a metric with `noDataPolicy: hold` had no data and nothing
    /// failed.
    pub outcome: serin_core::Analysis,
    /// One per metric, at most [`STATUS_METRICS_MAX`], for `status.metrics`, events and the
    /// `flagger_canary_metric_analysis` gauge.
    pub observations: Vec<crate::api::canary::MetricObservation>,
    /// Every metric with its provider and rendered query (for `serin analyze` and logs).
    pub checks: Vec<MetricCheck>,
}

/// One metric's check.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricCheck {
    pub name: String,
    /// `prometheus`, `datadog`, `newrelic`, `graphite`, `influxdb`, ...
    pub provider: String,
    /// The query as sent, when it could be rendered.
    pub query: Option<String>,
    pub bounds: Bounds,
    /// Unit of value and bounds: `%`, `ms` or empty.
    pub unit: &'static str,
    pub builtin: Option<Builtin>,
    pub observation: MetricObservation,
    pub outcome: CheckOutcome,
    /// Category of the failure when the query failed (`timeout`, `unauthorized`, ...).
    pub error_kind: Option<&'static str>,
    /// How long the provider took to answer, when the query was sent.
    pub latency: Option<std::time::Duration>,
}

impl MetricCheck {
    /// The value for the `flagger_canary_metric_analysis` gauge: as observed, except
    /// `request-duration` in seconds, as Flagger exports it.
    pub fn gauge_value(&self) -> Option<f64> {
        let value = self.observation.value?;
        Some(match self.builtin {
            Some(Builtin::RequestDuration) => value / 1000.0,
            _ => value,
        })
    }
}

impl Analyzer {
    /// `metrics_server`: the controller's `--metrics-server` (the Prometheus of builtin
    /// metrics, inline queries, and templates without an address). `mesh_provider`:
    /// `--mesh-provider`, used when `spec.provider` is unset.
    pub fn new(
        client: kube::Client,
        metrics_server: String,
        mesh_provider: Provider,
    ) -> anyhow::Result<Analyzer> {
        Ok(Analyzer {
            http: Http::new(provider::DEFAULT_TIMEOUT)?,
            kube: client,
            metrics_server,
            mesh_provider,
            check_budget: None,
            caches: None,
            cloud: std::sync::Arc::new(Cloud::from_env()?),
            clock: crate::clock::Clock::System,
        })
    }

    /// Ends the queries' windows at `clock`'s time instead of the system's.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Analyzer {
        self.clock = clock;
        self
    }

    /// Takes the cloud credentials from `cloud` instead of the process' environment.
    pub fn with_cloud(mut self, cloud: Cloud) -> Analyzer {
        self.cloud = std::sync::Arc::new(cloud);
        self
    }

    /// Changes the per-request timeout (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> anyhow::Result<Analyzer> {
        self.http = Http::new(timeout)?;
        Ok(self)
    }

    /// Fixes how long one run may spend waiting out rate limits; default: half the
    /// canary's analysis interval, and at least the request timeout.
    pub fn with_check_budget(mut self, budget: Duration) -> Analyzer {
        self.check_budget = Some(budget);
        self
    }

    /// Reads MetricTemplates and Secrets from these stores first (the controller's reflector
    /// caches) instead of a GET per check; Secrets always with a GET when `secrets` is `None`.
    pub fn with_caches(
        mut self,
        templates: Store<MetricTemplate>,
        secrets: impl Into<Option<Store<Secret>>>,
    ) -> Analyzer {
        self.caches = Some(Caches {
            templates,
            secrets: secrets.into(),
        });
        self
    }

    /// Runs every metric check of the canary's analysis once, now.
    /// `route`: `{{ route }}` when the caller read it with the target (a Knative Service's
    /// latest created revision); otherwise the default of [`TemplateVars::new`].
    pub async fn run(&self, canary: &Canary, route: Option<&str>) -> Evaluation {
        let metrics = analysis_metrics(canary);
        if metrics.is_empty() {
            return Evaluation {
                outcome: serin_core::Analysis::Pass,
                observations: Vec::new(),
                checks: Vec::new(),
            };
        }
        let now = self.clock.now();
        let deadline = Instant::now() + self.budget(canary);
        let route = route.map(str::to_string);
        let judged = self.judged_checks(canary, metrics);
        let checks = futures::future::join_all(
            metrics
                .iter()
                .map(|metric| self.check(canary, metric, &route, now, deadline, judged)),
        )
        .await;
        Evaluation::from_checks(checks)
    }

    /// Whether every provider the canary's metrics use answers: Prometheus `vector(1)`,
    /// Datadog `/api/v1/validate`, a trivial NRQL query, Graphite `target=test`, InfluxDB
    /// `buckets()`, Dynatrace's and Splunk's metric lists. For the initialization step.
    pub async fn check_availability(&self, canary: &Canary) -> Result<(), String> {
        let mut checked = Vec::new();
        for metric in analysis_metrics(canary) {
            let resolved = self
                .resolve(canary, metric)
                .await
                .map_err(|(provider, e)| format!("metric {}: {provider}: {e}", metric.name))?;
            if let Some(key) = resolved.backend.availability_key() {
                if checked.contains(&key) {
                    continue;
                }
                checked.push(key);
            }
            resolved.backend.is_online(&self.http).await.map_err(|e| {
                format!(
                    "metric {}: {} is not available: {e}",
                    metric.name, resolved.provider
                )
            })?;
        }
        Ok(())
    }

    /// How often the judged metrics of a release are asked, for each check's share of the
    /// confidence asked of the whole analysis. A spec the engine cannot plan (it never runs)
    /// is read as a single check.
    fn judged_checks(&self, canary: &Canary, metrics: &[CanaryMetric]) -> stats::Checks {
        let judged = metrics.iter().filter(|m| m.judge.is_some()).count() as u32;
        if judged == 0 {
            return stats::Checks::SINGLE;
        }
        let plan = crate::canary_plan::from_canary(canary, self.mesh_provider, Duration::ZERO);
        let Ok(plan) = plan else {
            return stats::Checks::SINGLE;
        };
        let planned = serin_core::simulate::happy_path(&plan).map_or(1, |sim| sim.analyses);
        stats::Checks {
            planned,
            threshold: plan.threshold,
            metrics: judged,
        }
    }

    fn budget(&self, canary: &Canary) -> Duration {
        if let Some(budget) = self.check_budget {
            return budget;
        }
        let interval = canary
            .spec
            .analysis
            .as_ref()
            .or(canary.spec.canary_analysis.as_ref())
            .and_then(|a| a.interval(Duration::from_secs(1)).ok())
            .unwrap_or(crate::api::canary::DEFAULT_INTERVAL);
        (interval / 2).max(self.http.timeout)
    }

    // Long on purpose: resolve, render, query, judge, in order; each outcome returns through
    // MetricCheck's own constructors.
    async fn check(
        &self,
        canary: &Canary,
        metric: &CanaryMetric,
        route: &Option<String>,
        now: DateTime<Utc>,
        deadline: Instant,
        judged: stats::Checks,
    ) -> MetricCheck {
        let resolved = self.resolve(canary, metric).await;
        let (provider_name, builtin) = match &resolved {
            Ok(r) => (r.provider.clone(), r.builtin),
            Err((provider, _)) => (provider.clone(), None),
        };
        let bounds = Bounds::of(metric, builtin);
        let unit = thresholds::unit(builtin);
        let mut result = MetricCheck {
            name: metric.name.clone(),
            provider: provider_name.clone(),
            query: None,
            bounds,
            unit,
            builtin,
            observation: MetricObservation {
                name: metric.name.clone(),
                value: None,
                threshold_min: bounds.min,
                threshold_max: bounds.max,
                baseline: None,
                p_value: None,
                verdict: MetricVerdict::Error,
                message: None,
                time: Some(now),
                analyses: None,
                samples: None,
            },
            outcome: CheckOutcome::Pass,
            error_kind: None,
            latency: None,
        };
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err((_, error)) => return result.failed(&error),
        };
        let interval_text = metric
            .interval
            .as_deref()
            .filter(|i| !i.trim().is_empty())
            .unwrap_or(DEFAULT_METRIC_INTERVAL);
        let interval = match parse_duration(interval_text) {
            Ok(interval) => interval,
            // Only written into the query (`-1min` in Graphite's syntax): the duration is not
            // read, so the default stands in for it.
            Err(_) if metric.judge.is_none() && !resolved.backend.reads_interval_as_duration() => {
                DEFAULT_METRIC_WINDOW
            }
            Err(e) => {
                let provider = &resolved.provider;
                return result.failed(&QueryError::config(format!(
                    "interval: {e} ({provider} reads the metric interval as a duration)"
                )));
            }
        };
        let mut vars = TemplateVars::new(canary, interval_text, metric.template_variables.as_ref());
        if let Some(route) = route {
            vars.route = route.clone();
        }
        if let Some(judge) = &metric.judge {
            let at = comparison::At {
                metric,
                judge,
                resolved: &resolved,
                vars: &vars,
                window: interval,
                now,
                deadline,
                checks: judged,
            };
            return self.compare(result, at).await;
        }
        let render = match resolved.backend.keeps_line_breaks() {
            true => template::render_program,
            false => template::render,
        };
        let query = match render(&resolved.query, &vars) {
            Ok(query) => query,
            Err(e) => return result.failed(&QueryError::config(e.to_string())),
        };
        result.query = Some(query.clone());
        let sent = std::time::Instant::now();
        let at = Query {
            text: &query,
            interval,
            now,
            deadline,
        };
        let reading = resolved.backend.query(&self.http, at).await;
        result.latency = Some(sent.elapsed());
        match reading {
            Err(error) => result.query_failed(metric, &error),
            Ok(Reading::NoData(why)) => {
                let reason = match builtin {
                    Some(_) => format!(
                        "no values found for {provider_name} metric {} probably {}.{} is not \
                         receiving traffic: {why}",
                        metric.name, vars.target, vars.namespace
                    ),
                    None => format!(
                        "no values found for {provider_name} metric {}: {why}",
                        metric.name
                    ),
                };
                result.without_data(metric, reason)
            }
            Ok(Reading::Value(raw)) => result.judged(thresholds::normalize(raw, builtin)),
        }
    }

    /// Where a metric's query comes from and which provider runs it. Errors carry the
    /// provider's name for the report.
    async fn resolve(
        &self,
        canary: &Canary,
        metric: &CanaryMetric,
    ) -> Result<Resolved, (String, QueryError)> {
        let canary_ns = canary.metadata.namespace.as_deref().unwrap_or("default");
        let prometheus_address = canary
            .spec
            .metrics_server
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or(&self.metrics_server);
        let prom = || "prometheus".to_string();

        if let Some(reference) = &metric.template_ref {
            let namespace = reference.namespace.as_deref().unwrap_or(canary_ns);
            return self
                .resolve_template(namespace, &reference.name, prometheus_address)
                .await;
        }

        let prometheus = Prometheus::new(prometheus_address).map_err(|e| (prom(), e))?;
        let inline = metric.query.as_deref().filter(|q| !q.trim().is_empty());
        let (query, builtin) = if let Some(query) = inline {
            (query, None)
        } else if let Some(builtin) = Builtin::from_name(&metric.name) {
            let observer = Observer::for_canary(canary, self.mesh_provider);
            let query =
                builtin::query(observer, builtin).map_err(|e| (prom(), QueryError::config(e)))?;
            (query, Some(builtin))
        } else {
            return Err((
                "none".to_string(),
                QueryError::config(
                    "no usable metrics template and query were configured: set templateRef, or \
                     use a builtin name (request-success-rate, request-duration)",
                ),
            ));
        };
        Ok(Resolved {
            provider: prom(),
            query: query.to_string(),
            baseline_query: None,
            backend: MetricProvider::Prometheus(prometheus),
            builtin,
        })
    }

    /// A metric with a `templateRef`: the MetricTemplate's query and provider (with its
    /// Secret).
    async fn resolve_template(
        &self,
        namespace: &str,
        name: &str,
        prometheus_address: &str,
    ) -> Result<Resolved, (String, QueryError)> {
        let template = self
            .template(namespace, name)
            .await
            .map_err(|e| ("template".to_string(), e))?;
        let provider = &template.spec.provider;
        let provider_name = provider.type_.as_str();
        let fail = |e: QueryError| (provider_name.to_string(), e);
        let secret = match &provider.secret_ref {
            Some(secret_ref) => Some((
                format!("{namespace}/{}", secret_ref.name),
                self.secret(namespace, &secret_ref.name)
                    .await
                    .map_err(fail)?,
            )),
            None => None,
        };
        let secret = secret
            .as_ref()
            .map(|(n, d): &(String, SecretData)| (n.as_str(), d));
        let backend = match provider.type_ {
            MetricProviderType::Prometheus => MetricProvider::Prometheus(
                Prometheus::from_template(provider, secret, prometheus_address).map_err(fail)?,
            ),
            MetricProviderType::Datadog => MetricProvider::Datadog(
                Datadog::from_template(provider, template.metadata.annotations.as_ref(), secret)
                    .map_err(fail)?,
            ),
            MetricProviderType::Newrelic => {
                MetricProvider::NewRelic(NewRelic::from_template(provider, secret).map_err(fail)?)
            }
            MetricProviderType::Graphite => {
                MetricProvider::Graphite(Graphite::from_template(provider, secret).map_err(fail)?)
            }
            MetricProviderType::Influxdb => {
                MetricProvider::InfluxDb(InfluxDb::from_template(provider, secret).map_err(fail)?)
            }
            MetricProviderType::Dynatrace => {
                MetricProvider::Dynatrace(Dynatrace::from_template(provider, secret).map_err(fail)?)
            }
            MetricProviderType::Splunk => {
                MetricProvider::Splunk(Splunk::from_template(provider, secret).map_err(fail)?)
            }
            MetricProviderType::Cloudwatch => MetricProvider::CloudWatch(
                CloudWatch::from_template(provider, &self.cloud).map_err(fail)?,
            ),
            MetricProviderType::Stackdriver => MetricProvider::Stackdriver(
                Stackdriver::from_template(provider, secret, &self.cloud).map_err(fail)?,
            ),
            MetricProviderType::Keptn => MetricProvider::Keptn(Keptn::new(self.kube.clone())),
            MetricProviderType::Externalmetrics => MetricProvider::ExternalMetrics(
                ExternalMetrics::from_template(provider, secret, &self.kube).map_err(fail)?,
            ),
        };
        // Rendering joins a query's lines: a Flux comment would swallow the rest.
        let (query, baseline_query) = match backend {
            MetricProvider::InfluxDb(_) => (
                influxdb::without_comments(&template.spec.query),
                template
                    .spec
                    .baseline_query
                    .as_deref()
                    .map(influxdb::without_comments),
            ),
            _ => (
                template.spec.query.clone(),
                template.spec.baseline_query.clone(),
            ),
        };
        Ok(Resolved {
            provider: provider_name.to_string(),
            query,
            baseline_query,
            backend,
            builtin: None,
        })
    }

    async fn template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, QueryError> {
        if let Some(caches) = &self.caches
            && let Some(cached) = caches
                .templates
                .get(&ObjectRef::new(name).within(namespace))
        {
            return Ok((*cached).clone());
        }
        let api: Api<MetricTemplate> = Api::namespaced(self.kube.clone(), namespace);
        api.get(name).await.map_err(|e| {
            QueryError::config(format!(
                "cannot read MetricTemplate {namespace}/{name}: {e}"
            ))
        })
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<SecretData, QueryError> {
        if let Some(secrets) = self.caches.as_ref().and_then(|c| c.secrets.as_ref())
            && let Some(cached) = secrets.get(&ObjectRef::new(name).within(namespace))
        {
            secret::usable(&cached).map_err(QueryError::config)?;
            return Ok(secret::decode(&cached));
        }
        secret::read(&self.kube, namespace, name).await
    }

    /// `{{ route }}` for a Knative target, read from the API: the Service's latest created
    /// revision (Flagger's choice). For callers without the target at hand (`serin analyze`);
    /// the controller passes the revision it read with the target.
    pub async fn knative_route(&self, canary: &Canary) -> Option<String> {
        let provider = canary.spec.provider.unwrap_or(self.mesh_provider);
        if provider != Provider::Knative {
            return None;
        }
        let namespace = canary.metadata.namespace.as_deref().unwrap_or("default");
        let resource = crate::workload::knative::service_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.kube.clone(), namespace, &resource);
        let service = api.get(&canary.spec.target_ref.name).await.ok()?;
        crate::workload::knative::latest_created(&service).map(str::to_string)
    }
}

/// A metric's query and the provider that runs it.
struct Resolved {
    provider: String,
    query: String,
    /// The template's `baselineQuery` (for the judge).
    baseline_query: Option<String>,
    backend: MetricProvider,
    builtin: Option<Builtin>,
}

fn analysis_metrics(canary: &Canary) -> &[CanaryMetric] {
    canary
        .spec
        .analysis
        .as_ref()
        .or(canary.spec.canary_analysis.as_ref())
        .map(|a| a.metrics())
        .unwrap_or_default()
}

impl MetricCheck {
    /// The query answered no data: the metric's policy decides.
    fn without_data(mut self, metric: &CanaryMetric, reason: String) -> MetricCheck {
        let policy = match metric.no_data_policy() {
            NoDataPolicy::Fail => "",
            NoDataPolicy::Hold => " (noDataPolicy hold: waiting)",
            NoDataPolicy::Pass => " (noDataPolicy pass)",
        };
        self.observation.verdict = MetricVerdict::NoData;
        self.observation.message = Some(format!("{reason}{policy}"));
        self.outcome = thresholds::no_data(metric, reason);
        self
    }

    /// The query answered `value`: the bounds decide. An infinite value always fails and is
    /// left out of the status (JSON has no infinity); the message still shows it.
    fn judged(mut self, value: f64) -> MetricCheck {
        self.observation.value = value.is_finite().then_some(value);
        match thresholds::judge(&self.name, value, self.bounds, self.builtin) {
            Ok(()) => {
                self.observation.verdict = MetricVerdict::Pass;
                self.outcome = CheckOutcome::Pass;
            }
            Err(reason) => {
                self.observation.verdict = MetricVerdict::Fail;
                self.observation.message = Some(reason.clone());
                self.outcome = CheckOutcome::Fail(reason);
            }
        }
        self
    }

    /// A query that could not be answered. A provider that is down (unreachable, timing out,
    /// rate-limiting, answering 5xx) holds the release under `noDataPolicy: hold` or `pass`:
    /// missing data must never promote, and a release should not be rolled back because
    /// the monitoring had an outage; the progress deadline bounds the wait. Under `fail`
    /// (Flagger's behaviour) and for every other error it counts as a failed check.
    fn query_failed(self, metric: &CanaryMetric, error: &QueryError) -> MetricCheck {
        if !error.kind.is_outage() || metric.no_data_policy() == NoDataPolicy::Fail {
            return self.failed(error);
        }
        let mut check = self.failed(error);
        let policy = match metric.no_data_policy() {
            NoDataPolicy::Pass => "pass",
            _ => "hold",
        };
        let reason = format!(
            "{} (noDataPolicy {policy}: waiting for {} to answer)",
            check.observation.message.take().unwrap_or_default(),
            check.provider
        );
        check.observation.message = Some(reason.clone());
        check.outcome = CheckOutcome::Hold(reason);
        check
    }

    fn failed(mut self, error: &QueryError) -> MetricCheck {
        let reason = format!(
            "metric query failed for {} ({}): {error}",
            self.name, self.provider
        );
        self.observation.verdict = MetricVerdict::Error;
        self.observation.message = Some(reason.clone());
        self.outcome = CheckOutcome::Fail(reason);
        self.error_kind = Some(error.kind.as_str());
        self
    }
}

impl Evaluation {
    /// Combines per-metric checks: the first failure decides, then the first hold.
    pub fn from_checks(checks: Vec<MetricCheck>) -> Evaluation {
        let failure = checks.iter().find_map(|c| match &c.outcome {
            CheckOutcome::Fail(reason) => Some(reason.clone()),
            _ => None,
        });
        let hold = checks.iter().find_map(|c| match &c.outcome {
            CheckOutcome::Hold(reason) => Some(reason.clone()),
            _ => None,
        });
        let outcome = match (failure, hold) {
            (Some(reason), _) => serin_core::Analysis::Fail(reason),
            (None, Some(reason)) => serin_core::Analysis::Hold(reason),
            (None, None) => serin_core::Analysis::Pass,
        };
        let observations = checks
            .iter()
            .take(STATUS_METRICS_MAX)
            .map(|c| c.observation.clone())
            .collect();
        Evaluation {
            outcome,
            observations,
            checks,
        }
    }
}
