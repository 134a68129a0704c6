//! Watches expired mid-release. serin loses the API server (its connections cut, its watches
//! with them) while a release is under way; meanwhile the Deployment gets yet another version
//! and the history of changes is compacted (on the real control plane etcd itself, with the
//! API server's watch cache off so watches read etcd), so each watch serin resumes is answered
//! 410 Gone. serin lists again, sees the version it missed, restarts the analysis on it and
//! promotes it: nothing is decided on the view from before the gap.

use serin_core::Phase;
use serin_testkit::{ControlPlane, Poll, WorldConfig};

use serin_testkit::LONG;

async fn expired_watches_are_listed_again_and_nothing_is_missed(cp: ControlPlane) {
    // It compacts the history of changes (on the real control plane etcd's): the cluster's.
    let mut config = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .api_switch()
        .whole_cluster();
    config.stack.watch_cache = false;
    let world = config.start().await;
    super::podinfo_release(&world, 6).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_iterations("podinfo", 2).await;

    // The gap: serin cut off, a newer version, the history compacted.
    world.api_switch().set_up(false);
    world.set_image("podinfo", "app", "podinfo:6.0.2").await;
    world.stack.compact().await.unwrap();
    world.api_switch().set_up(true);

    let poll = Poll::new(LONG);
    while !(world.phase("podinfo").await == Phase::Succeeded
        && world.image("podinfo-primary").await == "podinfo:6.0.2")
    {
        if poll.expired() {
            world.fail("podinfo", "6.0.2 not promoted").await;
        }
        poll.next().await;
    }
    assert!(
        world.logged("watch expired (410 Gone); listing again"),
        "no watch was answered 410 Gone",
    );
    assert!(
        world
            .has_event(
                "podinfo",
                "New revision detected! Restarting analysis for podinfo"
            )
            .await,
        "the analysis restarted on the version serin missed"
    );
    assert!(!world.has_event("podinfo", "Rolling back").await);
}

serin_testkit::on_every_control_plane!(expired_watches_are_listed_again_and_nothing_is_missed);
