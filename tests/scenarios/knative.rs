//! Knative Service targets: releases move traffic between revisions on the Knative Service
//! itself; a promotion moves the `flagger.app/primary-revision` annotation.

use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use serin_core::Phase;

use crate::harness::{ControlPlane, World, WorldConfig, wait_until};

use serin_testkit::LONG;
const PRIMARY_REVISION: &str = "flagger.app/primary-revision";

fn knative_services(world: &World) -> Api<DynamicObject> {
    world.dynamic("serving.knative.dev/v1", "Service")
}

fn knative_service(image: &str) -> Value {
    json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "podinfo"},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}}
    })
}

/// `(primary revision, the split as (revision or "latest", percent))` on the Knative Service.
async fn traffic(world: &World) -> (Option<String>, Vec<(String, i64)>) {
    let service = knative_services(world).get("podinfo").await.unwrap();
    let split = service
        .data
        .pointer("/spec/traffic")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let to = match t["latestRevision"] == true {
                true => "latest".to_string(),
                false => t["revisionName"].as_str().unwrap_or_default().to_string(),
            };
            (to, t["percent"].as_i64().unwrap_or(-1))
        })
        .collect();
    (service.annotations().get(PRIMARY_REVISION).cloned(), split)
}

async fn wait_traffic(world: &World, primary: &str, split: &[(&str, i64)]) {
    let want: Vec<(String, i64)> = split.iter().map(|(r, p)| (r.to_string(), *p)).collect();
    wait_until(
        LONG,
        &format!("{primary} primary, traffic {want:?}"),
        || async { traffic(world).await == (Some(primary.to_string()), want.clone()) },
    )
    .await;
}

async fn set_image(world: &World, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": image}]}}}});
    world
        .merge(&knative_services(world), "podinfo", patch)
        .await;
}

async fn a_knative_service_is_released_between_revisions(cp: ControlPlane) {
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .knative()
        .mesh_provider("knative")
        .start()
        .await;
    world.create(knative_service("podinfo:6.0.0")).await;
    world
        .apply(
            &world.canaries(),
            serin_testkit::canary("podinfo")
                .provider("knative")
                .spec(
                    "targetRef",
                    json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                           "name": "podinfo"}),
                )
                .without("service")
                .deadline(10)
                .analysis(json!({"interval": "1s", "threshold": 2, "stepWeight": 50,
                                 "maxWeight": 50}))
                .build(),
        )
        .await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    wait_traffic(
        &world,
        "podinfo-00001",
        &[("latest", 0), ("podinfo-00001", 100)],
    )
    .await;

    // A new template is a new revision: it gets half the traffic, then is promoted.
    set_image(&world, "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    wait_traffic(
        &world,
        "podinfo-00001",
        &[("latest", 50), ("podinfo-00001", 50)],
    )
    .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    wait_traffic(
        &world,
        "podinfo-00002",
        &[("latest", 0), ("podinfo-00002", 100)],
    )
    .await;
    let ns = world.ns();
    assert!(
        world
            .has_event(
                "podinfo",
                &format!("New revision detected! Scaling up podinfo.{ns}")
            )
            .await,
        "{:?}",
        world.events("podinfo").await
    );

    // A revision that never becomes ready is rolled back at the progress deadline; the
    // promoted revision keeps all the traffic.
    set_image(&world, "podinfo:broken").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    world.wait_phase("podinfo", Phase::Failed, LONG).await;
    wait_traffic(
        &world,
        "podinfo-00002",
        &[("latest", 0), ("podinfo-00002", 100)],
    )
    .await;
    let latest = knative_services(&world).get("podinfo").await.unwrap();
    assert_eq!(
        latest.data["status"]["latestCreatedRevisionName"],
        "podinfo-00003"
    );
}

serin_testkit::on_every_control_plane!(virtual_time: a_knative_service_is_released_between_revisions);
