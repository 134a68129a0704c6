//! Apache APISIX: an ApisixRoute `<routeRef>-<apex>-canary` holding a copy of the user's rule
//! that serves the apex Service, with priority 10000 so it wins over the user's rule, and
//! two weighted backends, `<apex>-primary` and `<apex>-canary`. The user's ApisixRoute is
//! only read.

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use serin_core::Routes;

use super::capability::{self, WEIGHTS_ONLY};
use super::live;
use super::routing_object::{self, Metadata};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

pub struct Apisix;

/// Above any priority users give their own rules.
const PRIORITY: i64 = 10_000;

fn resource() -> ApiResource {
    routing_object::resource("apisix.apache.org", "v2", "ApisixRoute", "apisixroutes")
}

fn route_ref<'a>(input: &'a Input<'_>) -> Result<&'a str, String> {
    input
        .canary
        .spec
        .route_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .ok_or_else(|| {
            "spec.routeRef: provider apisix routes through an ApisixRoute; set routeRef to the \
             ApisixRoute that serves the apex Service"
                .to_string()
        })
}

fn canary_name(input: &Input<'_>) -> String {
    // Without routeRef the controller still fetches this name, so that `render` is reached
    // and reports the missing field.
    let base = route_ref(input).unwrap_or(input.apex);
    format!("{base}-{}-canary", input.apex)
}

impl Router for Apisix {
    fn provider(&self) -> Provider {
        Provider::Apisix
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        if let Ok(name) = route_ref(input) {
            keys.push(routing_object::key(resource(), input, name));
        }
        keys.push(routing_object::key(resource(), input, &canary_name(input)));
        keys
    }

    fn render(&self, input: &Input<'_>, live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Apisix, WEIGHTS_ONLY, input)?;
        let name = route_ref(input)?;
        let user = live.get(&format!("ApisixRoute/{name}")).ok_or_else(|| {
            format!(
                "spec.routeRef: ApisixRoute {}/{name} not found; create it or fix the name",
                input.namespace
            )
        })?;
        let serves_apex = |rule: &&Value| {
            rule["backends"]
                .as_array()
                .is_some_and(|b| b.len() == 1 && b[0]["serviceName"] == input.apex)
        };
        let rule = user
            .data
            .pointer("/spec/http")
            .and_then(Value::as_array)
            .and_then(|rules| rules.iter().find(serves_apex))
            .ok_or_else(|| {
                format!(
                    "spec.routeRef: ApisixRoute {name} has no http rule whose only backend is \
                     Service {}",
                    input.apex
                )
            })?;
        let mut rule = rule.clone();
        let backend = |service: &str, weight: u32| {
            let mut b = rule["backends"][0].clone();
            b["serviceName"] = json!(service);
            b["weight"] = json!(weight);
            b
        };
        let backends = json!([
            backend(&input.primary_service, input.routes.primary),
            backend(&input.canary_service, input.routes.canary),
        ]);
        rule["backends"] = backends;
        rule["priority"] = json!(PRIORITY);
        let mut spec = json!({ "http": [rule] });
        if let Some(class) = user.data.pointer("/spec/ingressClassName") {
            spec["ingressClassName"] = class.clone();
        }
        Ok(vec![routing_object::object(
            &routing_object::key(resource(), input, &canary_name(input)),
            input,
            Metadata::Apex,
            spec,
        )])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let name = canary_name(input);
        let Some(route) = live.get(&format!("ApisixRoute/{name}")) else {
            return Ok(None);
        };
        let backends = route
            .data
            .pointer("/spec/http/0/backends")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("ApisixRoute {name} has no spec.http[0].backends"))?;
        let weight_of = |service: &str| {
            backends
                .iter()
                .find(|b| b["serviceName"] == service)
                .and_then(|b| live::number(&b["weight"]))
                .unwrap_or(0.0)
        };
        live::routes_read(input, &format!("ApisixRoute {name}"), weight_of)
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

    fn user_route() -> DynamicObject {
        object(json!({
            "apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "ingressClassName": "apisix",
                "http": [
                    {"name": "other", "match": {"paths": ["/other"]},
                     "backends": [{"serviceName": "other", "servicePort": 80}]},
                    {"name": "method", "match": {"hosts": ["app.example.com"], "paths": ["/*"],
                                                "methods": ["GET"]},
                     "backends": [{"serviceName": "podinfo", "servicePort": 80,
                                   "resolveGranularity": "service"}],
                     "plugins": [{"name": "prometheus", "enable": true}]}
                ]
            }
        }))
    }

    fn with_ref() -> Canary {
        canary(json!({"routeRef": {
            "apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "name": "podinfo"
        }}))
    }

    #[test]
    fn canary_route_copies_the_apex_rule() {
        let canary = with_ref();
        let options = Options::default();
        let objects = Apisix
            .render(
                &input(&canary, Routes::canary(60), &options),
                &live([user_route()]),
            )
            .unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn errors_name_the_field() {
        let no_ref = canary(json!({}));
        let err = render_error(&Apisix, &no_ref, Routes::PRIMARY, &live([user_route()]));
        assert!(err.starts_with("spec.routeRef: provider apisix"), "{err}");
        let canary = with_ref();
        let err = render_error(&Apisix, &canary, Routes::PRIMARY, &Live::new());
        assert!(
            err.starts_with("spec.routeRef: ApisixRoute test/podinfo not found"),
            "{err}"
        );
        let mut other = with_ref();
        other.spec.service.name = Some("elsewhere".into());
        let err = render_error(&Apisix, &other, Routes::PRIMARY, &live([user_route()]));
        assert!(
            err.contains("no http rule whose only backend is Service elsewhere"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split()) {
            let canary = with_ref();
            prop_assert_eq!(read_back(&Apisix, &canary, routes, &live([user_route()])), Some(routes));
        }
    }
}
