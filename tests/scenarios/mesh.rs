//! Releases through a mesh or an ingress: the `serin controller` binary writes the routing
//! objects, the stack's traffic world splits its simulated requests by exactly those objects,
//! the mesh's telemetry goes to a real Prometheus, and the builtin metrics decide.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use serin::api::Canary;
use serin::api::canary::MetricVerdict;
use serin_core::Phase;
use serin_testkit::{ControlPlane, Poll, WorldConfig, deployment, virtual_service_weights};

use serin_testkit::LONG;

/// The kit's world, with this suite's reads of the one Canary, `podinfo`.
struct World(serin_testkit::World);

impl std::ops::Deref for World {
    type Target = serin_testkit::World;
    fn deref(&self) -> &serin_testkit::World {
        &self.0
    }
}

/// The A/B share of the load: requests with `x-canary: insider`.
const AB_FRACTION: f64 = 0.25;

/// A stack whose traffic world follows `provider`'s routing objects (20 requests/s on the
/// apex, a quarter of them with the A/B header), with real Prometheus, the routing CRDs,
/// serin's CRDs, and the controller for that provider.
async fn world(cp: ControlPlane, provider: &str) -> World {
    let world_provider = if provider.starts_with("gatewayapi") {
        "gatewayapi"
    } else {
        provider
    };
    let scenario = format!(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: {world_provider}\n  services:\n    \
         - name: podinfo\n      rate: 20\n      abTesting:\n        fraction: {AB_FRACTION}\n        \
         headers: {{x-canary: insider}}\n"
    );
    World(
        WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
            .scenario(&scenario)
            .prometheus()
            .routing_crds()
            .mesh_provider(provider)
            .start()
            .await,
    )
}

impl World {
    async fn apply<K>(&self, object: Value)
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns());
        api.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap();
    }

    async fn canary(&self) -> Canary {
        self.0.canary("podinfo").await
    }

    async fn fail(&self, why: &str) -> ! {
        self.0.fail("podinfo", why).await
    }

    async fn wait(&self, what: &str, f: impl Fn(&Canary) -> bool) -> Canary {
        self.0.wait_canary("podinfo", what, LONG, f).await
    }

    /// Waits for the second iteration of an A/B test or a blue/green run: the routes the
    /// first iteration set are in the traffic world by then. Iteration 1 is written with
    /// those routes, and the world reads routing objects through a watch and re-routes once
    /// a second, so a measurement started at iteration 1 would include up to a couple of
    /// seconds of the old split on a loaded machine.
    async fn wait_routed_to_the_canary(&self) {
        self.wait("iteration 2", |c| {
            c.status.as_ref().is_some_and(|s| s.iterations >= 2)
        })
        .await;
    }

    async fn wait_phase(&self, phase: Phase) -> Canary {
        self.0.wait_phase("podinfo", phase, LONG).await
    }

    /// The messages of the Canary's events, oldest first.
    async fn events(&self) -> Vec<String> {
        self.0.event_messages("podinfo").await
    }

    /// Waits until `requests` more live requests were answered (by the canary or the
    /// primary): the load, not the clock, measures a window (20 requests/s when the
    /// machine keeps up).
    async fn load_passes(&self, requests: f64) {
        let (c0, p0, _) = self.served();
        let poll = Poll::new(LONG).every(Duration::from_millis(100));
        loop {
            let (c, p, _) = self.served();
            if (c - c0) + (p - p0) >= requests {
                return;
            }
            if poll.expired() {
                self.fail(&format!("{requests} requests not answered within {LONG:?}"))
                    .await;
            }
            poll.next().await;
        }
    }

    /// Requests the target (canary) and the primary received so far (mirrored copies apart).
    fn served(&self) -> (f64, f64, f64) {
        let canary = self.stack.traffic().stats(self.ns(), "podinfo");
        let primary = self.stack.traffic().stats(self.ns(), "podinfo-primary");
        (
            canary.requests - canary.mirrored,
            primary.requests - primary.mirrored,
            canary.mirrored,
        )
    }

    async fn routing_object(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        name: &str,
    ) -> Option<DynamicObject> {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.ns(), &resource);
        api.get_opt(name).await.unwrap()
    }

    async fn image(&self, name: &str) -> String {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), self.ns());
        let d = api.get(name).await.unwrap();
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }
}

/// The builtins, holding (not failing) while the canary's first samples reach Prometheus.
fn builtins() -> Value {
    json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "10s",
         "noDataPolicy": "hold"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "10s",
         "noDataPolicy": "hold"}
    ])
}

