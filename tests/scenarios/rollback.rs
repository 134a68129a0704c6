//! Instant rollback (`analysis.rollbackWindow`): a target set back to a revision promoted
//! before is promoted again at once, without analysis; `serin undo` sets it back for people
//! who cannot edit the spec.

use serde_json::json;
use serin_core::Phase;
use serin_testkit::LONG;

use crate::harness::{ControlPlane, canary, initialized_with, world};
use serin_testkit::selected;

serin_testkit::on_every_control_plane!(virtual_time: a_revision_promoted_before_comes_back_without_analysis);

/// Two analysed releases (6.0.1, 6.0.2), then the image set back to 6.0.1: promoted without
/// a single analysis step, an event and the status saying it was a rollback, the primary
/// on 6.0.1 again.
async fn a_revision_promoted_before_comes_back_without_analysis(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    let manifest = canary("podinfo").analysis(json!({
        "interval": "1s", "threshold": 2, "iterations": 3, "rollbackWindow": 2
    }));
    initialized_with(&world, manifest.build()).await;
    let step = format!("Advance podinfo.{ns} canary iteration 1/3");
    for (release, image) in [(1, "podinfo:6.0.1"), (2, "podinfo:6.0.2")] {
        world.set_image("podinfo", "app", image).await;
        world
            .wait_event_count(
                "podinfo",
                &format!("Promotion completed! Scaling down podinfo.{ns}"),
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
            .has_event("podinfo", &format!("Rolling back podinfo.{ns} to revision"))
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

/// `serin undo` during a release: the target is set back to the template the primary runs
/// (from the Deployment's ReplicaSets), the release is cancelled without analysis, and
/// `--to-revision` names an older one, promoted again within the rollback window. Real
/// control plane only: the revisions are ReplicaSets of the Deployment controller, which the
/// API emulator does not run (e2e/README.md: what only a real control plane can prove).
#[tokio::test]
async fn serin_undo_sets_the_target_back_to_a_promoted_revision() {
    if !selected(ControlPlane::Real) {
        return;
    }
    let world = world(ControlPlane::Real).await;
    let ns = world.ns();
    let manifest = canary("podinfo").analysis(json!({
        "interval": "1s", "threshold": 2, "iterations": 30, "rollbackWindow": 2
    }));
    initialized_with(&world, manifest.build()).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    let promote = world.cli(&["promote", "podinfo", "-n", ns]).await;
    assert_eq!(promote.0, 0, "{promote:?}");
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");

    // A release of 6.0.2 in progress, undone: back to what the primary runs.
    world.set_image("podinfo", "app", "podinfo:6.0.2").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    let (code, out, err) = world.cli(&["undo", "podinfo", "-n", ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("app: podinfo:6.0.2 -> podinfo:6.0.1"), "{out}");
    assert!(out.contains("a release in progress is cancelled"), "{out}");
    assert_eq!(world.image("podinfo").await, "podinfo:6.0.1");
    world
        .wait_event("podinfo", "is back at the promoted revision", LONG)
        .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");

    // The first revision (6.0.0, promoted at initialization) by number: a rollback.
    let (code, out, err) = world
        .cli(&["undo", "podinfo", "-n", ns, "--to-revision", "1"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("app: podinfo:6.0.1 -> podinfo:6.0.0"), "{out}");
    assert!(out.contains("without analysis"), "{out}");
    world
        .wait_event("podinfo", "rolled back to revision", LONG)
        .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.0");

    // Nothing to undo, and a revision the Deployment does not keep: said, exit codes 0 and 1.
    let (code, out, _) = world.cli(&["undo", "podinfo", "-n", ns]).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing to undo"), "{out}");
    let (code, _, err) = world
        .cli(&["undo", "podinfo", "-n", ns, "--to-revision", "99"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("the target has no revision 99"), "{err}");
}
