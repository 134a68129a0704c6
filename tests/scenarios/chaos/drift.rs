//! Drift mid-release: someone edits the Istio weights and the primary's pod template by
//! hand while a release runs. Each is put back within one analysis interval, with a Warning
//! event, and the release finishes.

use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::json;
use serin_core::Phase;
use serin_testkit::LONG;
use serin_testkit::{
    ControlPlane, Poll, WorldConfig, deployment, virtual_service_weights, wait_until,
};

const INTERVAL: Duration = Duration::from_secs(5);

/// Waits until `done`, at most one interval and a second of slack: how long it took.
async fn put_back<F, Fut>(what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let edited = Poll::new(INTERVAL + Duration::from_secs(1));
    while !done().await {
        if edited.expired() {
            panic!("{what} not put back within {INTERVAL:?}");
        }
        edited.next().await;
    }
    edited.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_edits_mid_release_are_put_back_within_an_interval() {
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator)
        .scenario("workloads:\n  readyDelay: 0s\n")
        .routing_crds()
        .mesh_provider("istio")
        .start()
        .await;
    world
        .apply(&world.deployments(), deployment("podinfo", "podinfo:1", 2))
        .await;
    let canary = serin_testkit::canary("podinfo")
        .provider("istio")
        .analysis(json!({"interval": "5s", "threshold": 2, "stepWeight": 10, "maxWeight": 50}))
        .build();
    world.apply(&world.canaries(), canary).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:2").await;
    wait_until(LONG, "first weight step", || async {
        world
            .canary("podinfo")
            .await
            .status
            .is_some_and(|s| s.canary_weight >= 10)
    })
    .await;

    // The weights: half to the canary, by hand.
    let services: Api<DynamicObject> =
        world.dynamic("networking.istio.io/v1beta1", "VirtualService");
    let mut http = services.get("podinfo").await.unwrap().data["spec"]["http"].clone();
    http[0]["route"][0]["weight"] = json!(50);
    http[0]["route"][1]["weight"] = json!(50);
    let patch = json!({"spec": {"http": http}});
    services
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let took = put_back("the weights", || async {
        let declared = world.canary("podinfo").await.status.unwrap().canary_weight;
        let vs = services.get("podinfo").await.unwrap();
        virtual_service_weights(&vs) == [100 - i64::from(declared), i64::from(declared)]
    })
    .await;
    println!("drift: weights put back after {} ms", took.as_millis());
    world
        .wait_event(
            "podinfo",
            "was changed outside serin (primary 50%, canary 50%)",
            INTERVAL,
        )
        .await;

    // The primary's pod template: an environment variable, by hand.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "podinfo:1", "env": [{"name": "DEBUG", "value": "1"}]}]}}}});
    world
        .merge(&world.deployments(), "podinfo-primary", patch)
        .await;
    let took = put_back("the primary's template", || async {
        let primary = world.deployments().get("podinfo-primary").await.unwrap();
        let container = &primary.spec.unwrap().template.spec.unwrap().containers[0];
        container.env.as_ref().is_none_or(|env| env.is_empty())
    })
    .await;
    println!(
        "drift: primary template put back after {} ms",
        took.as_millis()
    );
    world
        .wait_event(
            "podinfo",
            "was changed outside serin; the promoted template is restored",
            INTERVAL,
        )
        .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
}
