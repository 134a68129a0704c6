//! `Canary` (`canaries.flagger.app`): the release of one workload, field for field as Flagger
//! defines it (`pkg/apis/flagger/v1beta1/canary.go`), plus serin's additive extensions.

mod analysis;
mod service;
mod status;
mod traffic_policy;

pub use analysis::{
    AlertSeverity, CanaryAlert, CanaryAnalysis, CanaryMetric, CanaryThresholdRange, CanaryWebhook,
    DEFAULT_COOKIE_MAX_AGE, DEFAULT_INTERVAL, FLAGGER_MIN_INTERVAL, HookType, JudgeTest,
    MetricJudge, NoDataPolicy, SameSite, SessionAffinity, Worse,
};
pub use service::{
    BackendObjectReference, CanaryService, CorsPolicy, HeaderOperations, Headers, HttpMatchRequest,
    HttpRequestMirrorFilter, HttpRetry, HttpRewrite, ParentReference, StringMatch,
    TrafficDistribution, UnmanagedMetadata,
};
pub use status::{
    Announcement, CanaryStatus, GateState, JudgedSamples, METRIC_ANALYSES_MAX, MetricAnalysis,
    MetricObservation, MetricVerdict, PendingAlert, PendingEvent, ReleaseRecord,
    STATUS_METRICS_MAX,
};
pub use traffic_policy::TrafficPolicy;

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Progressive delivery of one workload: clone it into `<name>-primary`, shift traffic to the
/// new version step by step while checking metrics and webhooks, then promote or roll back.
// Each `printcolumn(...)` repeats the same keys, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    namespaced,
    derive = "PartialEq",
    status = "CanaryStatus",
    category = "all",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "Canary is the Schema for the Canary API.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "string", json_path = ".status.canaryWeight"),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = 1
    ),
    printcolumn(
        name = "FailedChecks",
        type_ = "string",
        json_path = ".status.failedChecks",
        priority = 1
    ),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.analysis.interval",
        priority = 1
    ),
    printcolumn(
        name = "Mirror",
        type_ = "boolean",
        json_path = ".spec.analysis.mirror",
        priority = 1
    ),
    printcolumn(
        name = "StepWeight",
        type_ = "string",
        json_path = ".spec.analysis.stepWeight",
        priority = 1
    ),
    printcolumn(
        name = "StepWeights",
        type_ = "string",
        json_path = ".spec.analysis.stepWeights",
        priority = 1
    ),
    printcolumn(
        name = "MaxWeight",
        type_ = "string",
        json_path = ".spec.analysis.maxWeight",
        priority = 1
    ),
    printcolumn(
        name = "LastTransitionTime",
        type_ = "string",
        json_path = ".status.lastTransitionTime"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_analysis)]
