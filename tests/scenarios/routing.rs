//! Routing through providers other than `kubernetes`: the routing objects serin writes on
//! the emulator as a release moves traffic, read back with a plain client.

use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use serin_core::Phase;

use crate::harness::{NS, World, canary, deployment, wait_until};

const LONG: Duration = Duration::from_secs(30);

fn ingresses(world: &World) -> Api<Ingress> {
    Api::namespaced(world.client.clone(), NS)
}

/// The user's Ingress for `podinfo` and a Canary routed through it by `nginx`, progressive
/// (`stepWeight`) when `step` is set, else Blue/Green with 2 iterations.
async fn nginx_world(step: Option<u32>) -> World {
    let world = World::start().await;
    world
        .apply(
            &ingresses(&world),
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "podinfo", "namespace": NS},
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
    let mut c = canary("podinfo", 2);
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
#[tokio::test]
async fn nginx_initializes_behind_a_canary_ingress() {
    let world = nginx_world(None).await;
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
#[tokio::test]
async fn nginx_canary_weight_follows_the_release() {
    let world = nginx_world(Some(25)).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "podinfo:6.0.1").await;
    wait_until(LONG, "canary-weight 50", || async {
        canary_weight(&world).await.as_deref() == Some("50")
    })
    .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(canary_weight(&world).await.as_deref(), Some("0"));
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
}

/// A/B testing: during the iterations the canary Ingress routes by header; after promotion
/// the header annotations are gone again (server-side apply drops what serin stops writing).
#[tokio::test]
async fn nginx_ab_testing_routes_by_header_then_resets() {
    let world = nginx_world(None).await;
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
    world.set_image("podinfo", "podinfo:6.0.1").await;
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
#[tokio::test]
async fn linkerd_traffic_split_follows_the_release() {
    let world = World::start().await;
    register_crd(
        &world,
        (
            "split.smi-spec.io",
            "v1alpha1",
            "TrafficSplit",
            "trafficsplits",
            false,
        ),
    )
    .await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let mut c = canary("podinfo", 2);
    c["spec"]["provider"] = json!("linkerd");
    c["spec"]["analysis"] =
        json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50});
    world.apply(&world.canaries(), c).await;
    let splits: Api<DynamicObject> = Api::namespaced_with(
        world.client.clone(),
        NS,
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
    world.set_image("podinfo", "podinfo:6.0.1").await;
    wait_until(LONG, "TrafficSplit canary weight 50", || async {
        canary_weight().await["weight"] == "50"
    })
    .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(canary_weight().await["weight"], "0");
}

/// A CRD a provider's routing objects need: group, version, kind, plural, cluster-scoped.
type Crd = (&'static str, &'static str, &'static str, &'static str, bool);

/// Registers a CRD that keeps any field (the emulator validates against it).
async fn register_crd(world: &World, (group, version, kind, plural, cluster): Crd) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": if cluster { "Cluster" } else { "Namespaced" },
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object",
                              "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(world.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
}

