//! Routing through providers other than `kubernetes`: the routing objects serin writes on
//! the emulator as a release moves traffic, read back with a plain client.

use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use serin_core::Phase;

use crate::harness::{ControlPlane, World, WorldConfig, canary, deployment, wait_until, world};

use serin_testkit::LONG;

fn ingresses(world: &World) -> Api<Ingress> {
    Api::namespaced(world.client.clone(), world.ns())
}

/// The user's Ingress for `podinfo` and a Canary routed through it by `nginx`, progressive
/// (`stepWeight`) when `step` is set, else Blue/Green with 2 iterations.
async fn nginx_world(cp: ControlPlane, step: Option<u32>) -> World {
    let world = world(cp).await;
    world
        .apply(
            &ingresses(&world),
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "podinfo"},
                "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}
                ]}}]}
            }),
        )
        .await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["provider"] = json!("nginx");
    c["spec"]["ingressRef"] =
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"});
    if let Some(step) = step {
        c["spec"]["analysis"] =
            json!({"interval": "1s", "threshold": 2, "stepWeight": step, "maxWeight": 50});
    }
    world.apply(&world.canaries(), c).await;
    world
}

async fn canary_weight(world: &World) -> Option<String> {
    let ingress = ingresses(world).get_opt("podinfo-canary").await.unwrap()?;
    ingress
        .metadata
        .annotations?
        .get("nginx.ingress.kubernetes.io/canary-weight")
        .cloned()
}

/// With its Ingress present, an `nginx` Canary initializes behind a canary Ingress that
/// serin owns, at weight 0.
async fn nginx_initializes_behind_a_canary_ingress(cp: ControlPlane) {
    let world = nginx_world(cp, None).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    let canary_ingress = ingresses(&world).get("podinfo-canary").await.unwrap();
    let annotations = canary_ingress.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight"],
        "0"
    );
    assert_eq!(
        canary_ingress.metadata.owner_references.unwrap_or_default()[0].kind,
        "Canary"
    );
    let backend = canary_ingress.spec.unwrap().rules.unwrap()[0]
        .http
        .as_ref()
        .unwrap()
        .paths[0]
        .backend
        .clone();
    assert_eq!(backend.service.unwrap().name, "podinfo-canary");
    // The user's Ingress is left as it was.
    let user = ingresses(&world).get("podinfo").await.unwrap();
    assert!(user.metadata.owner_references.is_none());
}

/// A progressive release moves the canary Ingress's weight up, then back to 0 on promotion.
async fn nginx_canary_weight_follows_the_release(cp: ControlPlane) {
    let world = nginx_world(cp, Some(25)).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    wait_until(LONG, "canary-weight 50", || async {
        canary_weight(&world).await.as_deref() == Some("50")
    })
    .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(canary_weight(&world).await.as_deref(), Some("0"));
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
}

/// A target deleted mid-release leaves the canary side of the split with no pods: all
/// traffic goes back to the primary at once, and the Canary says so.
async fn a_target_deleted_mid_release_routes_everything_to_the_primary(cp: ControlPlane) {
    let world = nginx_world(cp, Some(5)).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    wait_until(LONG, "canary-weight above 0", || async {
        canary_weight(&world)
            .await
            .is_some_and(|w| w.parse::<u32>().is_ok_and(|w| w > 0))
    })
    .await;
    // Held mid-release, so the split is still on the canary when the target goes.
    world
        .merge(
            &world.canaries(),
            "podinfo",
            json!({"spec": {"suspend": true}}),
        )
        .await;
    world
        .deployments()
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    wait_until(LONG, "canary-weight 0", || async {
        canary_weight(&world).await.as_deref() == Some("0")
    })
    .await;
    world
        .wait_event(
            "podinfo",
            &format!(
                "podinfo.{} not found: routed all traffic to podinfo-primary",
                world.ns()
            ),
            LONG,
        )
        .await;
    assert_eq!(world.ready_replicas("podinfo-primary").await, 1);
}