pub struct CanarySpec {
    /// Traffic management provider (service mesh or ingress) for this canary; overrides the
    /// controller's `--mesh-provider` (default `istio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// Prometheus URL for the builtin metrics and inline `query` metrics of this canary;
    /// overrides the controller's `--metrics-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,
    /// The workload to release: a Deployment, a DaemonSet, a StatefulSet (serin extension:
    /// released in place, by its rolling update's partition), or a Service (a Knative Service
    /// when `apiVersion` is `serving.knative.dev/v1`).
    pub target_ref: TargetRef,
    /// HorizontalPodAutoscaler or KEDA ScaledObject of the target; a copy is made for the
    /// primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,
    /// Ingress to route through; required by the `nginx` and `skipper` providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<IngressRef>,
    /// ApisixRoute to route through; required by the `apisix` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<RouteRef>,
    /// Gloo Upstream whose configuration is copied into the generated upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<UpstreamRef>,
    /// The Services serin generates (`<name>`, `<name>-primary`, `<name>-canary`) and the
    /// routing options of the provider. Required, except for a Knative Service target
    /// (Knative routes between its revisions itself), as in Flagger's CRD.
    #[serde(default)]
    pub service: CanaryService,
    /// How the new version is analysed and how traffic is shifted to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
    /// Deprecated alias of `analysis`, read only when `analysis` is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_analysis: Option<CanaryAnalysis>,
    /// Seconds a rollout may make no progress before it is rolled back (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    /// Promote a new version without analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_analysis: Option<bool>,
    /// On deletion of the Canary, give the target back its traffic and replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_on_deletion: Option<bool>,
    /// Pause this canary: no step is taken and no object is changed until unsuspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// Flagger's CRD requires `spec.analysis`; the Rust type keeps it optional only so that the
/// deprecated `canaryAnalysis` alias can be read from objects stored before.
fn require_analysis(schema: &mut schemars::Schema) {
    crate::api::common::tidy_enums(schema);
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(required) = obj.get_mut("required").and_then(|r| r.as_array_mut()) {
        required.push("analysis".into());
        required.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    if let Some(analysis) = obj
        .get_mut("properties")
        .and_then(|p| p.get_mut("analysis"))
    {
        crate::api::common::make_non_nullable(analysis);
    }
}

// Traffic management providers, spelled as in Flagger's CRD.
// (Plain comment, not a doc comment: kube's OptionalEnum transform would copy an enum's
// description over the description of every `Option<enum>` field.)
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
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Provider {
    Apisix,
    AppMesh,
    #[serde(rename = "appmesh:v1beta2")]
    #[strum(serialize = "appmesh:v1beta2")]
    AppMeshV1beta2,
    Contour,
    #[serde(rename = "gatewayapi:v1")]
    #[strum(serialize = "gatewayapi:v1")]
    GatewayApiV1,
    #[serde(rename = "gatewayapi:v1beta1")]
    #[strum(serialize = "gatewayapi:v1beta1")]
    GatewayApiV1beta1,
    Gloo,
    Istio,
    Knative,
    Kubernetes,
    Kuma,
    Linkerd,
    Nginx,
    Osm,
    Skipper,
    #[serde(rename = "smi:v1alpha1")]
    #[strum(serialize = "smi:v1alpha1")]
    SmiV1alpha1,
    #[serde(rename = "smi:v1alpha2")]
    #[strum(serialize = "smi:v1alpha2")]
    SmiV1alpha2,
    #[serde(rename = "smi:v1alpha3")]
    #[strum(serialize = "smi:v1alpha3")]
    SmiV1alpha3,
    Traefik,
}

impl Provider {
    /// Every provider, in the CRD's order.
    pub fn all() -> impl Iterator<Item = Provider> {
        <Provider as strum::IntoEnumIterator>::iter()
    }

    /// The name as written in `spec.provider` and `--mesh-provider`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Gateway API, any version.
    pub fn is_gateway_api(self) -> bool {
        matches!(self, Provider::GatewayApiV1 | Provider::GatewayApiV1beta1)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;

    /// Parses a provider name exactly as Flagger spells it (`gatewayapi:v1`, `istio`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::all().find(|p| p.as_str() == s).ok_or_else(|| {
            let allowed: Vec<_> = Provider::all().map(Provider::as_str).collect();
            format!("unknown provider `{s}`; allowed: {}", allowed.join(", "))
        })
    }
}

/// A reference to an object in the Canary's namespace, with a closed set of kinds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindRef<K> {
    /// API version of the referenced object, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind of the referenced object.
    pub kind: K,
    /// Name of the referenced object.
    pub name: String,
}

/// `spec.targetRef`.
pub type TargetRef = KindRef<TargetKind>;
/// `spec.ingressRef`.
pub type IngressRef = KindRef<IngressKind>;
/// `spec.routeRef`.
pub type RouteRef = KindRef<RouteKind>;

/// Kinds of workload a Canary can release.
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
pub enum TargetKind {
    DaemonSet,
    Deployment,
    Service,
    StatefulSet,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `spec.ingressRef.kind`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IngressKind {
    Ingress,
}

/// `spec.routeRef.kind`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RouteKind {
    ApisixRoute,
}

/// `spec.upstreamRef.kind`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpstreamKind {
    Upstream,
}

/// `spec.autoscalerRef.kind`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AutoscalerKind {
    HorizontalPodAutoscaler,
    ScaledObject,
}

