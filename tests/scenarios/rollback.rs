//! Instant rollback (`analysis.rollbackWindow`): a target set back to a revision promoted
//! before is promoted again at once, without analysis.

use serde_json::json;
use serin_core::Phase;
use serin_testkit::LONG;

use crate::harness::{ControlPlane, NS, canary, initialized_with, world};

serin_testkit::on_every_control_plane!(a_revision_promoted_before_comes_back_without_analysis);

/// Two analysed releases (6.0.1, 6.0.2), then the image set back to 6.0.1: promoted without
/// a single analysis step, an event and the status saying it was a rollback, the primary
/// on 6.0.1 again.
async fn a_revision_promoted_before_comes_back_without_analysis(cp: ControlPlane) {
    let world = world(cp).await;
    let manifest = canary("podinfo").analysis(json!({
        "interval": "1s", "threshold": 2, "iterations": 3, "rollbackWindow": 2
    }));
    initialized_with(&world, manifest.build()).await;
    let step = format!("Advance podinfo.{NS} canary iteration 1/3");
    for (release, image) in [(1, "podinfo:6.0.1"), (2, "podinfo:6.0.2")] {
        world.set_image("podinfo", "app", image).await;
        world
            .wait_event_count(
                "podinfo",
                &format!("Promotion completed! Scaling down podinfo.{NS}"),
                release,
                LONG,
            )
            .await;
        assert_eq!(world.image("podinfo-primary").await, image);
    }
    assert_eq!(
        world.event_count("podinfo", &step).await,
        2,
        "both analysed"
    );
    let before = world.canary("podinfo").await.status.unwrap();
    assert_eq!(before.promoted_before.as_ref().map(Vec::len), Some(2));

    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world
        .wait_event("podinfo", "rolled back to revision", LONG)
        .await;
    let after = world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    assert!(
        world
            .has_event("podinfo", &format!("Rolling back podinfo.{NS} to revision"))
            .await
    );
    assert_eq!(
        world.event_count("podinfo", &step).await,
        2,
        "the rollback ran no analysis step"
    );
    let status = after.status.unwrap();
    assert_eq!(
        status.last_promoted_spec,
        before.promoted_before.unwrap().pop()
    );
}
