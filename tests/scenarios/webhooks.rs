//! Webhooks through the real controller: failing rollout checks roll a release back after
//! `threshold` failures; a closed confirm-promotion gate holds it in WaitingPromotion (its
//! state in `status.gates`); the
//! load tester gets Flagger's payload.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use serin_core::Phase;
use serin_testkit::Receiver;

use crate::harness::{
    ControlPlane, World, WorldConfig, canary, deployment, wait_until, world,
    world_without_controller,
};

use serin_testkit::LONG;

async fn failing_rollout_checks_roll_the_release_back_at_the_threshold(cp: ControlPlane) {
    let world = world(cp).await;
    let hook = Receiver::start(500).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let mut c = canary("podinfo").iterations(5).build();
    c["spec"]["analysis"]["threshold"] = json!(2);
    c["spec"]["analysis"]["webhooks"] = json!([{"name": "acceptance", "url": hook.url, "timeout": "2s",
        "metadata": {"cmd": "test"}}]);
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;

    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Failed, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.0");
    assert_eq!(world.replicas("podinfo").await, 0);
    let ns = world.ns();
    world
        .wait_event(
            "podinfo",
            &format!("Rolling back podinfo.{ns} failed checks threshold reached 2"),
            LONG,
        )
        .await;
    let events = world.events("podinfo").await;
    assert!(
        events.iter().any(|e| e.contains(&format!(
            "Halt podinfo.{ns} advancement external check acceptance failed 500"
        )) && e.contains("not ready to go")),
        "{events:#?}"
    );
    let bodies = hook.bodies.lock().await;
    let first = bodies.first().expect("the hook was called");
    assert_eq!(first["name"], "podinfo");
    assert_eq!(first["namespace"], ns);
    assert_eq!(first["phase"], "Progressing");
    assert_eq!(first["metadata"], json!({"cmd": "test"}));
    assert!(first["checksum"].as_str().is_some_and(|s| !s.is_empty()));
}

async fn a_closed_confirm_promotion_gate_holds_the_release_until_it_opens(cp: ControlPlane) {
    let world = world(cp).await;
    let gate = Receiver::start(403).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["analysis"]["webhooks"] =
        json!([{"name": "approve", "type": "confirm-promotion", "url": gate.url}]);
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;

    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world
        .wait_phase("podinfo", Phase::WaitingPromotion, LONG)
        .await;
    // Held, not merely slow: the closed gate is asked again (a second Halt) and the release
    // still waits, with the primary untouched.
    let ns = world.ns();
    let halt = format!("Halt podinfo.{ns} advancement waiting for promotion approval approve");
    world.wait_event_count("podinfo", &halt, 2, LONG).await;
    assert_eq!(world.phase("podinfo").await, Phase::WaitingPromotion);
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.0");
    // The gate's state in the status: closed, by which webhook, since its first answer.
    let closed = gate_state(&world, "confirm-promotion").await;
    assert!(!closed.open, "{closed:?}");
    assert!(
        closed
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("approve ")),
        "{closed:?}"
    );
    world.wait_event_count("podinfo", &halt, 3, LONG).await;
    let still = gate_state(&world, "confirm-promotion").await;
    assert_eq!(
        still.since, closed.since,
        "asked again, closed since the first answer"
    );

    gate.status.store(200, Ordering::SeqCst);
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    let opened = gate_state(&world, "confirm-promotion").await;
    assert!(opened.open && opened.since > closed.since, "{opened:?}");
    world
        .wait_event(
            "podinfo",
            &format!("Confirm-promotion check for podinfo.{ns} passed"),
            LONG,
        )
        .await;
}

/// The last answer of a Canary's gate of type `gate`, from its status.
async fn gate_state(world: &World, gate: &str) -> serin::api::canary::GateState {
    let canary = world.canary("podinfo").await;
    let gates = canary.status.and_then(|s| s.gates).unwrap_or_default();
    gates
        .get(gate)
        .cloned()
        .unwrap_or_else(|| panic!("no {gate} in {gates:?}"))
}

