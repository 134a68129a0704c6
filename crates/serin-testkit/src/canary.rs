//! The one Canary manifest builder of the tests: the scenarios' usual Canary, changed only
//! where a test says so.

use serde_json::{Value, json};

/// A Canary manifest (`flagger.app/v1beta1`) without a namespace (the kit creates it in the
/// scenario's, [`crate::World::ns`]): by default the `kubernetes` provider (blue/green), a
/// Deployment target of the same name, port 9898, a 60 s progress deadline, and one check at
/// a 1 s interval with a threshold of 2.
///
/// ```
/// use serde_json::json;
/// let manifest = serin_testkit::canary("podinfo")
///     .provider("istio")
///     .analysis(json!({"interval": "2s", "threshold": 2, "stepWeight": 25, "maxWeight": 50}))
///     .build();
/// assert_eq!(manifest["spec"]["analysis"]["stepWeight"], 25);
/// ```
#[derive(Debug, Clone)]
pub struct CanaryManifest(Value);

/// The weights of an Istio VirtualService's first HTTP route, in its destinations' order
/// (serin writes the primary first).
pub fn virtual_service_weights(vs: &kube::api::DynamicObject) -> Vec<i64> {
    vs.data["spec"]["http"][0]["route"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|d| d["weight"].as_i64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// The Ingress `podinfo` (class `nginx`, host `podinfo.example.com`) that an NGINX Canary
/// built with [`CanaryManifest::routed_by`] refers to.
pub fn apex_ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "podinfo"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "podinfo.example.com",
            "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}
    })
}

/// The scenarios' usual Canary for the Deployment `name` (see [`CanaryManifest`]).
pub fn canary(name: &str) -> CanaryManifest {
    CanaryManifest(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": {"interval": "1s", "threshold": 2, "iterations": 1}
        }
    }))
}

impl CanaryManifest {
    /// `spec.provider`.
    pub fn provider(self, provider: &str) -> Self {
        self.spec("provider", json!(provider))
    }

    /// `spec.provider`, with what the provider needs beside it in the stack: the Gateway
    /// `public` and a host for Gateway API, the Ingress of [`apex_ingress`] for NGINX.
    pub fn routed_by(self, provider: &str) -> Self {
        let routed = self.provider(provider);
        if provider.starts_with("gatewayapi") {
            return routed.spec(
                "service",
                json!({"port": 9898, "gatewayRefs": [{"name": "public"}],
                       "hosts": ["podinfo.example.com"]}),
            );
        }
        if provider == "nginx" {
            return routed.spec(
                "ingressRef",
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"}),
            );
        }
        routed
    }

    /// `spec.analysis`, replaced as a whole.
    pub fn analysis(self, analysis: Value) -> Self {
        self.spec("analysis", analysis)
    }

    /// `spec.analysis.iterations`.
    pub fn iterations(mut self, iterations: u32) -> Self {
        self.0["spec"]["analysis"]["iterations"] = json!(iterations);
        self
    }

    /// `spec.analysis.metrics`.
    pub fn metrics(mut self, metrics: Value) -> Self {
        self.0["spec"]["analysis"]["metrics"] = metrics;
        self
    }

    /// `spec.progressDeadlineSeconds`.
    pub fn deadline(self, seconds: u32) -> Self {
        self.spec("progressDeadlineSeconds", json!(seconds))
    }

    /// Any field of `spec`, replaced as a whole.
    pub fn spec(mut self, field: &str, value: Value) -> Self {
        self.0["spec"][field] = value;
        self
    }

    /// `metadata.labels`, replaced as a whole.
    pub fn labels(mut self, labels: Value) -> Self {
        self.0["metadata"]["labels"] = labels;
        self
    }

    /// `metadata.annotations`, replaced as a whole.
    pub fn annotations(mut self, annotations: Value) -> Self {
        self.0["metadata"]["annotations"] = annotations;
        self
    }

    /// `metadata.namespace` (by default none: created in the scenario's, [`crate::World::ns`]).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(namespace);
        self
    }

    /// Without the field `field` of `spec`.
    pub fn without(mut self, field: &str) -> Self {
        if let Some(spec) = self.0["spec"].as_object_mut() {
            spec.remove(field);
        }
        self
    }

    pub fn build(self) -> Value {
        self.0
    }

    /// The Canary as serin reads it (for tests that call serin's code directly).
    pub fn parse(self) -> serin::api::Canary {
        serde_json::from_value(self.0).expect("the kit's Canary parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_name_the_target_and_changes_touch_only_their_field() {
        let c = canary("web").iterations(3).deadline(30).build();
        assert_eq!(
            canary("web").without("service").build()["spec"].get("service"),
            None
        );
        assert_eq!(c["metadata"]["name"], "web");
        assert_eq!(c["spec"]["targetRef"]["name"], "web");
        assert_eq!(c["spec"]["provider"], "kubernetes");
        assert_eq!(c["spec"]["progressDeadlineSeconds"], 30);
        assert_eq!(
            c["spec"]["analysis"],
            json!({"interval": "1s", "threshold": 2, "iterations": 3})
        );
    }
}
