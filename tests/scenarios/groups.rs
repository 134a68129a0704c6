//! Release groups (`serin.flagger.app/release-group`): two services, `cart` and `api`,
//! released together: no member more than a step ahead of another, promoted only once both
//! analyses passed, rolled back together when either fails or never becomes ready, and
//! steered as one by `serin abort --group`.

use serde_json::json;
use serin_core::Phase;
use serin_testkit::{LONG, Receiver};

use crate::harness::{ControlPlane, World, canary, initialized_with, wait_until, world};

serin_testkit::on_every_control_plane!(virtual_time:
    two_services_advance_step_by_step_and_are_promoted_together,
    a_failure_in_one_member_rolls_back_both,
    a_member_that_never_becomes_ready_holds_the_group_until_the_deadline,
    serin_abort_group_rolls_back_every_member,
);

/// A member of group `shop` with `iterations` 1 s steps and `analysis` fields beside them.
fn member(name: &str, iterations: u32, analysis: serde_json::Value) -> serde_json::Value {
    let mut fields = json!({"interval": "1s", "threshold": 1, "iterations": iterations});
    if let (Some(fields), Some(extra)) = (fields.as_object_mut(), analysis.as_object()) {
        fields.extend(extra.clone());
    }
    canary(name)
        .annotations(json!({"serin.flagger.app/release-group": "shop"}))
        .analysis(fields)
        .build()
}

/// `cart` (3 steps) and `api` (5 steps), both initialized.
async fn shop(world: &World, api_analysis: serde_json::Value) {
    initialized_with(world, member("cart", 3, json!({}))).await;
    initialized_with(world, member("api", 5, api_analysis)).await;
}

/// `cart` starts first and is held until `api` catches up; `cart`, with fewer steps, waits
/// for `api`'s last check before promoting; both are promoted, each step taken once.
async fn two_services_advance_step_by_step_and_are_promoted_together(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    shop(&world, json!({})).await;
    world.set_image("cart", "app", "podinfo:6.0.1").await;
    world.wait_iterations("cart", 2).await;
    world.set_image("api", "app", "podinfo:6.0.1").await;

    // Held at its next step (or, if api's release was seen late, at its last one) ...
    world
        .wait_event("cart", "waiting for api of release group shop", LONG)
        .await;
    // ... and, with fewer steps than api, at promotion until api's last check passed.
    world
        .wait_event(
            "cart",
            &format!("Halt cart.{ns} promotion waiting for api of release group shop"),
            LONG,
        )
        .await;
    for name in ["cart", "api"] {
        world.wait_phase(name, Phase::Succeeded, LONG).await;
        assert_eq!(
            world.image(&format!("{name}-primary")).await,
            "podinfo:6.0.1"
        );
    }
    // Every step once: holding repeats no step.
    for k in 1..=3 {
        let step = format!("Advance cart.{ns} canary iteration {k}/3");
        assert_eq!(world.event_count("cart", &step).await, 1, "{step}");
    }
    assert_eq!(
        world
            .event_count("api", &format!("Advance api.{ns} canary iteration 5/5"))
            .await,
        1
    );
    let (code, out, err) = world.cli(&["status", "-n", ns, "--group", "shop"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("api [shop]") && out.contains("cart [shop]"),
        "{out}"
    );
}

/// `api`'s rollout check fails: `api` rolls back, and `cart`, healthy, rolls back with it.
async fn a_failure_in_one_member_rolls_back_both(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    let hook = Receiver::start(200).await;
    let webhook = json!({"webhooks": [{"name": "acceptance", "url": hook.url, "timeout": "2s"}]});
    shop(&world, webhook).await;
    world.set_image("cart", "app", "podinfo:6.0.1").await;
    world.set_image("api", "app", "podinfo:6.0.1").await;
    world.wait_iterations("api", 1).await;
    hook.set_status(500);

    world.wait_phase("api", Phase::Failed, LONG).await;
    world.wait_phase("cart", Phase::Failed, LONG).await;
    world
        .wait_event(
            "cart",
            &format!(
                "Rolling back cart.{ns}: the release of api, in the same release group shop, failed"
            ),
            LONG,
        )
        .await;
    for name in ["cart", "api"] {
        assert_eq!(
            world.image(&format!("{name}-primary")).await,
            "podinfo:6.0.0",
            "{name}"
        );
        assert_eq!(world.replicas(name).await, 0, "{name} scaled down");
    }
}

/// `api`'s new version never becomes ready: `cart` may take one step and then waits; at
/// `api`'s progress deadline both roll back, `cart` never promoted.
async fn a_member_that_never_becomes_ready_holds_the_group_until_the_deadline(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    initialized_with(&world, member("cart", 3, json!({}))).await;
    let api = canary("api")
        .annotations(json!({"serin.flagger.app/release-group": "shop"}))
        .iterations(3)
        // Long enough for cart to become ready and reach its first step on a loaded real
        // control plane (virtual time on the emulator: free).
        .deadline(30)
        .build();
    initialized_with(&world, api).await;
    world.set_image("api", "app", "podinfo:broken").await;
    world.wait_phase("api", Phase::Progressing, LONG).await;
    world.set_image("cart", "app", "podinfo:6.0.1").await;

    world
        .wait_event(
            "cart",
            &format!("Halt cart.{ns} advancement waiting for api of release group shop (step 0)"),
            LONG,
        )
        .await;
    world.wait_phase("api", Phase::Failed, LONG).await;
    world.wait_phase("cart", Phase::Failed, LONG).await;
    assert_eq!(world.image("cart-primary").await, "podinfo:6.0.0");
    assert_eq!(
        world
            .event_count("cart", &format!("Advance cart.{ns} canary iteration 2/3"))
            .await,
        0,
        "cart led by one step at most"
    );
}

/// `serin abort --group shop` mid-release: every member rolls back, the first asked saying a
/// person asked; a group nobody is in is an error.
async fn serin_abort_group_rolls_back_every_member(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    initialized_with(&world, member("cart", 30, json!({}))).await;
    initialized_with(&world, member("api", 30, json!({}))).await;
    for name in ["cart", "api"] {
        world.set_image(name, "app", "podinfo:6.0.1").await;
        world.wait_phase(name, Phase::Progressing, LONG).await;
    }
    let (code, out, err) = world.cli(&["abort", "--group", "shop", "-n", ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("canary {ns}/api: abort requested"))
            && out.contains(&format!("canary {ns}/cart: abort requested")),
        "{out}"
    );
    // api, asked first, rolls back for the person; cart for the person too, or, when api's
    // rollback reaches it before its own abort does, for api's: either way every member.
    world.wait_phase("api", Phase::Failed, LONG).await;
    world
        .wait_event(
            "api",
            &format!("Rolling back api.{ns} aborted by a person"),
            LONG,
        )
        .await;
    world.wait_phase("cart", Phase::Failed, LONG).await;
    let aborted = format!("Rolling back cart.{ns} aborted by a person");
    let followed = format!(
        "Rolling back cart.{ns}: the release of api, in the same release group shop, failed"
    );
    // Events follow the status that records them.
    wait_until(LONG, "cart's rollback event", || async {
        let events = world.events("cart").await;
        events
            .iter()
            .any(|e| e.contains(&aborted) || e.contains(&followed))
    })
    .await;

    let (code, _, err) = world.cli(&["abort", "--group", "nobody", "-n", ns]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no Canary in namespace"), "{err}");
}
