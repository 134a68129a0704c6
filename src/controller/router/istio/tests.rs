use proptest::prelude::*;
use serde_json::json;
use serin_core::Routes;

use super::*;
use crate::api::Canary;
use crate::controller::router::Options;
use crate::controller::router::fixture::live;
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

fn render(input: &Input<'_>) -> Vec<DynamicObject> {
    Istio.render(input, &Live::new()).unwrap()
}

fn virtual_service(objects: &[DynamicObject]) -> &DynamicObject {
    objects
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "VirtualService")
        .unwrap()
}

#[test]
fn objects_are_the_destination_rules_and_the_virtual_service() {
    let canary = canary(json!({}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::PRIMARY);
    let ids: Vec<String> = Istio.objects(&input).iter().map(ObjectKey::id).collect();
    assert_eq!(
        ids,
        [
            "DestinationRule/podinfo-primary",
            "DestinationRule/podinfo-canary",
            "VirtualService/podinfo"
        ]
    );
    let rendered: Vec<String> = render(&input)
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o.types.as_ref().unwrap().kind,
                o.metadata.name.clone().unwrap()
            )
        })
        .collect();
    assert_eq!(rendered, ids);
}

#[test]
fn canary_weights() {
    let canary = canary(json!({}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(30));
    snapshot!(render(&input));
}

#[test]
fn service_options() {
    let canary = canary(json!({"service": {
        "name": "frontend",
        "hosts": ["app.example.com"],
        "gateways": ["public-gateway.istio-system.svc.cluster.local"],
        "portDiscovery": true,
        "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
        "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
        "timeout": "30s",
        "headers": {"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}},
                    "response": {"remove": ["x-internal"]}},
        "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["GET", "POST"],
                       "maxAge": "24h", "allowCredentials": true},
        "rewrite": {"uri": "/", "authority": "backend"},
        "match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2"}, "port": 9898}],
        "apex": {"labels": {"team": "web"}, "annotations": {"owner": "web@example.com"}}
    }}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(10));
    snapshot!(render(&input));
}