/// A/B testing: during the iterations the canary Ingress routes by header; after promotion
/// the header annotations are gone again (server-side apply drops what serin stops writing).
async fn nginx_ab_testing_routes_by_header_then_resets(cp: ControlPlane) {
    let world = nginx_world(cp, None).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    let mut ab = world.canary("podinfo").await;
    let analysis = ab.spec.analysis.as_mut().unwrap();
    analysis.iterations = Some(3);
    analysis.r#match = Some(vec![
        serde_json::from_value(json!({"headers": {"x-canary": {"exact": "insider"}}})).unwrap(),
    ]);
    ab.metadata.managed_fields = None;
    ab.metadata.resource_version = None;
    ab.status = None;
    world
        .apply(&world.canaries(), serde_json::to_value(&ab).unwrap())
        .await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    let header = || async {
        ingresses(&world)
            .get_opt("podinfo-canary")
            .await
            .unwrap()
            .and_then(|i| i.metadata.annotations)
            .and_then(|a| {
                a.get("nginx.ingress.kubernetes.io/canary-by-header-value")
                    .cloned()
            })
    };
    wait_until(LONG, "canary-by-header-value insider", || async {
        header().await.as_deref() == Some("insider")
    })
    .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(header().await, None);
    assert_eq!(canary_weight(&world).await.as_deref(), Some("0"));
}

/// `linkerd`: the TrafficSplit `<apex>` carries the release's weights as quantities.
async fn linkerd_traffic_split_follows_the_release(cp: ControlPlane) {
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .routing_crds()
        .start()
        .await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["provider"] = json!("linkerd");
    c["spec"]["analysis"] =
        json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50});
    world.apply(&world.canaries(), c).await;
    let splits: Api<DynamicObject> = Api::namespaced_with(
        world.client.clone(),
        world.ns(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "split.smi-spec.io",
            "v1alpha1",
            "TrafficSplit",
        )),
    );
    let canary_weight = || async {
        splits
            .get_opt("podinfo")
            .await
            .unwrap()
            .and_then(|s| s.data.pointer("/spec/backends/0").cloned())
            .unwrap_or(Value::Null)
    };
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    assert_eq!(
        canary_weight().await,
        json!({"service": "podinfo-canary", "weight": "0"})
    );
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    wait_until(LONG, "TrafficSplit canary weight 50", || async {
        canary_weight().await["weight"] == "50"
    })
    .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(canary_weight().await["weight"], "0");
}

/// A CRD a provider's routing objects need: group, version, kind, plural, cluster-scoped.
type Crd = (&'static str, &'static str, &'static str, &'static str, bool);

/// A progressive release (50 %, then promotion) through `provider`, whose routing CRDs are
/// in e2e/crds/routing.yaml and whose user objects (an Ingress, an ApisixRoute...) are `user`; `spec` is merged
/// into the Canary's spec. Returns the routing object `(crd, name)` after the release.
async fn release_through(
    cp: ControlPlane,
    provider: &str,
    user: Vec<Value>,
    spec: Value,
    routing: (Crd, &str),
) -> DynamicObject {
    let ((group, version, kind, _, cluster), name) = routing;
    // The routing CRDs of e2e/crds/routing.yaml: their schemas check the user's objects.
    let mut config = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp).routing_crds();
    if cluster {
        // The routing object is cluster-scoped (Kuma's TrafficRoute `podinfo`): the cluster's.
        config = config.whole_cluster();
    }
    let world = config.start().await;
    for object in user {
        let api_version = object["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = object["kind"].as_str().unwrap();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> =
            Api::namespaced_with(world.client.clone(), world.ns(), &resource);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap();
    }
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["provider"] = json!(provider);
    c["spec"]["analysis"] =
        json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        c["spec"][k] = v;
    }
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let api: Api<DynamicObject> = if cluster {
        Api::all_with(world.client.clone(), &resource)
    } else {
        Api::namespaced_with(world.client.clone(), world.ns(), &resource)
    };
    api.get(name).await.unwrap()
}

const HTTP_PROXY: Crd = ("projectcontour.io", "v1", "HTTPProxy", "httpproxies", false);
const TRAEFIK_SERVICE: Crd = (
    "traefik.io",
    "v1alpha1",
    "TraefikService",
    "traefikservices",
    false,
);

async fn contour_release(cp: ControlPlane) {
    let proxy = release_through(cp, "contour", vec![], json!({}), (HTTP_PROXY, "podinfo")).await;
    assert_eq!(
        proxy.data["spec"]["routes"][0]["services"][0]["weight"],
        100
    );
    assert_eq!(proxy.data["spec"]["routes"][0]["services"][1]["weight"], 0);
}

