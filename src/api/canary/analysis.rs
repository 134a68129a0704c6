//! `spec.analysis`: schedule, traffic stepping, metrics, webhooks, alerts, session affinity.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::service::HttpMatchRequest;
use crate::api::common::CrossNamespaceRef;
use crate::api::duration::{DurationError, parse_duration};

/// Analysis settings of a Canary.
///
/// Flagger's CRD has a `oneOf` here (`interval` + `threshold` + exactly one of `iterations`,
/// `stepWeight`, `stepWeights`). serin's CRD keeps only the part that never rejects a Flagger
/// manifest, "at most one of iterations/stepWeight/stepWeights", as a CEL rule; `interval` and
/// `threshold` have defaults, and "at least one unless skipAnalysis" needs `spec.skipAnalysis`,
/// so the validator (`serin check`, and the controller before every run) enforces the rest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.iterations) ? 1 : 0) + (has(self.stepWeight) ? 1 : 0) + (has(self.stepWeights) ? 1 : 0) <= 1",
    "message": "set only one of iterations (A/B testing, Blue/Green), stepWeight or stepWeights (canary)",
}]))]
pub struct CanaryAnalysis {
    /// Time between two steps of the analysis, e.g. `1m` or `30s` (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(m|s)"))]
    pub interval: Option<String>,
    /// Number of failed checks before the new version is rolled back (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i32>,
    /// Number of checks to run for A/B testing and Blue/Green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    /// Maximum traffic weight (percent) routed to the new version before promotion
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<i32>,
    /// Traffic weight (percent) added at every step of the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    /// Explicit, strictly increasing traffic weights (percent) of the analysis steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weights: Option<Vec<i32>>,
    /// Weight (percent) moved back to the primary at every step of the promotion; 0 or unset
    /// moves all traffic at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<i32>,
    /// Mirror traffic to the new version (Istio; Gateway API for Blue/Green).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,
    /// Percentage of traffic mirrored when `mirror` is set (Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<i32>,
    /// Percentage of the primary's pods that must be available for it to count as ready
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ready_threshold: Option<i32>,
    /// Percentage of the new version's pods that must be available for it to count as ready
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready_threshold: Option<i32>,
    /// A/B testing: requests matching any of these conditions go to the new version. Requires
    /// `iterations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Vec<HttpMatchRequest>>,
    /// Sticky sessions: a user routed to the new version stays on it (Istio, Gateway API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Metric checks run at every step; a failing check counts towards `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<CanaryMetric>>,
    /// Webhooks: gates (confirm-*), load tests and checks (pre-rollout, rollout,
    /// post-rollout), rollback triggers and event sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<CanaryWebhook>>,
    /// Alerts sent to AlertProviders on this canary's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<CanaryAlert>>,
    /// serin extension: instant rollback. A target set back to one of the last this many
    /// revisions promoted before the current one is promoted again at once, without
    /// analysis (routing stays on the primary; an event and a warning alert say so). 0 or
    /// unset: every revision is analysed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20))]
    pub rollback_window: Option<i32>,
}

/// Flagger's default analysis interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Flagger's minimum analysis interval; serin's controller lowers it with a flag.
pub const FLAGGER_MIN_INTERVAL: Duration = Duration::from_secs(10);

impl CanaryAnalysis {
    /// The analysis interval: `interval` (default 60s), raised to `min` when shorter.
    ///
    /// `min` is the controller's minimum interval (Flagger: 10s, [`FLAGGER_MIN_INTERVAL`]).
    ///
    /// # Errors
    /// When `interval` is set but does not match `^[0-9]+(m|s)$` (Flagger silently used 60s;
    /// serin reports it through validation instead).
    pub fn interval(&self, min: Duration) -> Result<Duration, DurationError> {
        let interval = match self.interval.as_deref() {
            None | Some("") => DEFAULT_INTERVAL,
            Some(s) => parse_duration(s)?,
        };
        Ok(interval.max(min))
    }

    /// Failed checks before rollback: `threshold`, or 1 when unset or not positive.
    pub fn threshold(&self) -> u32 {
        positive(self.threshold).unwrap_or(1)
    }

    /// Iterations of A/B testing and Blue/Green; 0 when unset or not positive.
    pub fn iterations(&self) -> u32 {
        positive(self.iterations).unwrap_or(0)
    }

    /// Weight at which the analysis ends (Flagger's `maxWeight()`): with `stepWeights`, the
    /// last of them capped at 100; else `maxWeight` when positive; else 100.
    pub fn max_weight(&self) -> u32 {
        if let Some(last) = self.step_weights.as_ref().and_then(|w| w.last()) {
            return (*last).clamp(0, 100).unsigned_abs();
        }
        positive(self.max_weight).map_or(100, |w| w.min(100))
    }

