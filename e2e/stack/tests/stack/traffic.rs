//! The traffic world's split follows each provider's routing objects (within 5 % over 10 s
//! of the world's manual clock), and never reaches workloads that are not ready.

use serin_stack::testing as common;

use common::*;
use serde_json::json;
use serin_stack::{Scenario, Stack, StackConfig, WorkloadStats};

/// A stack of `scenario` (on the world's manual clock, pods ready at once) with the
/// [`podinfo`] layout, `canary_image` as the canary.
async fn start(scenario: &str, canary_image: &str) -> (Stack, kube::Client) {
    let scenario = Scenario::parse(&format!("workloads:\n  readyDelay: 0s\n{scenario}")).unwrap();
    let stack = Stack::start(StackConfig {
        scenario,
        manual_traffic_clock: true,
        ..StackConfig::default()
    })
    .await
    .unwrap();
    let c = client(&stack);
    podinfo(&c, "podinfo:6.0.0", canary_image).await;
    (stack, c)
}

/// The primary and the canary, in `run_10s`'s answer.
const SPLIT: [&str; 2] = ["podinfo-primary", "podinfo"];

/// Runs the world for 10 s after re-reading the routing; returns what each workload got.
fn run_10s(stack: &Stack, workloads: &[&str]) -> Vec<WorkloadStats> {
    stack.traffic().reroute();
    let stats = |w: &&str| stack.traffic().stats("default", w);
    let before: Vec<_> = workloads.iter().map(stats).collect();
    step_traffic(stack, 10);
    workloads
        .iter()
        .map(stats)
        .zip(before)
        .map(|(a, b)| WorkloadStats {
            requests: a.requests - b.requests,
            errors: a.errors - b.errors,
            mirrored: a.mirrored - b.mirrored,
        })
        .collect()
}

const LOAD: &str = "  services:\n    - name: podinfo\n      rate: 20\n";

#[tokio::test]
async fn kubernetes_provider_follows_service_selectors() {
    // Defaults: no `services`, so the apex gets 20 requests/s and, with plain Services, the
    // canary Service too (what Flagger's load tester does for blue/green).
    let (stack, c) = start("", "podinfo:6.0.1-faulty").await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 200.0, "primary via the apex");
    assert_near(got[1].requests, 200.0, "canary via podinfo-canary");
    assert_near(got[1].errors, 60.0, "faulty canary fails 30 %");
    assert_eq!(got[0].errors, 0.0);

    // Switch the apex selector to the canary (a blue/green promotion): the apex's traffic
    // follows.
    replace(&c, service("podinfo", "podinfo")).await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 0.0, "primary after the switch");
    assert_near(got[1].requests, 400.0, "canary after the switch");
    stack.shutdown().await;
}

#[tokio::test]
async fn not_ready_workloads_get_nothing() {
    let (stack, c) = start(&format!("traffic:\n{LOAD}"), "podinfo:6.0.1").await;
    // The apex now selects a Deployment whose image never becomes ready.
    create(&c, deployment("podinfo-next", "podinfo:broken", 1)).await;
    replace(&c, service("podinfo", "podinfo-next")).await;
    let unrouted = stack.traffic().unrouted();
    let got = run_10s(&stack, &["podinfo-next", "podinfo-primary"]);
    assert_eq!(got[0].requests, 0.0, "a never-ready workload got traffic");
    assert_eq!(got[1].requests, 0.0);
    assert_near(
        stack.traffic().unrouted() - unrouted,
        200.0,
        "unserved requests",
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn istio_virtual_service_weights_match_and_mirror() {
    let (stack, c) = start(&format!(
        "traffic:\n  provider: istio\n{LOAD}      abTesting:\n        fraction: 0.25\n        headers: {{x-canary: insider}}\n"
    ), "podinfo:6.0.1").await;
    // No VirtualService yet: everything goes to the apex's selector.
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 200.0, "primary without a VirtualService");
    assert_eq!(got[1].requests, 0.0);

    virtual_service_crd(&c).await;
    let vs = |http: serde_json::Value| {
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": "default"},
            "spec": {"hosts": ["podinfo"], "gateways": ["mesh"], "http": http}})
    };
    let route = |p: i64, c: i64| {
        json!([{"destination": {"host": "podinfo-primary"}, "weight": p},
               {"destination": {"host": "podinfo-canary"}, "weight": c}])
    };
    create(&c, vs(json!([{"route": route(70, 30)}]))).await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 140.0, "primary at weight 70");
    assert_near(got[1].requests, 60.0, "canary at weight 30");

    // A/B: the header route sends the 25 % carrying `x-canary: insider` to the canary.
    replace(
        &c,
        vs(json!([
            {"match": [{"headers": {"x-canary": {"exact": "insider"}}}], "route": route(0, 100)},
            {"route": route(100, 0)}
        ])),
    )
    .await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 150.0, "primary in the A/B test");
    assert_near(got[1].requests, 50.0, "canary gets the header's 25 %");

    // Mirroring: all traffic to the primary, a 50 % shadow copy to the canary.
    replace(
        &c,
        vs(
            json!([{"route": route(100, 0), "mirror": {"host": "podinfo-canary"},
            "mirrorPercentage": {"value": 50.0}}]),
        ),
    )
    .await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 200.0, "primary while mirroring");
    assert_near(got[1].requests, 100.0, "mirrored copies");
    assert_near(got[1].mirrored, 100.0, "counted as mirrored");
    stack.shutdown().await;
}