async fn traefik_release(cp: ControlPlane) {
    let service = release_through(
        cp,
        "traefik",
        vec![],
        json!({}),
        (TRAEFIK_SERVICE, "podinfo"),
    )
    .await;
    // Read in the world's namespace: the primary's is the same.
    let ns = service.metadata.namespace.as_deref().unwrap();
    assert_eq!(
        service.data["spec"]["weighted"]["services"],
        json!([{"name": "podinfo-primary", "namespace": ns, "port": 9898, "weight": 100}])
    );
}

async fn osm_release(cp: ControlPlane) {
    let split: Crd = (
        "split.smi-spec.io",
        "v1alpha2",
        "TrafficSplit",
        "trafficsplits",
        false,
    );
    let ts = release_through(cp, "osm", vec![], json!({}), (split, "podinfo")).await;
    assert_eq!(ts.data["spec"]["backends"][0]["weight"], 0);
}

async fn kuma_release(cp: ControlPlane) {
    let route: Crd = ("kuma.io", "v1alpha1", "TrafficRoute", "trafficroutes", true);
    let tr = release_through(cp, "kuma", vec![], json!({}), (route, "podinfo")).await;
    assert_eq!(tr.data["mesh"], "default");
    assert_eq!(tr.data["spec"]["conf"]["split"][1]["weight"], 0);
}

async fn gloo_release(cp: ControlPlane) {
    let table: Crd = ("gateway.solo.io", "v1", "RouteTable", "routetables", false);
    let rt = release_through(cp, "gloo", vec![], json!({}), (table, "podinfo")).await;
    let destinations = &rt.data["spec"]["routes"][0]["routeAction"]["multi"]["destinations"];
    assert_eq!(destinations[1]["weight"], 0);
}

async fn appmesh_v1beta2_release(cp: ControlPlane) {
    let router: Crd = (
        "appmesh.k8s.aws",
        "v1beta2",
        "VirtualRouter",
        "virtualrouters",
        false,
    );
    let vr = release_through(
        cp,
        "appmesh:v1beta2",
        vec![],
        json!({}),
        (router, "podinfo"),
    )
    .await;
    let targets = &vr.data["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"];
    assert_eq!(targets[0]["weight"], 100);
}

async fn skipper_release(cp: ControlPlane) {
    let ingress: Crd = ("networking.k8s.io", "v1", "Ingress", "ingresses", false);
    let canary_ingress = release_through(
        cp,
        "skipper",
        vec![json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "podinfo"},
            "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}
            ]}}]}
        })],
        json!({"ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                              "name": "podinfo"}}),
        (ingress, "podinfo-canary"),
    )
    .await;
    let annotations = canary_ingress.metadata.annotations.unwrap();
    assert!(annotations["zalando.org/skipper-predicate"].starts_with("False()"));
}

async fn apisix_release(cp: ControlPlane) {
    let route: Crd = (
        "apisix.apache.org",
        "v2",
        "ApisixRoute",
        "apisixroutes",
        false,
    );
    let world_route = json!({
        "apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
        "metadata": {"name": "podinfo"},
        "spec": {"http": [{"name": "rule", "match": {"paths": ["/*"]},
                           "backends": [{"serviceName": "podinfo", "servicePort": 9898}]}]}
    });
    let canary_route = release_through(
        cp,
        "apisix",
        vec![world_route],
        json!({"routeRef": {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
                            "name": "podinfo"}}),
        (route, "podinfo-podinfo-canary"),
    )
    .await;
    assert_eq!(
        canary_route.data["spec"]["http"][0]["backends"][1]["weight"],
        0
    );
}

serin_testkit::on_every_control_plane!(virtual_time:
    nginx_initializes_behind_a_canary_ingress,
    nginx_canary_weight_follows_the_release,
    a_target_deleted_mid_release_routes_everything_to_the_primary,
    nginx_ab_testing_routes_by_header_then_resets,
    linkerd_traffic_split_follows_the_release,
    contour_release,
    traefik_release,
    osm_release,
    kuma_release,
    gloo_release,
    appmesh_v1beta2_release,
    skipper_release,
    apisix_release,
);