/// The kit's Canary for `podinfo` through `provider`, with what that provider needs.
/// The Istio traffic policy of the Istio Canaries (typed in the CRD as Flagger types it).
fn traffic_policy() -> Value {
    json!({"loadBalancer": {"simple": "LEAST_REQUEST"}, "tls": {"mode": "ISTIO_MUTUAL"},
           "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}})
}

fn canary(provider: &str, analysis: Value) -> Value {
    let mut canary = serin_testkit::canary("podinfo")
        .routed_by(provider)
        .analysis(analysis)
        .build();
    if provider == "istio" {
        canary["spec"]["service"]["trafficPolicy"] = traffic_policy();
    }
    canary
}

fn progressive() -> Value {
    json!({"interval": "2s", "threshold": 2, "stepWeight": 25, "maxWeight": 50,
           "metrics": builtins()})
}

async fn initialized(world: &World, provider: &str, analysis: Value) {
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.0", 2))
        .await;
    if provider == "nginx" {
        world.apply::<Ingress>(serin_testkit::apex_ingress()).await;
    }
    world.apply::<Canary>(canary(provider, analysis)).await;
    world.wait_phase(Phase::Initialized).await;
}

/// A progressive release: the canary gets real traffic through the provider's objects at
/// each weight, passes the builtin checks read from Prometheus, and is promoted. Then idle,
/// the Canary costs no API request: its routing objects are read from a watch and not
/// applied again unchanged.
async fn promoted_on_builtin_metrics(cp: ControlPlane, provider: &str) {
    let world = world(cp, provider).await;
    initialized(&world, provider, progressive()).await;
    let (before, _, _) = world.served();
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.1", 2))
        .await;
    world
        .wait("canary weight 25", |c| {
            c.status.as_ref().is_some_and(|s| s.canary_weight >= 25)
        })
        .await;
    let done = world.wait_phase(Phase::Succeeded).await;
    let (after, _, _) = world.served();
    assert!(
        after - before > 20.0,
        "the canary served {} requests during the release",
        after - before
    );
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert!(
        metrics.len() == 2 && metrics.iter().all(|m| m.verdict == MetricVerdict::Pass),
        "{metrics:?}"
    );
    let events = world.events().await;
    let advance = format!("Advance podinfo.{} canary weight 50", world.ns());
    assert!(events.iter().any(|e| e.contains(&advance)), "{events:#?}");
    // All traffic is back on the primary.
    let (c0, p0, _) = world.served();
    // Three seconds of the load.
    world.load_passes(60.0).await;
    let (c1, p1, _) = world.served();
    assert!(
        c1 - c0 < 1.0 && p1 - p0 > 30.0,
        "after promotion: canary {} primary {}",
        c1 - c0,
        p1 - p0
    );
    if provider == "istio" {
        let rules = world.dynamic("networking.istio.io/v1", "DestinationRule");
        for name in ["podinfo-primary", "podinfo-canary"] {
            let rule = rules.get(name).await.unwrap();
            assert_eq!(
                rule.data["spec"]["trafficPolicy"],
                traffic_policy(),
                "{name}"
            );
        }
    }
    world.assert_idle_makes_no_api_requests().await;
}

async fn istio_canary_release_promoted_on_builtin_metrics(cp: ControlPlane) {
    promoted_on_builtin_metrics(cp, "istio").await;
}

async fn gatewayapi_canary_release_promoted_on_builtin_metrics(cp: ControlPlane) {
    promoted_on_builtin_metrics(cp, "gatewayapi:v1").await;
}

async fn istio_faulty_release_rolled_back_on_the_success_rate(cp: ControlPlane) {
    let world = world(cp, "istio").await;
    initialized(&world, "istio", progressive()).await;
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.1-faulty", 2))
        .await;
    world.wait_phase(Phase::Failed).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.0");
    let vs = world
        .routing_object(
            "networking.istio.io",
            "v1beta1",
            "VirtualService",
            "virtualservices",
            "podinfo",
        )
        .await
        .unwrap();
    let route = &vs.data["spec"]["http"][0]["route"];
    let weights: Vec<i64> = route
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["weight"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(
        weights,
        [100, 0],
        "all traffic back to the primary: {route}"
    );
    let events = world.events().await;
    let halt = format!("Halt podinfo.{} advancement success rate ", world.ns());
    assert!(
        events
            .iter()
            .any(|e| e.starts_with(&halt) && e.ends_with("% < 99%")),
        "{events:#?}"
    );
}

/// A/B: only requests with the header reach the canary, for `iterations` checks.
async fn ab_release(cp: ControlPlane, provider: &str) {
    let world = world(cp, provider).await;
    // Enough iterations that the measurement below (80 requests, 4 s of the load) stays
    // inside the A/B test even when the machine is loaded and the test sees iteration 2 late.
    let analysis = json!({"interval": "2s", "threshold": 2, "iterations": 8,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}], "metrics": builtins()});
    initialized(&world, provider, analysis).await;
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.1", 2))
        .await;
    world.wait_routed_to_the_canary().await;
    let (c0, p0, _) = world.served();
    world.load_passes(80.0).await;
    let (c1, p1, _) = world.served();
    let during = world.canary().await.status.map(|s| (s.phase, s.iterations));
    let share = (c1 - c0) / ((c1 - c0) + (p1 - p0));
    assert!(
        (share - AB_FRACTION).abs() < 0.07,
        "canary share {share:.3} during the A/B test (expected the header's {AB_FRACTION}); \
         at the end of the measurement: {during:?}"
    );
    world.wait_phase(Phase::Succeeded).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
}

async fn istio_ab_release_routes_only_matching_requests_to_the_canary(cp: ControlPlane) {
    ab_release(cp, "istio").await;
}

async fn istio_blue_green_with_mirroring(cp: ControlPlane) {
    let world = world(cp, "istio").await;
    // Enough iterations that the measurement below (60 requests, 3 s of the load) stays
    // inside the mirroring even when the machine is loaded and the test sees iteration 2 late.
    let analysis = json!({"interval": "2s", "threshold": 2, "iterations": 8, "mirror": true,
        "mirrorWeight": 100, "metrics": builtins()});
    initialized(&world, "istio", analysis).await;
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.1", 2))
        .await;
    world.wait_routed_to_the_canary().await;
    let (c0, p0, m0) = world.served();
    world.load_passes(60.0).await;
    let (c1, p1, m1) = world.served();
    let during = world.canary().await.status.map(|s| (s.phase, s.iterations));
    assert!(
        m1 - m0 > 20.0,
        "the canary received {} mirrored copies; at the end of the measurement: {during:?}",
        m1 - m0
    );
    assert!(
        c1 - c0 < 1.0,
        "no live request reached the canary while mirroring ({}); at the end of the \
         measurement: {during:?}",
        c1 - c0
    );
    assert!(
        p1 - p0 > 40.0,
        "the primary served the live traffic ({}); at the end of the measurement: {during:?}",
        p1 - p0
    );
    world.wait_phase(Phase::Succeeded).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
}

async fn istio_weights_edited_by_hand_are_put_back_and_reported(cp: ControlPlane) {
    let world = world(cp, "istio").await;
    initialized(&world, "istio", progressive()).await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1beta1", "VirtualService"),
        "virtualservices",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(world.client.clone(), world.ns(), &resource);
    let vs = api.get("podinfo").await.unwrap();
    assert_eq!(virtual_service_weights(&vs), [100, 0]);
    // Someone shifts half the traffic to the (scaled-down) canary by hand.
    let mut http = vs.data["spec"]["http"].clone();
    http[0]["route"][0]["weight"] = json!(50);
    http[0]["route"][1]["weight"] = json!(50);
    api.patch(
        "podinfo",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"http": http}})),
    )
    .await
    .unwrap();
    // Any release step re-declares the routes; a new revision triggers one at once.
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.1", 2))
        .await;
    let poll = Poll::new(LONG).every(Duration::from_millis(200));
    loop {
        let events = world.events().await;
        if events
            .iter()
            .any(|e| e.contains("was changed outside serin (primary 50%, canary 50%)"))
        {
            break;
        }
        if poll.expired() {
            world.fail("no drift event").await;
        }
        poll.next().await;
    }
    let vs = api.get("podinfo").await.unwrap();
    let weights = virtual_service_weights(&vs);
    assert_ne!(weights, [50, 50], "the declared weights are back");
}

