//! The builtin metrics `request-success-rate` (percent of non-5xx responses) and
//! `request-duration` (milliseconds): one Prometheus query pair per observer, kept as YAML data
//! in `metrics-templates/builtin/` and embedded here.
//!
//! The observer follows from the canary's provider as Flagger chooses it: `spec.provider`, else
//! the controller's `--mesh-provider`; but a controller running with `linkerd` reads Linkerd's
//! metrics whatever the canary says. Flagger also appends `:service` for Service targets, which
//! sends `linkerd`, `contour`, `nginx` and `kubernetes` Service targets to the Istio observer
//! through its fallback; serin keeps the provider's own metrics instead.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::api::{Canary, Provider};

/// Whose metrics the builtin queries read; the lowercase name is the YAML file's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Observer {
    Istio,
    Linkerd,
    AppMesh,
    Contour,
    Gloo,
    Nginx,
    /// Metrics the application exports itself (`kubernetes`, `gatewayapi`).
    Http,
    Skipper,
    Traefik,
    Osm,
    Kuma,
    Apisix,
    Knative,
}

impl Observer {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The observer of a provider. SMI has no metrics of its own: Flagger's fallback, Istio.
    pub fn of(provider: Provider) -> Observer {
        match provider {
            Provider::AppMesh | Provider::AppMeshV1beta2 => Observer::AppMesh,
            Provider::Linkerd => Observer::Linkerd,
            Provider::Istio => Observer::Istio,
            Provider::Contour => Observer::Contour,
            Provider::Gloo => Observer::Gloo,
            Provider::Nginx => Observer::Nginx,
            Provider::Kubernetes | Provider::GatewayApiV1 | Provider::GatewayApiV1beta1 => {
                Observer::Http
            }
            Provider::Skipper => Observer::Skipper,
            Provider::Traefik => Observer::Traefik,
            Provider::Osm => Observer::Osm,
            Provider::Kuma => Observer::Kuma,
            Provider::Apisix => Observer::Apisix,
            Provider::Knative => Observer::Knative,
            Provider::SmiV1alpha1 | Provider::SmiV1alpha2 | Provider::SmiV1alpha3 => {
                Observer::Istio
            }
        }
    }

    /// The observer of `canary` under a controller started with `mesh_provider`.
    pub fn for_canary(canary: &Canary, mesh_provider: Provider) -> Observer {
        if mesh_provider == Provider::Linkerd {
            return Observer::Linkerd;
        }
        Observer::of(canary.spec.provider.unwrap_or(mesh_provider))
    }
}

/// Which builtin metric, by its name in `spec.analysis.metrics[].name`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Builtin {
    /// Percent of requests that did not answer 5xx.
    RequestSuccessRate,
    /// Milliseconds (99th percentile for most observers, the mean for NGINX and Skipper).
    RequestDuration,
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Builtin> {
        name.parse().ok()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The embedded files, by observer.
const FILES: [(&str, &str); 13] = [
    (
        "istio",
        include_str!("../../metrics-templates/builtin/istio.yaml"),
    ),
    (
        "linkerd",
        include_str!("../../metrics-templates/builtin/linkerd.yaml"),
    ),
    (
        "appmesh",
        include_str!("../../metrics-templates/builtin/appmesh.yaml"),
    ),
    (
        "contour",
        include_str!("../../metrics-templates/builtin/contour.yaml"),
    ),
    (
        "gloo",
        include_str!("../../metrics-templates/builtin/gloo.yaml"),
    ),
    (
        "nginx",
        include_str!("../../metrics-templates/builtin/nginx.yaml"),
    ),
    (
        "http",
        include_str!("../../metrics-templates/builtin/http.yaml"),
    ),
    (
        "skipper",
        include_str!("../../metrics-templates/builtin/skipper.yaml"),
    ),
    (
        "traefik",
        include_str!("../../metrics-templates/builtin/traefik.yaml"),
    ),
    (
        "osm",
        include_str!("../../metrics-templates/builtin/osm.yaml"),
    ),
    (
        "kuma",
        include_str!("../../metrics-templates/builtin/kuma.yaml"),
    ),
    (
        "apisix",
        include_str!("../../metrics-templates/builtin/apisix.yaml"),
    ),
    (
        "knative",
        include_str!("../../metrics-templates/builtin/knative.yaml"),
    ),
];

#[derive(Deserialize)]
struct Document {
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Deserialize)]
struct Spec {
    query: String,
}

