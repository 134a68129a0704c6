//! Gloo Edge: Upstreams for the primary and canary Services
//! (`<namespace>-<apex>-{primary,canary}upstream-<port>`, settings copied from
//! `spec.upstreamRef` when set) and a RouteTable `<apex>` that the user delegates to from
//! their VirtualService. Its route inherits the parent's path matchers and splits between
//! the two Upstreams by weight. A/B testing: the route matches `analysis.match` (headers and
//! method), and a second route keeps every other request on the primary.

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Map, Value, json};
use serin_core::Routes;

use super::capability::{self, Features};
use super::live;
use super::routing_object::{self, Metadata};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;
use crate::api::canary::{HttpMatchRequest, StringMatch};

pub struct Gloo;

const FEATURES: Features = Features {
    ab_testing: true,
    mirroring: false,
    session_affinity: false,
};

/// Upstream settings copied from `spec.upstreamRef` (connection behaviour, not routing).
const COPIED: [&str; 8] = [
    "sslConfig",
    "circuitBreakers",
    "connectionConfig",
    "loadBalancerConfig",
    "useHttp2",
    "initialStreamWindowSize",
    "initialConnectionWindowSize",
    "httpProxyHostname",
];

fn upstream_resource() -> ApiResource {
    routing_object::resource("gloo.solo.io", "v1", "Upstream", "upstreams")
}

fn route_table_resource() -> ApiResource {
    routing_object::resource("gateway.solo.io", "v1", "RouteTable", "routetables")
}

fn upstream_name(input: &Input<'_>, role: &str) -> String {
    format!(
        "{}-{}-{role}upstream-{}",
        input.namespace, input.apex, input.canary.spec.service.port
    )
}

/// The Upstream of `spec.upstreamRef`, as a key.
fn template_key(input: &Input<'_>) -> Option<ObjectKey> {
    let r = input.canary.spec.upstream_ref.as_ref()?;
    Some(ObjectKey {
        resource: upstream_resource(),
        namespace: Some(r.namespace.clone().unwrap_or(input.namespace.to_string())),
        name: r.name.clone(),
    })
}

/// One Gloo matcher per `analysis.match` entry (Gloo ORs the matchers of a route).
fn matcher(at: &str, m: &HttpMatchRequest) -> Result<Value, String> {
    let supported = HttpMatchRequest {
        name: m.name.clone(),
        headers: m.headers.clone(),
        method: m.method.clone(),
        ..HttpMatchRequest::default()
    };
    if *m != supported {
        return Err(format!(
            "{at}: provider gloo matches headers and method only; remove the other conditions"
        ));
    }
    let mut out = Map::new();
    let mut headers = Vec::new();
    for (name, cond) in m.headers.iter().flatten() {
        headers.push(match cond {
            StringMatch {
                exact: Some(v),
                prefix: None,
                suffix: None,
                regex: None,
            } => json!({"name": name, "value": v}),
            StringMatch {
                regex: Some(v),
                exact: None,
                prefix: None,
                suffix: None,
            } => json!({"name": name, "value": v, "regex": true}),
            _ => {
                return Err(format!(
                    "{at}.headers.{name}: provider gloo matches headers by exact value or \
                     regex only"
                ));
            }
        });
    }
    if !headers.is_empty() {
        out.insert("headers".into(), json!(headers));
    }
    if let Some(method) = &m.method {
        let exact = method
            .exact
            .as_ref()
            .filter(|_| {
                method.prefix.is_none() && method.suffix.is_none() && method.regex.is_none()
            })
            .ok_or_else(|| format!("{at}.method: provider gloo matches a method exactly only"))?;
        out.insert("methods".into(), json!([exact]));
    }
    if out.is_empty() {
        return Err(format!(
            "{at}: A/B testing on gloo needs a header or method condition"
        ));
    }
    Ok(Value::Object(out))
}

fn route(input: &Input<'_>, routes: Routes) -> Value {
    let destination = |role: &str, weight: u32| {
        json!({
            "destination": {"upstream": {
                "name": upstream_name(input, role), "namespace": input.namespace
            }},
            "weight": weight,
        })
    };
    json!({
        // The parent VirtualService decides the path; this table decides the version.
        "inheritablePathMatchers": true,
        "routeAction": {"multi": {"destinations": [
            destination("primary", routes.primary),
            destination("canary", routes.canary),
        ]}},
    })
}

impl Router for Gloo {
    fn provider(&self) -> Provider {
        Provider::Gloo
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = template_key(input).into_iter().collect();
        for role in ["primary", "canary"] {
            keys.push(routing_object::key(
                upstream_resource(),
                input,
                &upstream_name(input, role),
            ));
        }
        keys.push(routing_object::key(
            route_table_resource(),
            input,
            input.apex,
        ));
        keys
    }