async fn istio_revert_on_deletion_restores_a_taken_over_virtual_service(cp: ControlPlane) {
    let world = world(cp, "istio").await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1beta1", "VirtualService"),
        "virtualservices",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(world.client.clone(), world.ns(), &resource);
    let original = json!({"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}, "weight": 100}]}]});
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "podinfo"}, "spec": original}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let mut c = canary("istio", progressive());
    c["spec"]["revertOnDeletion"] = json!(true);
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.0", 2))
        .await;
    world.apply::<Canary>(c).await;
    world.wait_phase(Phase::Initialized).await;
    let taken = api.get("podinfo").await.unwrap();
    assert_eq!(
        taken.data["spec"]["http"][0]["route"][0]["destination"]["host"],
        "podinfo-primary"
    );

    let canaries: Api<Canary> = Api::namespaced(world.client.clone(), world.ns());
    canaries
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    let poll = Poll::new(LONG).every(Duration::from_millis(200));
    while canaries.get_opt("podinfo").await.unwrap().is_some() {
        assert!(!poll.expired(), "Canary not finalized");
        poll.next().await;
    }
    let restored = api.get("podinfo").await.unwrap();
    assert_eq!(
        restored.data["spec"]["http"], original["http"],
        "{:#?}",
        restored.metadata.annotations,
    );
    assert!(
        !restored
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("flagger.kubernetes.io/original-configuration")
    );
}