    /// `stepWeight`, 0 when unset or not positive.
    pub fn step_weight(&self) -> u32 {
        positive(self.step_weight).unwrap_or(0)
    }

    /// `stepWeights`, empty when unset.
    pub fn step_weights(&self) -> &[i32] {
        self.step_weights.as_deref().unwrap_or_default()
    }

    /// `rollbackWindow`, 0 when unset or not positive, at most 20.
    pub fn rollback_window(&self) -> u32 {
        positive(self.rollback_window).map_or(0, |w| w.min(20))
    }

    /// `stepWeightPromotion`, 0 (all at once) when unset or not positive.
    pub fn step_weight_promotion(&self) -> u32 {
        positive(self.step_weight_promotion).unwrap_or(0)
    }

    /// `mirror`, default false.
    pub fn mirror(&self) -> bool {
        self.mirror == Some(true)
    }

    /// Primary readiness threshold in percent (default 100).
    pub fn primary_ready_threshold(&self) -> u32 {
        self.primary_ready_threshold
            .map_or(100, |t| t.clamp(0, 100).unsigned_abs())
    }

    /// New-version readiness threshold in percent (default 100).
    pub fn canary_ready_threshold(&self) -> u32 {
        self.canary_ready_threshold
            .map_or(100, |t| t.clamp(0, 100).unsigned_abs())
    }

    /// The metric checks, empty when unset.
    pub fn metrics(&self) -> &[CanaryMetric] {
        self.metrics.as_deref().unwrap_or_default()
    }

    /// The webhooks, empty when unset.
    pub fn webhooks(&self) -> &[CanaryWebhook] {
        self.webhooks.as_deref().unwrap_or_default()
    }

    /// The alerts, empty when unset.
    pub fn alerts(&self) -> &[CanaryAlert] {
        self.alerts.as_deref().unwrap_or_default()
    }
}

fn positive(value: Option<i32>) -> Option<u32> {
    value.filter(|v| *v > 0).map(i32::unsigned_abs)
}

/// A metric check: a builtin (`request-success-rate`, `request-duration`), a MetricTemplate
/// (`templateRef`), or an inline Prometheus `query`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// Name of the metric; `request-success-rate` and `request-duration` select the builtin
    /// checks of the provider.
    pub name: String,
    /// Time window of the query, e.g. `1m` (builtin default: 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(m|s)"))]
    pub interval: Option<String>,
    /// Deprecated: maximum accepted value (minimum for `request-success-rate`); use
    /// `thresholdRange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Range of accepted values; a value outside fails the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<CanaryThresholdRange>,
    /// Deprecated: inline Prometheus query; use `templateRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// MetricTemplate that holds the query and its provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceRef>,
    /// Variables for the template's query, used as `{{ variables.key }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, String>>,
    /// serin extension: what a query that returns no data means. `fail` (default, as
    /// Flagger) counts a failed check; `hold` waits without counting, bounded by the progress
    /// deadline; `pass` counts a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data_policy: Option<NoDataPolicy>,
    /// serin extension: judge the canary against the primary instead of against thresholds.
    /// The query runs once per version over the metric's `interval`, one sample per `step`
    /// (or, with `test: counts`, as error and request counts over the whole interval); a
    /// one-sided test (`test`, default Mann-Whitney U) says whether the canary is worse, and
    /// the check fails only when it is, with the asked confidence, by more than `tolerance`.
    /// Too few samples is "no data" (`noDataPolicy` decides). Prometheus only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<MetricJudge>,
}

/// `spec.analysis.metrics[].judge`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricJudge {
    /// The test: `mannWhitney` (default; ranks: "the canary tends to be worse", robust to
    /// outliers), `permutation` (the difference of means: also sees a regression that
    /// hits a few steps hard, such as an intermittent fault) or `counts` (error rates only:
    /// every error and request of the window counted, an exact test of the two rates; the
    /// most sensitive to errors, bursts included; needs a query `ok / total * 100`, as the
    /// builtin `request-success-rate`; `minSamples` is then the requests each version needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<JudgeTest>,
    /// Confidence that the canary is worse before the release is rolled back, in (0, 1);
    /// default 0.99. It holds for the whole analysis: each check fails only below its share
    /// of `1 - confidence` (shared by every step and judged metric, times `threshold`), so a
    /// release as good as its primary is rolled back by the judge at most that often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Samples each version needs before a verdict; default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// How much worse the canary's mean may be, relative to the primary's; default 0.1 (10
    /// %). For `request-success-rate` it applies to the error rate (100 - the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Time between samples, and each sample's `{{ interval }}`; default `10s`. At least twice
    /// Prometheus' scrape interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(m|s)"))]
    pub step: Option<String>,
    /// Which way is worse: `higher` (latency, errors) or `lower` (throughput, success).
    /// The builtins know theirs; a template's metric defaults to `higher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worse: Option<Worse>,
}