#[tokio::test]
async fn gateway_api_http_route_weights_and_matches() {
    let (stack, c) = start(&format!(
        "traffic:\n  provider: gatewayapi:v1\n{LOAD}      abTesting:\n        fraction: 0.1\n        cookies: {{canary: always}}\n"
    ), "podinfo:6.0.1").await;
    crd(
        &c,
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
    )
    .await;
    let backends = |p: i64, c: i64| {
        json!([{"kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": p},
               {"kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": c}])
    };
    create(
        &c,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gateway", "namespace": "istio-ingress"}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": backends(80, 20)}]}}),
    )
    .await;
    let got = run_10s(&stack, &SPLIT);
    // Accepted by the emulated gateway controller, at the route's generation.
    let routes: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        c.clone(),
        "default",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        ),
    );
    let route = serde_json::to_value(routes.get("podinfo").await.unwrap()).unwrap();
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["parentRef"]["name"], "gateway", "{route}");
    assert_eq!(parent["conditions"][0]["type"], "Accepted");
    assert_eq!(parent["conditions"][0]["status"], "True");
    assert_eq!(
        parent["conditions"][0]["observedGeneration"],
        route["metadata"]["generation"]
    );
    assert_near(got[0].requests, 160.0, "primary at weight 80");
    assert_near(got[1].requests, 40.0, "canary at weight 20");

    // The more specific rule (a Cookie header match) wins whatever its position.
    replace(
        &c,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": "default"},
        "spec": {"rules": [
            {"backendRefs": backends(100, 0)},
            {"matches": [{"headers": [{"type": "RegularExpression", "name": "cookie",
                "value": "^(.*?;)?(canary=always)(;.*)?$"}]}], "backendRefs": backends(0, 100)}
        ]}}),
    )
    .await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 180.0, "primary without the cookie");
    assert_near(got[1].requests, 20.0, "canary gets the cookie's 10 %");
    stack.shutdown().await;
}

#[tokio::test]
async fn smi_traffic_split_backends() {
    let (stack, c) = start(
        &format!("traffic:\n  provider: linkerd\n{LOAD}"),
        "podinfo:6.0.1",
    )
    .await;
    // v1alpha1 weights are quantities, as Flagger writes them for Linkerd.
    podinfo_split_by_smi(&c, "400m", "600m").await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 120.0, "primary at 60 %");
    assert_near(got[1].requests, 80.0, "canary at 40 %");
    stack.shutdown().await;
}

#[tokio::test]
async fn nginx_canary_ingress_annotations() {
    let (stack, c) = start(&format!(
        "traffic:\n  provider: nginx\n{LOAD}      abTesting:\n        fraction: 0.2\n        headers: {{x-canary: insider}}\n        cookies: {{canary: always}}\n"
    ), "podinfo:6.0.1").await;
    create(&c, ingress("podinfo", "podinfo", json!({}))).await;
    create(&c, canary_ingress(&[("canary-weight", "35")])).await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 130.0, "primary at 65 %");
    assert_near(got[1].requests, 70.0, "canary at weight 35");

    // A/B by header: only the 20 % with the header reach the canary; the weight is ignored
    // for them but still applies to the others, as ingress-nginx does.
    let by_header = [
        ("canary-weight", "0"),
        ("canary-by-header", "x-canary"),
        ("canary-by-header-value", "insider"),
    ];
    replace(&c, canary_ingress(&by_header)).await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[0].requests, 160.0, "primary without the header");
    assert_near(got[1].requests, 40.0, "canary by header");

    // A/B by cookie (Flagger's `cookie` match): the cookie's value must be `always`.
    let by_cookie = |name| [("canary-weight", "0"), ("canary-by-cookie", name)];
    replace(&c, canary_ingress(&by_cookie("canary"))).await;
    let got = run_10s(&stack, &SPLIT);
    assert_near(got[1].requests, 40.0, "canary by cookie");
    replace(&c, canary_ingress(&by_cookie("other"))).await;
    let got = run_10s(&stack, &SPLIT);
    assert_eq!(
        got[1].requests, 0.0,
        "a cookie nobody sends routes nothing to the canary"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn admin_reports_the_split_and_exports_mesh_metrics() {
    let (stack, c) = start(
        &format!("traffic:\n  provider: istio\n{LOAD}"),
        "podinfo:6.0.1-faulty",
    )
    .await;
    replace(&c, service("podinfo", "podinfo")).await;
    run_10s(&stack, &[]);
    let admin = stack.admin_url().unwrap();
    let (code, _, body) = http("GET", &format!("{admin}/traffic"), &[], "").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["provider"], "istio");
    assert_eq!(v["workloads"][0]["workload"], "podinfo");
    assert_eq!(v["workloads"][0]["ratePerSecond"], 20.0);
    let (code, _, metrics) = http("GET", &format!("{admin}/traffic/metrics"), &[], "").await;
    assert_eq!(code, 200);
    for line in [
        "istio_requests_total{reporter=\"destination\",source_workload=\"unknown\",destination_workload=\"podinfo\",destination_workload_namespace=\"default\",destination_service=\"podinfo.default.svc.cluster.local\",destination_service_name=\"podinfo\",destination_service_namespace=\"default\",request_protocol=\"http\",response_code=\"500\"} 60",
        "http_request_duration_seconds_bucket{kubernetes_namespace=\"default\",kubernetes_pod_name=\"podinfo-",
        "istio_request_duration_milliseconds_bucket{reporter=\"destination\"",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    // Only the configured mesh's families: no Linkerd series under Istio, and no NGINX
    // series for requests that came through no Ingress.
    assert!(!metrics.contains("response_total{"));
    assert!(!metrics.contains("nginx_ingress_controller_requests{"));
    stack.shutdown().await;
}
