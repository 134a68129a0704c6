use proptest::prelude::*;
use serde_json::json;
use serin_core::Routes;

use super::*;
use crate::api::Canary;
use crate::controller::router::Options;
use crate::controller::router::routing_object::fixture::{
    assert_names_field, canary, input, split,
};

/// Snapshots live with the other routers' in `router/snapshots/`.
macro_rules! snapshot {
    ($value:expr) => {
        insta::with_settings!({ snapshot_path => "../snapshots" }, {
            insta::assert_yaml_snapshot!($value);
        })
    };
}

fn gateway_canary(patch: Value) -> Canary {
    let mut base = json!({"service": {
        "gatewayRefs": [{"name": "public", "namespace": "gateways"}],
        "hosts": ["app.example.com"]
    }});
    merge(&mut base, patch);
    canary(base)
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

fn render(router: &GatewayApi, input: &Input<'_>) -> DynamicObject {
    let mut objects = router.render(input, &Live::new()).unwrap();
    assert_eq!(objects.len(), 1);
    objects.remove(0)
}

/// The route as a Gateway that accepted generation `observed` reports it.
fn live(mut route: DynamicObject, generation: i64, accepted: &str, observed: i64) -> Live {
    route.metadata.generation = Some(generation);
    route.data["status"] = json!({"parents": [{
        "parentRef": {"name": "public", "namespace": "gateways"},
        "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": accepted, "reason": "NotAllowedByListeners",
                        "message": "no listener for app.example.com", "observedGeneration": observed}]
    }]});
    crate::controller::router::fixture::live([route])
}