/// Flagger's event webhooks: each event on the Canary is POSTed, in order, to its `type:
/// event` hook; a Canary without one sends its events to the global `--event-webhook`.
async fn events_reach_the_event_webhooks(cp: ControlPlane) {
    let own = Receiver::start(200).await;
    let global = Receiver::start(200).await;
    let mut world = world_without_controller(cp).await;
    world.start_controller(&["--event-webhook", &global.url]);
    for name in ["podinfo", "other"] {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
    }
    let mut c = canary("podinfo").iterations(1).build();
    c["spec"]["analysis"]["webhooks"] =
        json!([{"name": "events", "type": "event", "url": own.url, "metadata": {"team": "web"}}]);
    world.apply(&world.canaries(), c).await;
    world
        .apply(&world.canaries(), canary("other").iterations(1).build())
        .await;
    for name in ["podinfo", "other"] {
        world.wait_phase(name, Phase::Initialized, LONG).await;
    }
    let ns = world.ns().to_string();
    let messages = |bodies: &[Value], name: &str| -> Vec<String> {
        bodies
            .iter()
            .filter(|b| b["name"] == name)
            .map(|b| {
                b["metadata"]["eventMessage"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    crate::harness::wait_until(LONG, "events delivered", || async {
        messages(&own.bodies.lock().await, "podinfo")
            .iter()
            .any(|m| *m == format!("Initialization done! podinfo.{ns}"))
            && messages(&global.bodies.lock().await, "other")
                .iter()
                .any(|m| *m == format!("Initialization done! other.{ns}"))
    })
    .await;
    let own_bodies = own.bodies.lock().await.clone();
    assert!(
        messages(&own_bodies, "other").is_empty(),
        "each Canary's events go to its own hooks only"
    );
    assert!(
        messages(&global.bodies.lock().await, "podinfo").is_empty(),
        "a Canary with an event hook does not use the global one"
    );
    let done = own_bodies
        .iter()
        .find(|b| b["metadata"]["eventMessage"] == format!("Initialization done! podinfo.{ns}"))
        .unwrap();
    assert_eq!(done["namespace"], ns.as_str());
    assert_eq!(done["metadata"]["eventType"], "Normal");
    assert_eq!(done["metadata"]["team"], "web");
    assert!(
        done["metadata"]["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t > 1_600_000_000_000),
        "Unix milliseconds as a string: {done}"
    );
    // In the order they were recorded: the first event came before initialization finished.
    let order = messages(&own_bodies, "podinfo");
    let first = order
        .iter()
        .position(|m| m.starts_with(&format!("podinfo-primary.{ns} not ready: ")));
    let last = order
        .iter()
        .position(|m| m.starts_with("Initialization done!"));
    if let Some(first) = first {
        assert!(Some(first) < last, "{order:?}");
    }
}

/// A webhook that never answers (within its 5-minute timeout) holds up its own Canary only:
/// with a single reconcile slot, another Canary's release runs to the end meanwhile, because
/// the hung probe is left to run in the background instead of holding the slot.
async fn a_hung_webhook_holds_up_only_its_own_canary(cp: ControlPlane) {
    let mut args = serin_testkit::controller_args();
    args.push("--max-concurrent-reconciles=1".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .controller_args(&args)
        .start()
        .await;
    let hung = Receiver::start(200).await;
    hung.delay_ms.store(600_000, Ordering::SeqCst);
    for name in ["stuck", "podinfo"] {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
    }
    let mut stuck = canary("stuck").iterations(2).build();
    stuck["spec"]["analysis"]["webhooks"] = json!([{"name": "hangs", "type": "confirm-rollout",
        "url": hung.url, "timeout": "5m"}]);
    world.apply(&world.canaries(), stuck).await;
    world
        .apply(&world.canaries(), canary("podinfo").iterations(2).build())
        .await;
    world.wait_phase("stuck", Phase::Initialized, LONG).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;

    world.set_image("stuck", "app", "podinfo:6.0.1").await;
    wait_until(LONG, "the hung webhook called", || async {
        !hung.headers.lock().await.is_empty()
    })
    .await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    // The stuck release has not moved, and its webhook was not called again and again.
    assert_eq!(world.image("stuck-primary").await, "podinfo:6.0.0");
    assert_ne!(world.phase("stuck").await, Phase::Progressing);
    assert_eq!(hung.headers.lock().await.len(), 1);
}

serin_testkit::on_every_control_plane!(virtual_time:
    a_hung_webhook_holds_up_only_its_own_canary,
    events_reach_the_event_webhooks,
    failing_rollout_checks_roll_the_release_back_at_the_threshold,
    a_closed_confirm_promotion_gate_holds_the_release_until_it_opens,
);