/// `spec.upstreamRef`: a Gloo Upstream, possibly in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamRef {
    /// API version of the Upstream, e.g. `gloo.solo.io/v1`.
    pub api_version: String,
    /// Always `Upstream`.
    pub kind: UpstreamKind,
    /// Name of the Upstream.
    pub name: String,
    /// Namespace of the Upstream; defaults to the Canary's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.autoscalerRef`: the target's autoscaler, copied for the primary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    /// API version of the autoscaler, e.g. `autoscaling/v2` or `keda.sh/v1alpha1`.
    pub api_version: String,
    /// HorizontalPodAutoscaler or ScaledObject.
    pub kind: AutoscalerKind,
    /// Name of the autoscaler.
    pub name: String,
    /// KEDA only: queries for the primary ScaledObject's triggers, by trigger name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    /// Replica bounds for the primary's autoscaler; default: those of the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica bounds of the primary's autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    /// Minimum replicas of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Maximum replicas of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
}

/// The release strategy a Canary's analysis selects (Flagger's `DeploymentStrategy()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeploymentStrategy {
    /// Progressive traffic weights (`stepWeight`/`stepWeights`).
    Canary,
    /// `match` conditions route matching requests to the new version for `iterations` checks.
    AbTesting,
    /// The new version is checked `iterations` times, then gets all traffic at once.
    BlueGreen,
}

impl DeploymentStrategy {
    /// The label Flagger uses in metrics and alerts: `canary`, `ab-testing`, `blue-green`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStrategy::Canary => "canary",
            DeploymentStrategy::AbTesting => "ab-testing",
            DeploymentStrategy::BlueGreen => "blue-green",
        }
    }
}

/// Flagger's default `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u32 = 600;

/// serin extension: the annotation naming a Canary's release group, the Canaries of one
/// namespace released together (docs/release-groups.md).
pub const RELEASE_GROUP: &str = "serin.flagger.app/release-group";

impl CanarySpec {
    /// The analysis in effect: `analysis`, else the deprecated `canaryAnalysis`.
    pub fn analysis(&self) -> Option<&CanaryAnalysis> {
        self.analysis.as_ref().or(self.canary_analysis.as_ref())
    }

    /// `provider`, else the controller's default (`--mesh-provider`).
    pub fn provider_or(&self, default: Provider) -> Provider {
        self.provider.unwrap_or(default)
    }

    /// Name of the apex Service: `service.name`, else `targetRef.name`.
    pub fn service_name(&self) -> &str {
        match self.service.name.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ => &self.target_ref.name,
        }
    }

    /// `progressDeadlineSeconds`, default 600 (also when set to 0 or less).
    pub fn progress_deadline_seconds(&self) -> u32 {
        match self.progress_deadline_seconds {
            Some(s) if s > 0 => s.unsigned_abs(),
            _ => DEFAULT_PROGRESS_DEADLINE_SECONDS,
        }
    }

    /// Whether a new version is promoted without analysis: `skipAnalysis: true`, or no
    /// analysis at all (as Flagger's `SkipAnalysis()`).
    pub fn skip_analysis(&self) -> bool {
        self.skip_analysis == Some(true) || self.analysis().is_none()
    }

    /// `suspend`, default false.
    pub fn is_suspended(&self) -> bool {
        self.suspend == Some(true)
    }

    /// `revertOnDeletion`, default false.
    pub fn revert_on_deletion(&self) -> bool {
        self.revert_on_deletion == Some(true)
    }

    /// The target is a Knative Service (kind `Service`, apiVersion `serving.knative.dev/*`).
    pub fn is_knative_target(&self) -> bool {
        self.target_ref.kind == TargetKind::Service
            && self
                .target_ref
                .api_version
                .starts_with("serving.knative.dev/")
    }

    /// Flagger's strategy selection: `match` non-empty and `iterations > 0` → A/B testing;
    /// `iterations > 0` → Blue/Green; otherwise progressive canary.
    pub fn strategy(&self) -> DeploymentStrategy {
        let Some(analysis) = self.analysis() else {
            return DeploymentStrategy::Canary;
        };
        let iterations = analysis.iterations.unwrap_or(0) > 0;
        let has_match = analysis.r#match.as_ref().is_some_and(|m| !m.is_empty());
        match (iterations, has_match) {
            (true, true) => DeploymentStrategy::AbTesting,
            (true, false) => DeploymentStrategy::BlueGreen,
            (false, _) => DeploymentStrategy::Canary,
        }
    }
}

#[cfg(test)]
mod tests;