/// Waits until the primary has received `more` requests beyond what it had.
async fn primary_serves(world: &World, more: f64) {
    let from = world.served().1;
    let poll = Poll::new(LONG).every(Duration::from_millis(100));
    while world.served().1 < from + more {
        if poll.expired() {
            panic!("the primary did not serve {more} more requests",);
        }
        poll.next().await;
    }
}

/// A Canary deleted mid-release whose new version never becomes ready: every request keeps
/// being answered by the primary (none finds no route or no ready endpoint), before,
/// during and after the deletion, and after the garbage collector took what the Canary
/// still owned; the VirtualService serin created is kept, routing to the primary.
async fn istio_deleting_a_canary_whose_target_never_becomes_ready_keeps_serving(cp: ControlPlane) {
    let world = world(cp, "istio").await;
    let mut analysis = progressive();
    analysis["interval"] = json!("1s");
    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.0", 2))
        .await;
    let mut c = canary("istio", analysis);
    c["spec"]["progressDeadlineSeconds"] = json!(6);
    world.apply::<Canary>(c).await;
    world.wait_phase(Phase::Initialized).await;
    // The traffic world re-reads routing once a second: from here on every request is routed.
    primary_serves(&world, 40.0).await;
    let unrouted = world.stack.traffic().unrouted();

    world
        .apply::<Deployment>(deployment("podinfo", "podinfo:6.0.1-broken", 2))
        .await;
    world
        .wait("the release started", |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.last_applied_spec != s.last_promoted_spec)
        })
        .await;
    let canaries: Api<Canary> = Api::namespaced(world.client.clone(), world.ns());
    canaries
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    let poll = Poll::new(LONG).every(Duration::from_millis(200));
    while canaries.get_opt("podinfo").await.unwrap().is_some() {
        assert!(!poll.expired(), "Canary not finalized");
        poll.next().await;
    }
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(world.client.clone(), world.ns());
    while services.get_opt("podinfo-canary").await.unwrap().is_some() {
        assert!(!poll.expired(), "podinfo-canary not garbage collected");
        poll.next().await;
    }
    primary_serves(&world, 40.0).await;

    assert_eq!(
        world.stack.traffic().unrouted(),
        unrouted,
        "requests found no route or no ready endpoint",
    );
    let vs = world
        .routing_object(
            "networking.istio.io",
            "v1beta1",
            "VirtualService",
            "virtualservices",
            "podinfo",
        )
        .await
        .expect("the VirtualService is kept");
    assert!(
        vs.metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty),
        "no longer owned by the Canary"
    );
    assert_eq!(
        virtual_service_weights(&vs),
        [100, 0],
        "{}",
        vs.data["spec"]
    );
    let events = world.events().await;
    let kept = format!("kept podinfo-primary.{} serving", world.ns());
    assert!(events.iter().any(|e| e.contains(&kept)), "{events:#?}");
}

async fn linkerd_canary_release_promoted_on_builtin_metrics(cp: ControlPlane) {
    promoted_on_builtin_metrics(cp, "linkerd").await;
}

async fn nginx_canary_release_promoted_on_builtin_metrics(cp: ControlPlane) {
    promoted_on_builtin_metrics(cp, "nginx").await;
}

async fn nginx_ab_release_routes_only_matching_requests_to_the_canary(cp: ControlPlane) {
    ab_release(cp, "nginx").await;
}

serin_testkit::on_every_control_plane!(
    istio_canary_release_promoted_on_builtin_metrics,
    gatewayapi_canary_release_promoted_on_builtin_metrics,
    istio_faulty_release_rolled_back_on_the_success_rate,
    istio_ab_release_routes_only_matching_requests_to_the_canary,
    istio_blue_green_with_mirroring,
    istio_weights_edited_by_hand_are_put_back_and_reported,
    istio_revert_on_deletion_restores_a_taken_over_virtual_service,
    istio_deleting_a_canary_whose_target_never_becomes_ready_keeps_serving,
    linkerd_canary_release_promoted_on_builtin_metrics,
    nginx_canary_release_promoted_on_builtin_metrics,
    nginx_ab_release_routes_only_matching_requests_to_the_canary,
);
