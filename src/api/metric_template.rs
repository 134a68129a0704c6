//! `MetricTemplate` (`metrictemplates.flagger.app`): a reusable metric query and the backend
//! that runs it, referenced by `spec.analysis.metrics[].templateRef`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{Condition, SecretRef, conditions_schema};

/// A metric query and the provider it runs against.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "MetricTemplate",
    namespaced,
    derive = "PartialEq",
    status = "MetricTemplateStatus",
    category = "all",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "MetricTemplate is the Schema for the MetricTemplates API.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.type")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::api::common::tidy_enums)]
pub struct MetricTemplateSpec {
    /// The metrics backend that runs the query.
    pub provider: MetricTemplateProvider,
    /// The query, a template: `{{ name }}`, `{{ namespace }}`, `{{ target }}`,
    /// `{{ service }}`, `{{ ingress }}`, `{{ route }}`, `{{ interval }}` and
    /// `{{ variables.key }}` are replaced before it runs.
    pub query: String,
    /// serin extension: the same measure for the primary, for a metric with a `judge`.
    /// Without it the judge runs `query` with `{{ target }}` set to the primary's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
}

/// A metrics backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateProvider {
    /// Type of the backend.
    #[serde(rename = "type")]
    pub type_: MetricProviderType,
    /// API address of the backend, e.g. `http://prometheus.monitoring:9090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP headers added to every query (Prometheus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// Secret, in the template's namespace, with the backend's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Region of the backend (CloudWatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Skip TLS certificate verification of the address (Prometheus, Graphite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Metrics backends, spelled as in Flagger's CRD.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    JsonSchema,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum MetricProviderType {
    Prometheus,
    Influxdb,
    Datadog,
    Externalmetrics,
    Stackdriver,
    Cloudwatch,
    Newrelic,
    Graphite,
    Dynatrace,
    Keptn,
    Splunk,
}

impl MetricProviderType {
    /// The name as written in `spec.provider.type`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Observed state of a MetricTemplate (Flagger declares it and never writes it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::api::common::tidy_enums)]
pub struct MetricTemplateStatus {
    /// Conditions of this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
}
