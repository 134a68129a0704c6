//! `Canary.status`: Flagger's fields (the durable state of a release) plus serin's additive
//! `observedGeneration` and `metrics`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serin_core::Phase;

use crate::api::common::{Condition, conditions_schema};

/// At most this many entries in `status.metrics` (one per metric of the analysis).
pub const STATUS_METRICS_MAX: usize = 64;

/// Observed state of a Canary. Written after every step, so a restarted controller resumes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::api::common::tidy_enums)]
pub struct CanaryStatus {
    /// Phase of the release: Initializing, Initialized, Waiting, Progressing,
    /// WaitingPromotion, Promoting, Finalising, Succeeded, Failed, Terminating, Terminated.
    #[serde(default)]
    pub phase: Phase,
    /// Failed checks of the current analysis.
    #[serde(default)]
    pub failed_checks: i32,
    /// Traffic weight (percent) routed to the new version.
    #[serde(default)]
    pub canary_weight: i32,
    /// Checks run so far (A/B testing, Blue/Green).
    #[serde(default)]
    pub iterations: i32,
    /// Checksums of the ConfigMaps and Secrets the target uses, by `configmap/<name>` or
    /// `secret/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Hash of the target's pod template seen last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Hash of the pod template the primary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// Change fence of the target's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tracked_revision: Option<String>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    /// Session affinity cookie (`name=value`) of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    /// Primary session affinity cookie (`name=value`) of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
    /// Session affinity cookie of the previous run, expired by the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    /// Conditions of this canary; `Promoted` follows the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
    /// serin extension: the `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// serin extension: the last value observed for each metric of the analysis, with its
    /// threshold and verdict (at most 64 entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub metrics: Option<Vec<MetricObservation>>,
}

/// serin extension: the last observation of one metric check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricObservation {
    /// Name of the metric, as in `spec.analysis.metrics[].name`.
    pub name: String,
    /// Value returned by the query; absent when the query returned no data or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Minimum accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_min: Option<f64>,
    /// Maximum accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_max: Option<f64>,
    /// Outcome of the check: pass, fail, noData or error.
    pub verdict: MetricVerdict,
    /// Why the check failed or had no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the value was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
}

/// Outcome of one metric check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricVerdict {
    Pass,
    Fail,
    NoData,
    Error,
}