/// A progressive release (50 %, then promotion) through `provider`, whose routing CRDs are
/// `crds` and whose user objects (an Ingress, an ApisixRoute...) are `user`; `spec` is merged
/// into the Canary's spec. Returns the routing object `(crd, name)` after the release.
async fn release_through(
    provider: &str,
    crds: &[Crd],
    user: Vec<Value>,
    spec: Value,
    routing: (Crd, &str),
) -> DynamicObject {
    let world = World::start().await;
    for crd in crds {
        register_crd(&world, *crd).await;
    }
    for object in user {
        let api_version = object["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = object["kind"].as_str().unwrap();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(world.client.clone(), NS, &resource);
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
    let mut c = canary("podinfo", 2);
    c["spec"]["provider"] = json!(provider);
    c["spec"]["analysis"] =
        json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        c["spec"][k] = v;
    }
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    let ((group, version, kind, _, cluster), name) = routing;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let api: Api<DynamicObject> = if cluster {
        Api::all_with(world.client.clone(), &resource)
    } else {
        Api::namespaced_with(world.client.clone(), NS, &resource)
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

#[tokio::test]
async fn contour_release() {
    let proxy = release_through(
        "contour",
        &[HTTP_PROXY],
        vec![],
        json!({}),
        (HTTP_PROXY, "podinfo"),
    )
    .await;
    assert_eq!(
        proxy.data["spec"]["routes"][0]["services"][0]["weight"],
        100
    );
    assert_eq!(proxy.data["spec"]["routes"][0]["services"][1]["weight"], 0);
}

#[tokio::test]
async fn traefik_release() {
    let service = release_through(
        "traefik",
        &[TRAEFIK_SERVICE],
        vec![],
        json!({}),
        (TRAEFIK_SERVICE, "podinfo"),
    )
    .await;
    assert_eq!(
        service.data["spec"]["weighted"]["services"],
        json!([{"name": "podinfo-primary", "namespace": NS, "port": 9898, "weight": 100}])
    );
}

#[tokio::test]
async fn osm_release() {
    let split: Crd = (
        "split.smi-spec.io",
        "v1alpha2",
        "TrafficSplit",
        "trafficsplits",
        false,
    );
    let ts = release_through("osm", &[split], vec![], json!({}), (split, "podinfo")).await;
    assert_eq!(ts.data["spec"]["backends"][0]["weight"], 0);
}

#[tokio::test]
async fn kuma_release() {
    let route: Crd = ("kuma.io", "v1alpha1", "TrafficRoute", "trafficroutes", true);
    let tr = release_through("kuma", &[route], vec![], json!({}), (route, "podinfo")).await;
    assert_eq!(tr.data["mesh"], "default");
    assert_eq!(tr.data["spec"]["conf"]["split"][1]["weight"], 0);
}

#[tokio::test]
async fn gloo_release() {
    let upstream: Crd = ("gloo.solo.io", "v1", "Upstream", "upstreams", false);
    let table: Crd = ("gateway.solo.io", "v1", "RouteTable", "routetables", false);
    let rt = release_through(
        "gloo",
        &[upstream, table],
        vec![],
        json!({}),
        (table, "podinfo"),
    )
    .await;
    let destinations = &rt.data["spec"]["routes"][0]["routeAction"]["multi"]["destinations"];
    assert_eq!(destinations[1]["weight"], 0);
}

#[tokio::test]
async fn appmesh_v1beta2_release() {
    let node: Crd = (
        "appmesh.k8s.aws",
        "v1beta2",
        "VirtualNode",
        "virtualnodes",
        false,
    );
    let router: Crd = (
        "appmesh.k8s.aws",
        "v1beta2",
        "VirtualRouter",
        "virtualrouters",
        false,
    );
    let service: Crd = (
        "appmesh.k8s.aws",
        "v1beta2",
        "VirtualService",
        "virtualservices",
        false,
    );
    let vr = release_through(
        "appmesh:v1beta2",
        &[node, router, service],
        vec![],
        json!({}),
        (router, "podinfo"),
    )
    .await;
    let targets = &vr.data["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"];
    assert_eq!(targets[0]["weight"], 100);
}

#[tokio::test]
async fn skipper_release() {
    let ingress: Crd = ("networking.k8s.io", "v1", "Ingress", "ingresses", false);
    let canary_ingress = release_through(
        "skipper",
        &[],
        vec![json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "podinfo", "namespace": NS},
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

#[tokio::test]
async fn apisix_release() {
    let route: Crd = (
        "apisix.apache.org",
        "v2",
        "ApisixRoute",
        "apisixroutes",
        false,
    );
    let world_route = json!({
        "apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {"http": [{"name": "rule", "match": {"paths": ["/*"]},
                           "backends": [{"serviceName": "podinfo", "servicePort": 9898}]}]}
    });
    let canary_route = release_through(
        "apisix",
        &[route],
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
