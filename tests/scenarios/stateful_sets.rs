//! StatefulSets released in place, by their rolling update's partition: a healthy release
//! moves one pod at a time onto the new revision (the highest ordinals first), then all of
//! them at the promotion; a failing one is rolled back with no pod left on the new revision;
//! with a mesh, the step's weight goes to the new revision's pods through `-canary`; a
//! controller killed mid-release finishes it after its restart; a StatefulSet that updates
//! OnDelete is refused with the field. On the real control plane kube-controller-manager's
//! StatefulSet controller decides which pods are updated and the kubelet stand-in serves
//! them; on the emulator the stack plays both.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{Value, json};
use serin::workload::stateful_set::partition;
use serin_core::Phase;
use serin_testkit::{LONG, Receiver, stateful_set, virtual_service_weights};

use crate::harness::{
    ControlPlane, World, WorldConfig, canary, ready_condition, wait_until, world,
};

const REVISION: &str = "controller-revision-hash";

serin_testkit::on_every_control_plane!(
    virtual_time:
    a_healthy_release_moves_one_pod_at_a_time_then_promotes_them_all,
    with_a_mesh_the_weight_goes_to_the_new_revisions_pods,
    a_failing_release_is_rolled_back_with_no_pod_left_on_the_new_revision,
    a_stateful_set_that_updates_on_delete_is_refused_with_the_field,
    ; real_time:
    a_controller_killed_mid_release_finishes_it,
);

/// A Canary of the three-pod StatefulSet `ledger`, stepping a third of the pods at a time
/// (33 % then 66 % of three pods: one pod, then two).
fn ledger_canary() -> Value {
    canary("ledger")
        .analysis(json!({"interval": "1s", "threshold": 2, "stepWeight": 33, "maxWeight": 66}))
        .spec(
            "targetRef",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ledger"}),
        )
        .build()
}

/// The StatefulSet and `manifest`, waited to Initialized: every pod on one revision, the
/// partition over all of them.
async fn initialized_ledger(world: &World, manifest: Value) -> StatefulSet {
    world
        .apply(
            &world.stateful_sets(),
            stateful_set("ledger", "ledger:1.0.0", 3),
        )
        .await;
    world.apply(&world.canaries(), manifest).await;
    world.wait_phase("ledger", Phase::Initialized, LONG).await;
    let s = world.stateful_sets().get("ledger").await.unwrap();
    assert_eq!(partition(&s), 3, "every pod held between releases");
    s
}

fn revisions(s: &StatefulSet) -> (String, String) {
    let status = s.status.clone().unwrap_or_default();
    (
        status.current_revision.unwrap_or_default(),
        status.update_revision.unwrap_or_default(),
    )
}

/// The revision Service `name` selects pods by, if it does.
/// serin's PATCH requests on StatefulSets so far (its own request counter).
async fn partition_patches(world: &World) -> f64 {
    let (_, text) = world.controller_http("/metrics").await;
    serin_testkit::metric_sum(
        &text,
        r#"serin_api_requests_total{method="PATCH",resource="statefulsets"}"#,
    )
}

async fn revision_selected(world: &World, name: &str) -> Option<String> {
    let s = world.services().get(name).await.unwrap();
    s.spec?.selector?.get(REVISION).cloned()
}

/// Waits until every pod of `ledger` runs `revision` and is ready.
async fn all_pods_on(world: &World, revision: &str) {
    wait_until(
        LONG,
        &format!("every ledger pod ready on {revision}"),
        || async {
            let pods = world.stateful_set_pods("ledger").await;
            pods.len() == 3 && pods.values().all(|(r, ready)| r == revision && *ready)
        },
    )
    .await;
}

