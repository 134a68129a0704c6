//! Contour: an HTTPProxy `<apex>` without a virtual host, which the user includes from their
//! root HTTPProxy. Its route sends the path prefix to `<apex>-primary` and `<apex>-canary` by
//! weight. A/B testing: one route per `analysis.match` entry (Contour ANDs the conditions of
//! a route, and the entries are alternatives) with the weights, then a route with the prefix
//! alone that keeps every other request on the primary.

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use serin_core::Routes;

use super::capability::{self, Features};
use super::live;
use super::routing_object::{self, Metadata};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;
use crate::api::canary::{HttpMatchRequest, StringMatch};

pub struct Contour;

const FEATURES: Features = Features {
    ab_testing: true,
    mirroring: false,
    session_affinity: false,
};

fn resource() -> ApiResource {
    routing_object::resource("projectcontour.io", "v1", "HTTPProxy", "httpproxies")
}

/// The header conditions of one `analysis.match` entry.
fn header_conditions(at: &str, m: &HttpMatchRequest) -> Result<Vec<Value>, String> {
    routing_object::headers_only(at, m, "contour")?;
    let mut conditions = Vec::new();
    for (name, cond) in m.headers.iter().flatten() {
        let header = match cond {
            StringMatch {
                exact: Some(v),
                prefix: None,
                suffix: None,
                regex: None,
            } => json!({"name": name, "exact": v}),
            // Contour has no prefix or suffix match on headers; `contains` is the closest
            // (it also matches the value elsewhere), as Flagger does.
            StringMatch {
                prefix: Some(v),
                exact: None,
                suffix: None,
                regex: None,
            }
            | StringMatch {
                suffix: Some(v),
                exact: None,
                prefix: None,
                regex: None,
            } => json!({"name": name, "contains": v}),
            _ => {
                return Err(format!(
                    "{at}.headers.{name}: provider contour matches headers by exact value, \
                     prefix or suffix, not by regex"
                ));
            }
        };
        conditions.push(json!({ "header": header }));
    }
    if conditions.is_empty() {
        return Err(format!(
            "{at}: A/B testing on contour needs a header condition"
        ));
    }
    Ok(conditions)
}

/// A route to the primary and the canary with the given weights.
fn route(input: &Input<'_>, conditions: Vec<Value>, routes: Routes) -> Value {
    let service = &input.canary.spec.service;
    let port = service.port;
    let backend = |name: &str, weight: u32| {
        json!({
            "name": name,
            "port": port,
            "weight": weight,
            // Lets Linkerd, when it meshes Contour, route to the Service Contour chose.
            "requestHeadersPolicy": {"set": [{
                "name": "l5d-dst-override",
                "value": format!("{name}.{}.svc.cluster.local:{port}", input.namespace),
            }]},
        })
    };
    let mut route = json!({
        "conditions": conditions,
        "services": [
            backend(&input.primary_service, routes.primary),
            backend(&input.canary_service, routes.canary),
        ],
    });
    if let Some(timeout) = service.timeout.as_deref() {
        route["timeoutPolicy"] = json!({"response": timeout, "idle": "5m"});
    }
    if let Some(retries) = &service.retries {
        let mut policy = json!({});
        if let Some(count) = retries.attempts {
            policy["count"] = json!(count);
        }
        if let Some(per_try) = retries.per_try_timeout.as_deref() {
            policy["perTryTimeout"] = json!(per_try);
        }
        if let Some(on) = retries.retry_on.as_deref() {
            let on: Vec<&str> = on
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            policy["retryOn"] = json!(on);
        }
        route["retryPolicy"] = policy;
    }
    route
}

impl Router for Contour {
    fn provider(&self) -> Provider {
        Provider::Contour
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        vec![routing_object::key(resource(), input, input.apex)]
    }

    fn render(&self, input: &Input<'_>, _live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Contour, FEATURES, input)?;
        let prefix = json!({ "prefix": routing_object::path_prefix(input) });
        let routes = match input.ab_matches() {
            Some(matches) => {
                let mut routes = Vec::new();
                for (i, m) in matches.iter().enumerate() {
                    let mut conditions = vec![prefix.clone()];
                    conditions.extend(header_conditions(&format!("spec.analysis.match[{i}]"), m)?);
                    routes.push(route(input, conditions, input.routes));
                }
                routes.push(route(input, vec![prefix], Routes::PRIMARY));
                routes
            }
            _ => vec![route(input, vec![prefix], input.routes)],
        };
        let mut spec = json!({ "routes": routes });
        if let Some(class) = input.options.ingress_class.as_deref() {
            spec["ingressClassName"] = json!(class);
        }
        Ok(vec![routing_object::object(
            &routing_object::key(resource(), input, input.apex),
            input,
            Metadata::Apex,
            spec,
        )])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let Some(proxy) = live.get(&format!("HTTPProxy/{}", input.apex)) else {
            return Ok(None);
        };
        // The first route carries the split (the match route when A/B testing).
        let services = proxy
            .data
            .pointer("/spec/routes/0/services")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("HTTPProxy {} has no spec.routes[0].services", input.apex))?;
        let weight_of = |name: &str| {
            services
                .iter()
                .find(|s| s["name"] == name)
                .and_then(|s| live::number(&s["weight"]))
                .unwrap_or(0.0)
        };
        live::routes_read(input, &format!("HTTPProxy {}", input.apex), weight_of)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{
        ab_spec, any_split, assert_render_errors, canary, input, read_back,
    };

    #[test]
    fn weights_with_timeout_retries_and_class() {
        let canary = canary(json!({"service": {
            "timeout": "15s",
            "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "5xx, gateway-error"},
            "match": [{"uri": {"prefix": "/api"}}]
        }}));
        let options = Options {
            ingress_class: Some("contour-external".into()),
            ..Options::default()
        };
        let objects = Contour
            .render(&input(&canary, Routes::canary(40), &options), &Live::new())
            .unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn ab_testing_one_route_per_match_then_primary() {
        let canary = canary(ab_spec());
        let options = Options::default();
        let objects = Contour
            .render(&input(&canary, Routes::CANARY, &options), &Live::new())
            .unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn errors_name_the_field() {
        let table = [
            (
                json!({"analysis": {"mirror": true}}),
                "spec.analysis.mirror",
            ),
            (
                json!({"analysis": {"sessionAffinity": {"cookieName": "c"}}}),
                "spec.analysis.sessionAffinity",
            ),
            (
                json!({"analysis": {"stepWeight": null, "iterations": 3,
                        "match": [{"headers": {"x-a": {"regex": "a.*"}}}]}}),
                "spec.analysis.match[0].headers.x-a: provider contour matches headers",
            ),
            (
                json!({"analysis": {"stepWeight": null, "iterations": 3,
                        "match": [{"queryParams": {"a": {"exact": "b"}}}]}}),
                "spec.analysis.match[0]: provider contour matches request headers only",
            ),
        ];
        assert_render_errors(&Contour, &table);
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split(), ab in any::<bool>()) {
            let canary = if ab { canary(ab_spec()) } else { canary(json!({})) };
            prop_assert_eq!(read_back(&Contour, &canary, routes, &Live::new()), Some(routes));
        }
    }
}
