//! Skipper: a canary Ingress `<ingressRef>-canary`, a copy of the user's Ingress whose paths
//! to the apex Service go to `<apex>-primary` and, duplicated, to `<apex>-canary`; the split
//! is the `zalando.org/backend-weights` annotation. `Weight(100)` in the route predicate makes
//! these routes win over the user's Ingress for the same host and path; at canary weight 0
//! `False()` switches them off, so the user's Ingress (apex Service, hence the primary) serves
//! alone. The user's Ingress is only read.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::{Value, json};
use serin_core::Routes;

use super::capability::{self, WEIGHTS_ONLY};
use super::ingress;
use super::live;
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

pub struct Skipper;

const BACKEND_WEIGHTS: &str = "zalando.org/backend-weights";
const PREDICATE: &str = "zalando.org/skipper-predicate";
const OUTRANK: &str = "Weight(100)";
const DISABLED: &str = "False()";

impl Router for Skipper {
    fn provider(&self) -> Provider {
        Provider::Skipper
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        ingress::objects(input, Provider::Skipper)
    }

    fn render(&self, input: &Input<'_>, live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Skipper, WEIGHTS_ONLY, input)?;
        let (name, user) = ingress::user(input, live, Provider::Skipper)?;
        let spec = user.data.get("spec").cloned().unwrap_or(json!({}));
        // Each path to the apex becomes a path to the primary followed by the same path to
        // the canary; Skipper splits between them by the backend weights.
        let spec = ingress::derive(&spec, input.apex, None, |path| {
            [&input.primary_service, &input.canary_service]
                .map(|to| {
                    let mut path = path.clone();
                    path["backend"] = ingress::retarget(&path["backend"], to);
                    path
                })
                .to_vec()
        })
        .ok_or_else(|| {
            format!(
                "spec.ingressRef: Ingress {name} has no path to Service {}; point a path of \
                 it at that Service",
                input.apex
            )
        })?;
        let mut annotations = live::copyable(user.annotations());
        let weights: BTreeMap<&str, u32> = [
            (input.primary_service.as_str(), input.routes.primary),
            (input.canary_service.as_str(), input.routes.canary),
        ]
        .into();
        annotations.insert(BACKEND_WEIGHTS.into(), json!(weights).to_string());
        let mut predicate = vec![OUTRANK];
        if input.routes.canary == 0 {
            predicate.insert(0, DISABLED);
        }
        if let Some(user_predicate) = user.annotations().get(PREDICATE) {
            predicate.push(user_predicate.as_str());
        }
        annotations.insert(PREDICATE.into(), predicate.join(" && "));
        Ok(vec![ingress::canary_object(input, user, spec, annotations)])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let name = ingress::canary_name(input);
        let Some(ingress) = live.get(&format!("Ingress/{name}")) else {
            return Ok(None);
        };
        let annotations = ingress.annotations();
        if annotations
            .get(PREDICATE)
            .is_some_and(|p| p.split("&&").any(|term| term.trim() == DISABLED))
        {
            return Ok(Some(Routes::PRIMARY));
        }
        let weights: BTreeMap<String, Value> = annotations
            .get(BACKEND_WEIGHTS)
            .map(|w| serde_json::from_str(w))
            .transpose()
            .map_err(|e| format!("Ingress {name}: {BACKEND_WEIGHTS} is not a JSON object: {e}"))?
            .ok_or_else(|| format!("Ingress {name} has no {BACKEND_WEIGHTS} annotation"))?;
        let weight_of = |service: &str| weights.get(service).and_then(live::number).unwrap_or(0.0);
        live::routes_read(input, &format!("Ingress {name}"), weight_of)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::api::Canary;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{
        any_split, canary, input, live, object, read_back, render_error,
    };

    fn user_ingress() -> DynamicObject {
        object(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {
                "name": "podinfo", "namespace": "test",
                "annotations": {"zalando.org/skipper-predicate": "Method(\"GET\")"}
            },
            "spec": {
                "ingressClassName": "skipper",
                "rules": [{"host": "app.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}}
                ]}}]
            }
        }))
    }

    fn with_ref() -> Canary {
        canary(json!({"ingressRef": {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"
        }}))
    }

    #[test]
    fn canary_ingress_with_backend_weights() {
        let canary = with_ref();
        let options = Options::default();
        let render = |routes| {
            Skipper
                .render(&input(&canary, routes, &options), &live([user_ingress()]))
                .unwrap()
        };
        insta::assert_yaml_snapshot!("skipper_canary_at_20", render(Routes::canary(20)));
        insta::assert_yaml_snapshot!(
            "skipper_disabled_at_zero",
            render(Routes::PRIMARY)[0].annotations()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let no_ref = canary(json!({}));
        let err = render_error(&Skipper, &no_ref, Routes::PRIMARY, &live([user_ingress()]));
        assert!(
            err.starts_with("spec.ingressRef: provider skipper"),
            "{err}"
        );
        let canary = with_ref();
        let err = render_error(&Skipper, &canary, Routes::PRIMARY, &Live::new());
        assert!(
            err.starts_with("spec.ingressRef: Ingress test/podinfo not found"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split()) {
            let canary = with_ref();
            prop_assert_eq!(read_back(&Skipper, &canary, routes, &live([user_ingress()])), Some(routes));
        }
    }
}