async fn a_healthy_release_moves_one_pod_at_a_time_then_promotes_them_all(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    let before = initialized_ledger(&world, ledger_canary()).await;
    let (old, _) = revisions(&before);
    all_pods_on(&world, &old).await;
    // The canary Service selects the update revision's pods, the apex every pod.
    assert_eq!(
        revision_selected(&world, "ledger-canary").await,
        Some(old.clone())
    );
    assert_eq!(revision_selected(&world, "ledger").await, None);

    let patches_before = partition_patches(&world).await;
    world
        .set_stateful_set_image("ledger", "app", "ledger:1.1.0")
        .await;
    // Each step's partition, and how many pods ran the new revision then.
    let mut partitions = BTreeSet::new();
    let mut most_updated_before_promotion = 0;
    let poll = serin_testkit::Poll::new(LONG);
    loop {
        // The pods, then the partition, then the phase: the partition only falls during the
        // analysis (2, 1), so one still above 0 under analysis held when the pods were read.
        let pods = world.stateful_set_pods("ledger").await;
        let s = world.stateful_sets().get("ledger").await.unwrap();
        let phase = world.phase("ledger").await;
        if phase == Phase::Succeeded {
            break;
        }
        let (_, new) = revisions(&s);
        // The StatefulSet controller names the new revision in the status a moment after the
        // template changes, and serin may lower the partition before that: until then the
        // status' update revision is still the old one, whose pods are not the new ones.
        if phase == Phase::Progressing && (1..=2).contains(&partition(&s)) && new != old {
            partitions.insert(partition(&s));
            let updated = pods.values().filter(|(r, _)| *r == new).count();
            most_updated_before_promotion = most_updated_before_promotion.max(updated);
        }
        assert!(
            !poll.expired(),
            "no promotion; partitions seen {partitions:?}"
        );
        poll.next().await;
    }
    assert!(
        partitions.contains(&2) && partitions.contains(&1),
        "one pod, then two, under analysis: {partitions:?}"
    );
    assert!(
        most_updated_before_promotion <= 2,
        "the primary kept a pod under analysis"
    );
    let after = world.stateful_sets().get("ledger").await.unwrap();
    let (current, update) = revisions(&after);
    assert_eq!(current, update, "the new revision is the current one");
    assert_ne!(update, old);
    all_pods_on(&world, &update).await;
    assert_eq!(partition(&after), 3, "held again for the next release");
    // One patch per partition move (2, 1, 0, then 3 again): none repeated within a step.
    let patches = partition_patches(&world).await - patches_before;
    println!("{cp:?}: StatefulSet patches in the release: {patches}");
    assert_eq!(patches, 4.0, "StatefulSet patches in the release");
    let events = world.events("ledger").await;
    for weight in [33, 66] {
        let step = format!("Advance ledger.{ns} canary weight {weight}");
        assert!(events.iter().any(|e| e.contains(&step)), "{events:#?}");
    }
}

/// Istio: the VirtualService sends the step's weight to `ledger-canary`, which selects the
/// new revision's pods, while `ledger-primary` selects the current revision's; once
/// promoted, all traffic is on the primary, which selects every pod again.
async fn with_a_mesh_the_weight_goes_to_the_new_revisions_pods(cp: ControlPlane) {
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .routing_crds()
        .mesh_provider("istio")
        .start()
        .await;
    let mut c = ledger_canary();
    c["spec"]["provider"] = json!("istio");
    // Time to look at the first step before the next.
    c["spec"]["analysis"]["interval"] = json!("5s");
    let before = initialized_ledger(&world, c).await;
    let (old, _) = revisions(&before);
    world
        .set_stateful_set_image("ledger", "app", "ledger:1.1.0")
        .await;
    let routes = world.dynamic("networking.istio.io/v1beta1", "VirtualService");
    let weights = || async { virtual_service_weights(&routes.get("ledger").await.unwrap()) };
    wait_until(LONG, "a third of the traffic on the canary", || async {
        weights().await == [67, 33]
    })
    .await;
    let s = world.stateful_sets().get("ledger").await.unwrap();
    let (current, update) = revisions(&s);
    assert_eq!(current, old);
    assert_eq!(
        revision_selected(&world, "ledger-canary").await,
        Some(update)
    );
    assert_eq!(
        revision_selected(&world, "ledger-primary").await,
        Some(current)
    );
    assert_eq!(revision_selected(&world, "ledger").await, None);

    world.wait_phase("ledger", Phase::Succeeded, LONG).await;
    assert_eq!(weights().await, [100, 0]);
    assert_eq!(
        revision_selected(&world, "ledger-primary").await,
        None,
        "every pod behind the primary once promoted"
    );
}