// The judge's statistical test.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JudgeTest {
    #[default]
    MannWhitney,
    Permutation,
    Counts,
}

// Which direction of a metric is a regression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Worse {
    Higher,
    Lower,
}

impl MetricJudge {
    pub const DEFAULT_CONFIDENCE: f64 = 0.99;
    pub const DEFAULT_MIN_SAMPLES: u32 = 20;
    pub const DEFAULT_TOLERANCE: f64 = 0.1;
    pub const DEFAULT_STEP: &'static str = "10s";
}

impl CanaryMetric {
    /// Names of the builtin metrics every provider with L7 metrics implements.
    pub const BUILTIN: [&'static str; 2] = ["request-success-rate", "request-duration"];

    /// A builtin metric (no template, no query needed).
    pub fn is_builtin(&self) -> bool {
        Self::BUILTIN.contains(&self.name.as_str())
    }

    /// The no-data policy, default `fail`.
    pub fn no_data_policy(&self) -> NoDataPolicy {
        self.no_data_policy.unwrap_or_default()
    }
}

// serin extension: how a metric query without data is judged.
// (Plain comment, not a doc comment: kube's OptionalEnum transform would copy an enum's
// description over the description of every `Option<enum>` field.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NoDataPolicy {
    #[default]
    Fail,
    Hold,
    Pass,
}

/// Range of accepted metric values (both bounds inclusive).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryThresholdRange {
    /// Minimum accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Maximum accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A webhook called during the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    /// Name of the webhook.
    pub name: String,
    /// When the webhook is called; empty means `rollout`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<HookType>,
    /// Absolute http(s) URL the webhook is POSTed to.
    pub url: String,
    /// Do not send alerts when this webhook fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    /// Request timeout, e.g. `30s` (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(m|s)"))]
    pub timeout: Option<String>,
    /// Number of retries after a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    /// Skip TLS certificate verification.
    #[serde(
        default,
        rename = "disableTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_tls: Option<bool>,
    /// Key-value pairs sent in the webhook's payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl CanaryWebhook {
    /// The webhook type; unset or empty means [`HookType::Rollout`].
    pub fn hook_type(&self) -> HookType {
        match self.type_ {
            None | Some(HookType::Unset) => HookType::Rollout,
            Some(t) => t,
        }
    }
}

// When a webhook is called.
// (Plain comment, not a doc comment: kube's OptionalEnum transform would copy an enum's
// description over the description of every `Option<enum>` field.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    /// Empty type: same as `rollout`.
    #[default]
    #[serde(rename = "")]
    Unset,
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmPromotion,
    PostRollout,
    Event,
    Rollback,
    ConfirmTrafficIncrease,
}

impl HookType {
    pub fn as_str(self) -> &'static str {
        match self {
            HookType::Unset => "",
            HookType::ConfirmRollout => "confirm-rollout",
            HookType::PreRollout => "pre-rollout",
            HookType::Rollout => "rollout",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::PostRollout => "post-rollout",
            HookType::Event => "event",
            HookType::Rollback => "rollback",
            HookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
        }
    }
}

/// An alert sent to an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    /// Name of this alert.
    pub name: String,
    /// Least severity of the events sent: `info` (everything), `warn`, `error`. Empty means
    /// `info` in serin (Flagger never fires an alert with an empty severity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// The AlertProvider to send to.
    pub provider_ref: CrossNamespaceRef,
}

// Alert severity levels.
// (Plain comment, not a doc comment: kube's OptionalEnum transform would copy an enum's
// description over the description of every `Option<enum>` field.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Empty severity: treated as `info`.
    #[default]
    #[serde(rename = "")]
    Unset,
    Info,
    Warn,
    Error,
}

/// Sticky sessions for the duration of a canary run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Name of the cookie that pins a user to the new version.
    pub cookie_name: String,
    /// Name of the cookie that pins a user to the primary; must differ from `cookieName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    /// Domain attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// HttpOnly attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// Seconds until the cookie expires (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 86400))]
    pub max_age: Option<i32>,
    /// Partitioned attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    /// Path attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SameSite attribute of the cookie: Strict, Lax or None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// Secure attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// Flagger's default session affinity cookie max age: one day.
pub const DEFAULT_COOKIE_MAX_AGE: u32 = 86_400;

impl SessionAffinity {
    /// `maxAge` in seconds; 86400 when unset or not positive.
    pub fn max_age(&self) -> u32 {
        positive(self.max_age).unwrap_or(DEFAULT_COOKIE_MAX_AGE)
    }
}

// SameSite cookie attribute values.
// (Plain comment, not a doc comment: kube's OptionalEnum transform would copy an enum's
// description over the description of every `Option<enum>` field.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}