/// Every builtin query by template name (`<observer>-<metric>`), or what is wrong with the
/// embedded files (a unit test keeps this from ever being the case in a release).
static QUERIES: LazyLock<Result<BTreeMap<String, String>, String>> = LazyLock::new(|| {
    let mut queries = BTreeMap::new();
    for (observer, text) in FILES {
        for document in serde_norway::Deserializer::from_str(text) {
            let document = Document::deserialize(document)
                .map_err(|e| format!("metrics-templates/builtin/{observer}.yaml: {e}"))?;
            queries.insert(document.metadata.name, document.spec.query);
        }
    }
    Ok(queries)
});

/// The query template of a builtin metric for an observer.
pub fn query(observer: Observer, builtin: Builtin) -> Result<&'static str, String> {
    let queries = QUERIES.as_ref().map_err(Clone::clone)?;
    let name = format!("{}-{}", observer.as_str(), builtin.as_str());
    queries
        .get(&name)
        .map(String::as_str)
        .ok_or_else(|| format!("no builtin query {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::template::{TemplateVars, render};

    #[test]
    fn every_observer_has_both_builtins_and_they_render() {
        for observer in <Observer as strum::IntoEnumIterator>::iter() {
            for builtin in <Builtin as strum::IntoEnumIterator>::iter() {
                let template = query(observer, builtin).unwrap();
                let rendered = render(template, &TemplateVars::example()).unwrap();
                assert!(
                    rendered.contains("[1m]"),
                    "{observer:?} {builtin:?}: {rendered}"
                );
                assert!(!rendered.contains('\n'));
                assert!(!rendered.contains("{{"));
            }
        }
    }

    #[test]
    fn istio_success_rate_is_flaggers_query() {
        let rendered = render(
            query(Observer::Istio, Builtin::RequestSuccessRate).unwrap(),
            &TemplateVars::example(),
        )
        .unwrap();
        assert_eq!(
            rendered,
            "sum(rate(istio_requests_total{reporter=\"destination\", \
             destination_workload_namespace=\"test\", destination_workload=~\"podinfo\", \
             response_code!~\"5.*\"}[1m])) / sum(rate(istio_requests_total{reporter=\"destination\", \
             destination_workload_namespace=\"test\", destination_workload=~\"podinfo\"}[1m])) * 100"
        );
    }

    #[test]
    fn durations_in_seconds_are_converted_to_milliseconds() {
        for observer in [
            Observer::Http,
            Observer::Nginx,
            Observer::Skipper,
            Observer::Traefik,
        ] {
            let q = query(observer, Builtin::RequestDuration).unwrap();
            assert!(q.trim_end().ends_with("* 1000"), "{observer:?}: {q}");
        }
        let istio = query(Observer::Istio, Builtin::RequestDuration).unwrap();
        assert!(istio.contains("histogram_quantile(0.99"));
        assert!(!istio.contains("1000"));
    }

    #[test]
    fn observer_choice_follows_flagger() {
        assert_eq!(Observer::of(Provider::GatewayApiV1), Observer::Http);
        assert_eq!(Observer::of(Provider::Kubernetes), Observer::Http);
        assert_eq!(Observer::of(Provider::AppMeshV1beta2), Observer::AppMesh);
        assert_eq!(Observer::of(Provider::SmiV1alpha3), Observer::Istio);
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "provider": "nginx",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 80},
                "analysis": {}
            }
        }))
        .unwrap();
        assert_eq!(
            Observer::for_canary(&canary, Provider::Istio),
            Observer::Nginx
        );
        assert_eq!(
            Observer::for_canary(&canary, Provider::Linkerd),
            Observer::Linkerd
        );
    }
}