    fn render(&self, input: &Input<'_>, live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Gloo, FEATURES, input)?;
        let template = match template_key(input) {
            Some(key) => Some(live.get(&key.id()).ok_or_else(|| {
                format!(
                    "spec.upstreamRef: Upstream {}/{} not found",
                    key.namespace.unwrap_or_default(),
                    key.name
                )
            })?),
            None => None,
        };
        let mut objects = Vec::new();
        for (role, service) in [
            ("primary", &input.primary_service),
            ("canary", &input.canary_service),
        ] {
            let mut spec = json!({"kube": {
                "serviceName": service,
                "serviceNamespace": input.namespace,
                "servicePort": input.canary.spec.service.port,
            }});
            let mut labels = Default::default();
            if let Some(template) = template {
                for field in COPIED {
                    if let Some(v) = template.data.pointer(&format!("/spec/{field}")) {
                        spec[field] = v.clone();
                    }
                }
                labels = template.labels().clone();
                labels.retain(|k, _| !live::is_flux_key(k));
            }
            let key = routing_object::key(upstream_resource(), input, &upstream_name(input, role));
            let mut upstream = routing_object::object(&key, input, Metadata::Apex, spec);
            if !labels.is_empty() {
                upstream.labels_mut().extend(labels);
            }
            objects.push(upstream);
        }
        let routes = match input.ab_matches() {
            Some(matches) => {
                let matchers = matches
                    .iter()
                    .enumerate()
                    .map(|(i, m)| matcher(&format!("spec.analysis.match[{i}]"), m))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut ab = route(input, input.routes);
                ab["matchers"] = json!(matchers);
                vec![ab, route(input, Routes::PRIMARY)]
            }
            _ => vec![route(input, input.routes)],
        };
        objects.push(routing_object::object(
            &routing_object::key(route_table_resource(), input, input.apex),
            input,
            Metadata::Apex,
            json!({"routes": routes}),
        ));
        Ok(objects)
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let Some(table) = live.get(&format!("RouteTable/{}", input.apex)) else {
            return Ok(None);
        };
        // The first route carries the split (the match route when A/B testing).
        let destinations = table
            .data
            .pointer("/spec/routes/0/routeAction/multi/destinations")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                format!(
                    "RouteTable {} has no spec.routes[0].routeAction.multi.destinations",
                    input.apex
                )
            })?;
        let weight_of = |role: &str| {
            let name = upstream_name(input, role);
            destinations
                .iter()
                .find(|d| d.pointer("/destination/upstream/name") == Some(&json!(name)))
                .and_then(|d| live::number(&d["weight"]))
                .unwrap_or(0.0)
        };
        live::split_in(
            &format!("RouteTable {}", input.apex),
            weight_of("primary"),
            weight_of("canary"),
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{
        ab_spec, any_split, assert_render_errors, canary, input, live, object, read_back,
    };

    fn template() -> DynamicObject {
        object(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": "tuned", "namespace": "gloo-system", "labels": {"team": "a"}},
            "spec": {
                "connectionConfig": {"maxRequestsPerConnection": 100},
                "loadBalancerConfig": {"roundRobin": {}},
                "kube": {"serviceName": "ignored", "serviceNamespace": "x", "servicePort": 1}
            }
        }))
    }

    #[test]
    fn upstreams_from_the_template_and_a_weighted_route_table() {
        let canary = canary(json!({"upstreamRef": {
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "name": "tuned", "namespace": "gloo-system"
        }}));
        let options = Options::default();
        let input = input(&canary, Routes::canary(15), &options);
        let ids: Vec<_> = Gloo.objects(&input).iter().map(ObjectKey::id).collect();
        assert_eq!(ids[0], "Upstream/tuned");
        let objects = Gloo.render(&input, &live([template()])).unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn ab_testing_matchers_then_primary() {
        let canary = canary(
            json!({"analysis": {"stepWeight": null, "iterations": 10, "match": [
                {"headers": {"x-canary": {"exact": "insider"}}, "method": {"exact": "GET"}},
                {"headers": {"user-agent": {"regex": ".*Firefox.*"}}}
            ]}}),
        );
        let options = Options::default();
        let objects = Gloo
            .render(&input(&canary, Routes::CANARY, &options), &Live::new())
            .unwrap();
        insta::assert_yaml_snapshot!(objects.last());
    }

    #[test]
    fn errors_name_the_field() {
        let table = [
            (
                json!({"upstreamRef": {"apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
                                       "name": "missing"}}),
                "spec.upstreamRef: Upstream test/missing not found",
            ),
            (
                json!({"analysis": {"mirror": true}}),
                "spec.analysis.mirror",
            ),
            (
                json!({"analysis": {"stepWeight": null, "iterations": 3,
                        "match": [{"headers": {"x-a": {"prefix": "a"}}}]}}),
                "spec.analysis.match[0].headers.x-a: provider gloo",
            ),
            (
                json!({"analysis": {"stepWeight": null, "iterations": 3,
                        "match": [{"uri": {"prefix": "/a"}}]}}),
                "spec.analysis.match[0]: provider gloo",
            ),
        ];
        assert_render_errors(&Gloo, &table);
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split(), ab in any::<bool>()) {
            let canary = if ab { canary(ab_spec()) } else { canary(json!({})) };
            prop_assert_eq!(read_back(&Gloo, &canary, routes, &Live::new()), Some(routes));
        }
    }
}
