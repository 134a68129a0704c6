//! The `kubernetes` provider: blue/green with plain Services. The apex Service always selects
//! the primary; the new version is reachable only through `<apex>-canary` (for the load tester
//! and the checks) until it is promoted. There is no weight to shift, so nothing to render.

use kube::api::DynamicObject;
use serin_core::Routes;

use super::Router;
use crate::api::{Canary, Provider};

pub struct Kubernetes;

impl Router for Kubernetes {
    fn provider(&self) -> Provider {
        Provider::Kubernetes
    }

    fn render(&self, _canary: &Canary, _routes: Routes) -> Result<Vec<DynamicObject>, String> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_routes_with_services_alone() {
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 80}, "analysis": {"interval": "1m"}}
        }))
        .unwrap();
        let objects = Kubernetes.render(&canary, Routes::canary(50)).unwrap();
        assert!(objects.is_empty());
        assert!(super::super::for_provider(Provider::Istio).is_err());
        let err = super::super::for_provider(Provider::Nginx)
            .err()
            .unwrap_or_default();
        assert!(err.contains("spec.provider"), "{err}");
    }
}