#[test]
fn ab_testing_headers_and_cookies() {
    let canary = canary(json!({
        "service": {"match": [{"uri": {"prefix": "/api"}}]},
        "analysis": {"stepWeight": null, "maxWeight": null, "iterations": 10, "match": [
            {"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}
        ]}
    }));
    let options = Options::default();
    let mut input = input(&canary, &options, Routes::CANARY);
    input.ab_testing = true;
    snapshot!(render(&input));
}

#[test]
fn mirroring_with_mirror_weight() {
    let canary = canary(json!({"analysis": {"mirror": true, "mirrorWeight": 50}}));
    let options = Options::default();
    let input = input(&canary, &options, split(0, true));
    snapshot!(virtual_service(&render(&input)).data["spec"]);
}

#[test]
fn mirroring_everything_without_mirror_weight() {
    let canary = canary(json!({"analysis": {"mirror": true}}));
    let options = Options::default();
    let input = input(&canary, &options, split(0, true));
    let spec = virtual_service(&render(&input)).data["spec"].clone();
    assert_eq!(spec["http"][0]["mirror"], json!({"host": "podinfo-canary"}));
    assert!(spec["http"][0].get("mirrorPercentage").is_none());
}

fn affinity_canary() -> Canary {
    canary(json!({
        "service": {"match": [{"uri": {"prefix": "/"}}]},
        "analysis": {"sessionAffinity": {
            "cookieName": "flagger-cookie", "primaryCookieName": "flagger-primary",
            "maxAge": 3600, "domain": "example.com", "httpOnly": true, "path": "/",
            "sameSite": "Strict", "secure": true
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
    snapshot!(virtual_service(&render(&input)).data["spec"]);
}

#[test]
fn session_affinity_without_primary_cookie_name_pins_only_the_canary() {
    let canary = canary(json!({"analysis": {"sessionAffinity": {"cookieName": "flagger-cookie"}}}));
    let options = Options::default();
    let mut input = input(&canary, &options, Routes::canary(20));
    input.canary_cookie = Some("flagger-cookie=abcdefghij");
    input.primary_cookie = Some("flagger-primary=klmnopqrst");
    let spec = virtual_service(&render(&input)).data["spec"].clone();
    let http = spec["http"].as_array().unwrap();
    assert_eq!(http.len(), 2);
    assert_eq!(
        http[1]["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
        json!("flagger-cookie=abcdefghij; Max-Age=86400")
    );
    assert!(http[1]["route"][0].get("headers").is_none());
}

#[test]
fn session_affinity_expires_the_previous_cookie_when_the_run_is_over() {
    let mut canary = affinity_canary();
    canary.status = serde_json::from_value(json!({
        "phase": "Succeeded", "sessionAffinityCookie": "flagger-cookie=abcdefghij"
    }))
    .unwrap();
    let options = Options::default();
    let input = input(&canary, &options, Routes::PRIMARY);
    let vs = virtual_service(&render(&input)).data["spec"].clone();
    snapshot!(vs);
}

#[test]
fn tcp_routes_by_port() {
    let canary = canary(json!({"service": {"appProtocol": "tcp", "match": [{"port": 9898}]}}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(40));
    snapshot!(virtual_service(&render(&input)).data["spec"]);
}

#[test]
fn delegation_has_no_hosts_nor_gateways_and_names_ports() {
    let canary = canary(json!({"service": {"delegation": true, "portDiscovery": true}}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::canary(10));
    snapshot!(virtual_service(&render(&input)).data["spec"]);
}

#[test]
fn invalid_canaries_name_the_field() {
    let cases = [
        (
            json!({"service": {"delegation": true, "hosts": ["app.example.com"]}}),
            false,
            "spec.service.delegation",
        ),
        (
            json!({"service": {"delegation": true, "gateways": ["public"]}}),
            false,
            "spec.service.delegation",
        ),
        (
            json!({"service": {"match": [{"uri": {"suffix": ".json"}}]}}),
            false,
            "spec.service.match[0].uri",
        ),
        (
            json!({"analysis": {"match": [{"headers": {"user-agent": {"suffix": "Firefox"}}}]}}),
            true,
            "spec.analysis.match[0].headers.user-agent",
        ),
        (json!({}), true, "spec.analysis.match"),
    ];
    assert_names_field(&Istio, canary, &cases);
}

#[test]
fn hosts_and_gateways() {
    let options = Options::default();
    // (service patch, hosts, gateways)
    let cases = [
        (json!({}), json!(["podinfo"]), json!(["mesh"])),
        (json!({"hosts": ["*"]}), json!(["*"]), json!(["mesh"])),
        (
            json!({"hosts": ["podinfo", "app.example.com"], "gateways": ["public", "mesh"]}),
            json!(["podinfo", "app.example.com"]),
            json!(["public", "mesh"]),
        ),
    ];
    for (patch, hosts, gateways) in cases {
        let canary = canary(json!({ "service": patch }));
        let input = input(&canary, &options, Routes::PRIMARY);
        let spec = virtual_service(&render(&input)).data["spec"].clone();
        assert_eq!(
            (&spec["hosts"], &spec["gateways"]),
            (&hosts, &gateways),
            "{patch}"
        );
    }
}

#[test]
fn tcp_cannot_mirror() {
    let canary = canary(json!({"service": {"appProtocol": "TCP"}, "analysis": {"mirror": true}}));
    let options = Options::default();
    let input = input(&canary, &options, split(0, true));
    let err = Istio.render(&input, &Live::new()).unwrap_err();
    assert!(err.starts_with("spec.analysis.mirror:"), "{err}");
}

#[test]
fn read_before_the_virtual_service_exists() {
    let canary = canary(json!({}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::PRIMARY);
    assert_eq!(Istio.read(&input, &Live::new()).unwrap(), None);
}

#[test]
fn read_a_virtual_service_serin_did_not_write() {
    let canary = canary(json!({}));
    let options = Options::default();
    let input = input(&canary, &options, Routes::PRIMARY);
    let mut vs = virtual_service(&render(&input)).clone();
    // Someone else's: one route to the apex only.
    vs.data["spec"]["http"] = json!([{"route": [{"destination": {"host": "podinfo"}}]}]);
    let err = Istio.read(&input, &live(vec![vs.clone()])).unwrap_err();
    assert!(err.contains("no weighted route"), "{err}");
    // Someone moved traffic by hand, with fully qualified hosts.
    vs.data["spec"]["http"] = json!([{"route": [
        {"destination": {"host": "podinfo-primary.test.svc.cluster.local"}, "weight": 60},
        {"destination": {"host": "podinfo-canary.test.svc.cluster.local"}, "weight": 40}
    ]}]);
    assert_eq!(
        Istio.read(&input, &live(vec![vs.clone()])).unwrap(),
        Some(Routes::canary(40))
    );
    // All traffic to the canary, the way a person would write it.
    let mut by_hand = vs.clone();
    by_hand.data["spec"]["http"] =
        json!([{"route": [{"destination": {"host": "podinfo-canary"}}]}]);
    assert_eq!(
        Istio.read(&input, &live(vec![by_hand])).unwrap(),
        Some(Routes::CANARY)
    );
    vs.data["spec"]["http"][0]["route"][1]["weight"] = json!("forty");
    let err = Istio.read(&input, &live(vec![vs])).unwrap_err();
    assert!(err.contains("spec.http[0].route[1]"), "{err}");
}

#[test]
fn for_provider_gives_istio() {
    let router = crate::controller::router::for_provider(Provider::Istio).unwrap();
    assert_eq!(router.provider(), Provider::Istio);
}

proptest! {
    #[test]
    fn read_gives_back_the_rendered_split(
        weight in 0u32..=100,
        mirrored: bool,
        ab_testing: bool,
        affinity: bool,
        tcp: bool,
    ) {
        let mut patch = json!({"analysis": {"mirrorWeight": 25, "match": [{"headers": {"x": {"exact": "1"}}}]}});
        if affinity {
            patch["analysis"]["sessionAffinity"] = json!({"cookieName": "c", "primaryCookieName": "p"});
        }
        if tcp {
            patch["service"] = json!({"appProtocol": "tcp"});
        }
        let canary = canary(patch);
        let options = Options::default();
        // TCP routes cannot mirror.
        let routes = split(weight, mirrored && !tcp);
        let mut input = input(&canary, &options, routes);
        input.ab_testing = ab_testing;
        input.canary_cookie = Some("c=0123456789");
        input.primary_cookie = Some("p=9876543210");
        let live = live(render(&input));
        prop_assert_eq!(Istio.read(&input, &live).unwrap(), Some(routes));
    }
}