async fn a_failing_release_is_rolled_back_with_no_pod_left_on_the_new_revision(cp: ControlPlane) {
    let world = world(cp).await;
    let checks = Receiver::start(500).await;
    let mut c = ledger_canary();
    c["spec"]["analysis"]["webhooks"] =
        json!([{"name": "smoke", "type": "rollout", "url": checks.url}]);
    let before = initialized_ledger(&world, c).await;
    let (old, _) = revisions(&before);
    world
        .set_stateful_set_image("ledger", "app", "ledger:1.1.0")
        .await;
    world.wait_phase("ledger", Phase::Failed, LONG).await;
    let failed = world.stateful_sets().get("ledger").await.unwrap();
    assert_eq!(
        partition(&failed),
        3,
        "every pod held on the current revision"
    );
    // The pod the canary ran on the new revision is recreated on the current one.
    all_pods_on(&world, &old).await;
    world
        .wait_event(
            "ledger",
            "Rolling back 1 pod(s) of StatefulSet ledger",
            LONG,
        )
        .await;
    let (current, update) = revisions(&world.stateful_sets().get("ledger").await.unwrap());
    assert_eq!(current, old);
    assert_ne!(
        update, old,
        "the template keeps the failed revision, as a Deployment's does"
    );
    assert!(checks.bodies.lock().await.len() >= 2, "the checks ran");
}

async fn a_stateful_set_that_updates_on_delete_is_refused_with_the_field(cp: ControlPlane) {
    let world = world(cp).await;
    let mut s = stateful_set("ledger", "ledger:1.0.0", 3);
    s["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    world.apply(&world.stateful_sets(), s).await;
    world.apply(&world.canaries(), ledger_canary()).await;
    world.wait_blocked("ledger").await;
    let (_, reason, message) = ready_condition(&world.canary("ledger").await).unwrap();
    assert_eq!(reason, "TargetInvalid", "{message}");
    assert!(
        message.contains("spec.updateStrategy.type") && message.contains("RollingUpdate"),
        "{message}"
    );
    let untouched = world.stateful_sets().get("ledger").await.unwrap();
    assert_eq!(
        partition(&untouched),
        0,
        "nothing written to a refused target"
    );
}

async fn a_controller_killed_mid_release_finishes_it(cp: ControlPlane) {
    let mut world = world(cp).await;
    let mut c = ledger_canary();
    c["spec"]["analysis"]["interval"] = json!("2s");
    initialized_ledger(&world, c).await;
    world
        .set_stateful_set_image("ledger", "app", "ledger:1.1.0")
        .await;
    wait_until(LONG, "the first step's partition", || async {
        let s = world.stateful_sets().get("ledger").await.unwrap();
        partition(&s) == 2 && world.phase("ledger").await == Phase::Progressing
    })
    .await;
    world.kill_controller();
    world.start_controller(&[]);
    world.wait_phase("ledger", Phase::Succeeded, LONG).await;
    let s = world.stateful_sets().get("ledger").await.unwrap();
    let (current, update) = revisions(&s);
    assert_eq!(current, update);
    all_pods_on(&world, &update).await;
    let events = world.events("ledger").await;
    let starts = events
        .iter()
        .filter(|e| e.contains("Starting canary analysis"))
        .count();
    assert_eq!(starts, 1, "resumed, not started over: {events:#?}");
}