#[test]
fn weights() {
    let canary = gateway_canary(json!({"service": {"timeout": "30s", "backendTimeout": "10s"}}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(30));
    snapshot!(render(&GatewayApi::V1, &input));
}

#[test]
fn v1beta1_is_the_same_route_in_its_version() {
    let canary = gateway_canary(json!({}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(30));
    let v1 = render(&GatewayApi::V1, &input);
    let v1beta1 = render(&GatewayApi::V1BETA1, &input);
    assert_eq!(
        v1beta1.types.unwrap().api_version,
        "gateway.networking.k8s.io/v1beta1"
    );
    assert_eq!(
        v1.types.unwrap().api_version,
        "gateway.networking.k8s.io/v1"
    );
    assert_eq!(v1.data, v1beta1.data);
}

#[test]
fn matches_and_filters() {
    let canary = gateway_canary(json!({"service": {
        "match": [
            {"uri": {"prefix": "/api"}, "method": {"exact": "GET"},
             "headers": {"x-tenant": {"exact": "a"}, "x-region": {"regex": "eu-.*"}},
             "queryParams": {"debug": {"exact": "1"}}},
            {"uri": {"regex": "/v[0-9]+/.*"}}
        ],
        "headers": {"request": {"set": {"x-b": "2", "x-a": "1"}, "remove": ["x-internal"]},
                    "response": {"add": {"x-served-by": "podinfo"}}},
        "rewrite": {"uri": "/", "type": "ReplacePrefixMatch", "authority": "backend.internal"},
        "mirror": [{"backendRef": {"name": "shadow", "port": 8080}}],
        "corsPolicy": {"allowOrigin": ["https://example.com"], "allowMethods": ["GET"], "maxAge": "24h",
                       "allowCredentials": true}
    }}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(10));
    snapshot!(render(&GatewayApi::V1, &input).data["spec"]);
}

#[test]
fn ab_testing_headers_and_cookies() {
    let canary = gateway_canary(json!({
        "service": {"match": [{"uri": {"prefix": "/api"}}]},
        "analysis": {"stepWeight": null, "maxWeight": null, "iterations": 10, "match": [
            {"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}
        ]}
    }));
    let options = Options::default();
    let mut input = input(&canary, &options, Routes::CANARY);
    input.ab_testing = true;
    snapshot!(render(&GatewayApi::V1, &input).data["spec"]);
}

#[test]
fn blue_green_mirroring() {
    let canary = gateway_canary(json!({"analysis": {"stepWeight": null, "maxWeight": null,
                                                    "iterations": 5, "mirror": true}}));
    let options = Options::default();
    let input = input(&canary, &options, split(0, true));
    snapshot!(render(&GatewayApi::V1, &input).data["spec"]);
}

fn affinity_canary() -> Canary {
    gateway_canary(json!({
        "service": {"headers": {"response": {"set": {"x-served-by": "podinfo"}}}},
        "analysis": {"sessionAffinity": {
            "cookieName": "flagger-cookie", "primaryCookieName": "flagger-primary",
            "maxAge": 600, "path": "/", "sameSite": "Lax", "secure": true, "partitioned": true
        }}
    }))
}

#[test]
fn session_affinity_pins_cookie_holders() {
    let canary = affinity_canary();
    let options = Options::default();
    let mut input = input(&canary, &options, Routes::canary(20));
    input.canary_cookie = Some("flagger-cookie=abcdefghij");
    input.primary_cookie = Some("flagger-primary=klmnopqrst");
    snapshot!(render(&GatewayApi::V1, &input).data["spec"]);
    // v1beta1 has no primary cookie: the sticky canary rule and the weighted rule.
    let rules = render(&GatewayApi::V1BETA1, &input).data["spec"]["rules"].clone();
    assert_eq!(rules.as_array().unwrap().len(), 2);
    assert!(rules[1]["backendRefs"][0].get("filters").is_none());
}

#[test]
fn session_affinity_expires_the_previous_cookie() {
    let mut canary = affinity_canary();
    canary.status = serde_json::from_value(json!({
        "phase": "Failed", "sessionAffinityCookie": "flagger-cookie=abcdefghij"
    }))
    .unwrap();
    let options = Options::default();
    let input = input(&canary, &options, Routes::PRIMARY);
    snapshot!(render(&GatewayApi::V1, &input).data["spec"]);
}

#[test]
fn invalid_canaries_name_the_field() {
    let cases = [
        (
            json!({"service": {"gatewayRefs": []}}),
            false,
            "spec.service.gatewayRefs",
        ),
        (
            json!({"service": {"match": [{"uri": {"suffix": ".json"}}]}}),
            false,
            "spec.service.match[0].uri",
        ),
        (
            json!({"service": {"match": [{"method": {"prefix": "P"}}]}}),
            false,
            "spec.service.match[0].method",
        ),
        (
            json!({"service": {"match": [{"queryParams": {"q": {"prefix": "a"}}}]}}),
            false,
            "spec.service.match[0].queryParams.q",
        ),
        (
            json!({"analysis": {"match": [{"headers": {"x": {"suffix": "a"}}}]}}),
            true,
            "spec.analysis.match[0].headers.x",
        ),
        (json!({}), true, "spec.analysis.match"),
        (
            json!({"service": {"corsPolicy": {"maxAge": "1d"}}}),
            false,
            "spec.service.corsPolicy.maxAge",
        ),
    ];
    assert_names_field(&GatewayApi::V1, gateway_canary, &cases);
}

#[test]
fn read_waits_for_every_parent_to_accept_the_current_generation() {
    let canary = gateway_canary(json!({}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(30));
    let route = render(&GatewayApi::V1, &input);
    let router = GatewayApi::V1;
    assert_eq!(router.read(&input, &Live::new()).unwrap(), None);
    assert_eq!(
        router
            .read(&input, &live(route.clone(), 3, "True", 3))
            .unwrap(),
        Some(Routes::canary(30))
    );
    let err = router
        .read(&input, &live(route.clone(), 3, "True", 2))
        .unwrap_err();
    assert!(
        err.contains("Gateway gateways/public") && err.contains("generation 3"),
        "{err}"
    );
    let err = router
        .read(&input, &live(route.clone(), 3, "False", 3))
        .unwrap_err();
    assert!(
        err.contains("Gateway gateways/public") && err.contains("NotAllowedByListeners"),
        "{err}"
    );
    // Another parent's status says nothing about ours.
    let mut other = live(route, 3, "False", 3);
    for r in other.values_mut() {
        r.data["status"]["parents"][0]["parentRef"]["name"] = json!("internal");
    }
    assert_eq!(
        router.read(&input, &other).unwrap(),
        Some(Routes::canary(30))
    );
}

#[test]
fn read_a_route_without_weights_uses_the_default_weight() {
    let canary = gateway_canary(json!({}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(30));
    let mut route = render(&GatewayApi::V1, &input);
    for b in route.data["spec"]["rules"][0]["backendRefs"]
        .as_array_mut()
        .unwrap()
    {
        b.as_object_mut().unwrap().remove("weight");
    }
    let read = GatewayApi::V1
        .read(&input, &live(route, 1, "True", 1))
        .unwrap();
    assert_eq!(
        read,
        Some(Routes {
            primary: 1,
            canary: 1,
            mirrored: false
        })
    );
}

#[test]
fn for_provider_gives_both_versions() {
    for provider in [Provider::GatewayApiV1, Provider::GatewayApiV1beta1] {
        let router = crate::controller::router::for_provider(provider).unwrap();
        assert_eq!(router.provider(), provider);
    }
}

proptest! {
    #[test]
    fn read_gives_back_the_rendered_split(
        weight in 0u32..=100,
        mirrored: bool,
        ab_testing: bool,
        affinity: bool,
        v1beta1: bool,
    ) {
        let mut patch = json!({"analysis": {"match": [{"headers": {"x": {"exact": "1"}}}]},
                               "service": {"headers": {"response": {"add": {"x": "1"}}}}});
        if affinity {
            patch["analysis"]["sessionAffinity"] = json!({"cookieName": "c", "primaryCookieName": "p"});
        }
        let canary = gateway_canary(patch);
        let options = Options::default();
        let routes = split(weight, mirrored);
        let mut input = input(&canary, &options, routes);
        input.ab_testing = ab_testing;
        input.canary_cookie = Some("c=0123456789");
        input.primary_cookie = Some("p=9876543210");
        let router = if v1beta1 { GatewayApi::V1BETA1 } else { GatewayApi::V1 };
        let live = live(render(&router, &input), 1, "True", 1);
        prop_assert_eq!(router.read(&input, &live).unwrap(), Some(routes));
    }
}
