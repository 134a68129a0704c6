//! The `kubernetes` provider: blue/green with plain Services. The apex Service always selects
//! the primary; the new version is reachable only through `<apex>-canary` (for the load tester
//! and the checks) until it is promoted. There is no weight to shift, so nothing to render.

use kube::api::DynamicObject;
use serin_core::Routes;

use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

pub struct Kubernetes;

impl Router for Kubernetes {
    fn provider(&self) -> Provider {
        Provider::Kubernetes
    }

    fn objects(&self, _input: &Input<'_>) -> Vec<ObjectKey> {
        Vec::new()
    }

    fn render(&self, _input: &Input<'_>, _live: &Live) -> Result<Vec<DynamicObject>, String> {
        Ok(Vec::new())
    }

    fn read(&self, _input: &Input<'_>, _live: &Live) -> Result<Option<Routes>, String> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Canary;
    use crate::controller::router::Options;

    #[test]
    fn kubernetes_routes_with_services_alone() {
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 80}, "analysis": {"interval": "1m"}}
        }))
        .unwrap();
        let options = Options::default();
        let input = Input {
            canary: &canary,
            namespace: "test",
            apex: "podinfo",
            primary_service: "podinfo-primary".into(),
            canary_service: "podinfo-canary".into(),
            routes: Routes::canary(50),
            ab_testing: false,
            canary_cookie: None,
            primary_cookie: None,
            options: &options,
        };
        assert!(Kubernetes.objects(&input).is_empty());
        assert!(Kubernetes.render(&input, &Live::new()).unwrap().is_empty());
        assert_eq!(Kubernetes.read(&input, &Live::new()).unwrap(), None);
    }
}
