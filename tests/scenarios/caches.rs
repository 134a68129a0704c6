//! What the controller caches: only the namespaces its Canaries need, and all of them once a
//! Canary arrives in a namespace that had none.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace};
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use serde_json::{Value, json};
use serin::api::Canary;
use serin::controller::caches::index::Index;
use serin::controller::caches::namespaces;
use serin_core::Phase;

use crate::harness::{
    ControlPlane, World, WorldConfig, canary, deployment, initialized, wait_until,
};

use serin_testkit::LONG;

async fn namespace(world: &World, name: &str) {
    let api: Api<Namespace> = Api::all(world.client.clone());
    world
        .apply(
            &api,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await;
}

/// `object` moved to `namespace`.
fn within(mut object: Value, namespace: &str) -> Value {
    object["metadata"]["namespace"] = json!(namespace);
    object
}

fn config_map(name: &str, namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": namespace}, "data": {"color": "blue"}})
}

/// The scoped watch itself, in this process: objects of namespaces without Canaries are not
/// cached; a Canary's new namespace is listed (its objects do not change, so no event would
/// bring them) and only then covered.
async fn a_scoped_cache_holds_only_the_namespaces_with_canaries(cp: ControlPlane) {
    // Whole-cluster: it creates namespaces of its own and watches ConfigMaps in all of them.
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .without_controller()
        .whole_cluster()
        .start()
        .await;
    for ns in ["with-canary", "later"] {
        namespace(&world, ns).await;
    }
    let config_maps: Api<ConfigMap> = Api::all(world.client.clone());
    for ns in ["with-canary", "later"] {
        let api: Api<ConfigMap> = Api::namespaced(world.client.clone(), ns);
        world.apply(&api, config_map("settings", ns)).await;
    }
    let index = Arc::new(Index::default());
    let first: Canary =
        serde_json::from_value(within(canary("app").iterations(1).build(), "with-canary")).unwrap();
    index.apply(&watcher::Event::Init);
    index.apply(&watcher::Event::InitApply(first));
    index.apply(&watcher::Event::InitDone);

    let (store, writer) = reflector::store();
    let (coverage, events) =
        namespaces::watch(config_maps, watcher::Config::default(), index.clone());
    let covered = coverage.clone();
    let driven = reflector::reflector(writer, events)
        .inspect_ok(move |e| covered.applied(e))
        .for_each(|_| async {});
    let driver = tokio::spawn(driven);
    let cached = |ns: &str| {
        store
            .get(&ObjectRef::<ConfigMap>::new("settings").within(ns))
            .is_some()
    };
    wait_until(LONG, "the Canary's namespace listed", || async {
        coverage.covers("with-canary")
    })
    .await;
    assert!(cached("with-canary"));
    assert!(!cached("later"), "a namespace without Canaries is cached");
    assert!(!coverage.covers("later"));
    // Objects created or changed there later are not cached either.
    let later: Api<ConfigMap> = Api::namespaced(world.client.clone(), "later");
    world.apply(&later, config_map("other", "later")).await;
    // The barrier: the watch is one cluster-wide stream, so once an object created after
    // that one in a covered namespace is cached, the watch has delivered (and dropped) it.
    let covered: Api<ConfigMap> = Api::namespaced(world.client.clone(), "with-canary");
    world
        .apply(&covered, config_map("barrier", "with-canary"))
        .await;
    wait_until(
        LONG,
        "a later object in the covered namespace cached",
        || async {
            store
                .get(&ObjectRef::new("barrier").within("with-canary"))
                .is_some()
        },
    )
    .await;
    assert!(
        store
            .get(&ObjectRef::new("other").within("later"))
            .is_none()
    );

    let second: Canary =
        serde_json::from_value(within(canary("app").iterations(1).build(), "later")).unwrap();
    index.apply(&watcher::Event::Apply(second));
    wait_until(LONG, "the new namespace listed", || async {
        coverage.covers("later")
    })
    .await;
    assert!(
        cached("later"),
        "covered, yet the existing object is missing"
    );
    assert!(cached("with-canary"), "the first namespace was dropped");
    driver.abort();
}

/// Through the controller: the first Canary of a namespace is initialized from a Deployment
/// and a ConfigMap that existed before it and did not change since.
async fn the_first_canary_of_a_namespace_finds_what_was_there_before_it(cp: ControlPlane) {
    const LATE: &str = "late";
    // Whole-cluster: Canaries in a second namespace, created by the scenario, and a controller
    // watching every namespace.
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .whole_cluster()
        .start()
        .await;
    namespace(&world, LATE).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client.clone(), LATE);
    world
        .apply(&config_maps, config_map("podinfo-config", LATE))
        .await;
    let mut target = within(deployment("podinfo", "podinfo:6.0.0", 1), LATE);
    target["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "podinfo-config"}}]);
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), LATE);
    world.apply(&deployments, target).await;
    // The controller watches (and drops) them while another namespace has the Canaries.
    initialized(&world, "podinfo", 1).await;

    let canaries: Api<Canary> = Api::namespaced(world.client.clone(), LATE);
    world
        .apply(
            &canaries,
            within(canary("podinfo").iterations(1).build(), LATE),
        )
        .await;
    wait_until(LONG, "the new namespace's Canary initialized", || async {
        canaries
            .get("podinfo")
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| s.phase == Phase::Initialized)
    })
    .await;
    // It waited for its namespace to be listed instead of reading the empty cache.
    let events: Api<Event> = Api::namespaced(world.client.clone(), LATE);
    let messages: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert!(
        !messages.iter().any(|m| m.contains("spec.targetRef")),
        "{messages:#?}"
    );
    let copy = config_maps.get("podinfo-config-primary").await.unwrap();
    assert_eq!(copy.data.unwrap()["color"], "blue");
    // The first namespace's Canary is unaffected.
    let first = world.canaries().get("podinfo").await.unwrap();
    assert_eq!(first.status.map(|s| s.phase), Some(Phase::Initialized));
    assert_eq!(first.metadata.namespace.as_deref(), Some(world.ns()));
}

serin_testkit::on_every_control_plane!(virtual_time:
    a_scoped_cache_holds_only_the_namespaces_with_canaries,
    the_first_canary_of_a_namespace_finds_what_was_there_before_it,
);
