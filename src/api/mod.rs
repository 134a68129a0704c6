//! The Kubernetes API serin serves: Flagger's `flagger.app/v1beta1` kinds, unchanged, plus a few
//! additive and optional extensions (documented on each field as "serin extension").
//!
//! The Rust types are the single source of truth: `crds/` is generated from them
//! ([`crds`], `serin crds`), and `tests/offline/crds.rs` fails when the committed YAML drifts.
//!
//! Stored objects keep exactly what the user wrote: every optional field is an `Option`, and
//! Flagger's defaults are accessor methods ([`CanarySpec::service_name`],
//! [`CanaryAnalysis::interval`], ...) rather than values baked into the object.

pub mod alert_provider;
pub mod canary;
pub mod common;
pub mod duration;
pub mod metric_template;
pub mod validate;

pub use alert_provider::{
    AlertProvider, AlertProviderSpec, AlertProviderStatus, AlertProviderType,
};
pub use canary::{
    Canary, CanaryAnalysis, CanaryService, CanarySpec, CanaryStatus, DeploymentStrategy, HookType,
    Provider, TargetKind,
};
pub use common::Condition;
pub use duration::{DurationError, parse_duration};
pub use metric_template::{MetricProviderType, MetricTemplate, MetricTemplateSpec};
pub use validate::Problem;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every serin (and Flagger) custom resource.
pub const GROUP: &str = "flagger.app";
/// The single served and storage version.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` of every serin custom resource.
pub const API_VERSION: &str = "flagger.app/v1beta1";

/// The three CRDs, in the order `serin crds` prints them: Canary, MetricTemplate, AlertProvider.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Canary::crd(), MetricTemplate::crd(), AlertProvider::crd()]
}

/// The three CRDs as one multi-document YAML stream (each document starts with `---`).
///
/// This is exactly what `serin crds` prints and what `crds/crds.yaml` holds.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}
