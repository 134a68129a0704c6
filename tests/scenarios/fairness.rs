//! Sharing a cluster's Canaries fairly: several controllers each owning a shard
//! (`--canary-selector`, each with its own Lease), and a limit on releases progressing at
//! once (`--max-progressing`) that queues the rest in the order they began to wait.

use std::collections::BTreeMap;

use serde_json::json;
use serin_core::Phase;
use serin_testkit::LONG;

use crate::harness::{ControlPlane, canary, deployment};

serin_testkit::on_every_control_plane!(
    shards_split_the_canaries_and_announce_each_release_once,
    at_most_max_progressing_releases_run_and_the_rest_start_in_turn,
    a_release_waiting_for_approval_holds_no_slot,
    a_freed_slot_starts_the_waiting_release_at_once,
);

/// `--max-progressing 1`: the release waiting for a slot starts as soon as the running one
/// ends, not at its own next interval (a minute here: without the wake it would start about
/// a minute after it began to wait).
async fn a_freed_slot_starts_the_waiting_release_at_once(cp: ControlPlane) {
    let mut world = crate::harness::world_without_controller(cp).await;
    world.start_controller(&["--max-progressing", "1"]);
    for (name, interval) in [("quick", "1s"), ("slow", "1m")] {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
        let manifest = canary(name)
            .analysis(json!({"interval": interval, "threshold": 2, "iterations": 2}))
            .deadline(600)
            .build();
        world.apply(&world.canaries(), manifest).await;
        world.wait_phase(name, Phase::Initialized, LONG).await;
    }
    world.set_image("quick", "app", "podinfo:6.0.1").await;
    world.wait_phase("quick", Phase::Progressing, LONG).await;
    world.set_image("slow", "app", "podinfo:6.0.1").await;
    world
        .wait_event("slow", "waiting for a release slot", LONG)
        .await;
    world.wait_phase("quick", Phase::Succeeded, LONG).await;
    let freed = std::time::Instant::now();
    world
        .wait_phase(
            "slow",
            Phase::Progressing,
            std::time::Duration::from_secs(30),
        )
        .await;
    println!(
        "{cp:?}: the waiting release started {:?} after the slot freed",
        freed.elapsed()
    );
}

/// `--max-progressing 1`: a release held at its confirm-rollout gate takes no slot, so another
/// release goes ahead; once approved, it waits for that one to finish, then runs.
async fn a_release_waiting_for_approval_holds_no_slot(cp: ControlPlane) {
    let mut world = crate::harness::world_without_controller(cp).await;
    world.start_controller(&["--max-progressing", "1"]);
    let gate = serin_testkit::Receiver::start(403).await;
    for (name, iterations) in [("held", 2), ("other", 8)] {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
        let mut manifest = canary(name).iterations(iterations).build();
        if name == "held" {
            manifest["spec"]["analysis"]["webhooks"] = json!([{"name": "approval",
                "type": "confirm-rollout", "url": gate.url}]);
        }
        world.apply(&world.canaries(), manifest).await;
        world.wait_phase(name, Phase::Initialized, LONG).await;
    }
    world.set_image("held", "app", "podinfo:6.0.1").await;
    world.wait_event("held", "waiting for approval", LONG).await;
    world.set_image("other", "app", "podinfo:6.0.1").await;
    world.wait_phase("other", Phase::Progressing, LONG).await;
    gate.set_status(200);
    let queued = world
        .wait_canary("held", "waiting for a slot once approved", LONG, |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.waiting_for.as_deref() == Some("concurrency"))
        })
        .await;
    assert_eq!(queued.status.map(|s| s.phase), Some(Phase::Waiting));
    for name in ["other", "held"] {
        world.wait_phase(name, Phase::Succeeded, LONG).await;
    }
}

/// `--max-progressing 1` and three releases begun one after the other: never two progressing
/// at once, the second and third wait for a slot (`waitingFor: concurrency`, an event saying
/// so) and start in the order they began to wait; all are promoted.
async fn at_most_max_progressing_releases_run_and_the_rest_start_in_turn(cp: ControlPlane) {
    let mut world = crate::harness::world_without_controller(cp).await;
    world.start_controller(&["--max-progressing", "1"]);
    let names = ["app-1", "app-2", "app-3"];
    for name in names {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
        world
            .apply(&world.canaries(), canary(name).iterations(3).build())
            .await;
    }
    for name in names {
        world.wait_phase(name, Phase::Initialized, LONG).await;
    }
    world.set_image("app-1", "app", "podinfo:6.0.1").await;
    world.wait_phase("app-1", Phase::Progressing, LONG).await;
    for name in ["app-2", "app-3"] {
        world.set_image(name, "app", "podinfo:6.0.1").await;
        let waiting = world
            .wait_canary(name, "waiting for a slot", LONG, |c| {
                c.status.as_ref().is_some_and(|s| {
                    s.phase == Phase::Waiting && s.waiting_for.as_deref() == Some("concurrency")
                })
            })
            .await;
        assert!(waiting.status.is_some());
    }
    // Watch every phase until all are promoted: one release at a time, in turn.
    let active = |p: &Phase| {
        matches!(
            p,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
        )
    };
    let mut started: Vec<String> = vec!["app-1".into()];
    let poll = serin_testkit::Poll::new(LONG);
    loop {
        let phases: BTreeMap<String, Phase> = world.phases().await;
        let running: Vec<&String> = phases
            .iter()
            .filter(|(_, p)| active(p))
            .map(|(n, _)| n)
            .collect();
        assert!(
            running.len() <= 1,
            "more than one release at once: {phases:?}"
        );
        for name in running {
            if !started.contains(name) {
                started.push(name.clone());
            }
        }
        if phases.values().all(|p| *p == Phase::Succeeded) {
            break;
        }
        assert!(!poll.expired(), "not all promoted: {phases:?}");
        poll.next().await;
    }
    assert_eq!(
        started, names,
        "the waiting releases start in the order they began to wait"
    );
    for name in ["app-2", "app-3"] {
        world
            .wait_event(
                name,
                "advancement waiting for a release slot: 1 of 1 releases",
                LONG,
            )
            .await;
        assert_eq!(
            world.image(&format!("{name}-primary")).await,
            "podinfo:6.0.1"
        );
    }
}

/// Two shards of controllers on one cluster, each with its own `--canary-selector` and Lease:
/// each reconciles only its own Canaries (its log names no other), both lead at once, and each
/// release is announced once.
async fn shards_split_the_canaries_and_announce_each_release_once(cp: ControlPlane) {
    // The default lease (15 s): the subject is the split, not the lease. A replica that
    // cannot renew its lease in time exits (its pod would be restarted; nothing restarts it
    // here), and a 6 s lease could expire on a loaded machine: it did once in a loop of the
    // scenario binary beside other builds, stalling shard b's release.
    let shard = |name: &str| -> Vec<String> {
        let mut args = vec!["--enable-leader-election".to_string()];
        args.extend([
            "--canary-selector".to_string(),
            format!("shard={name}"),
            "--leader-election-id".to_string(),
            format!("serin-{name}"),
        ]);
        args
    };
    let mut world = crate::harness::world_without_controller(cp).await;
    let a = shard("a");
    world.start_controller(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut args = world.controller_args();
    args.extend(shard("b"));
    let mut b = serin_testkit::Controller::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_serin")),
        world.stack.kubeconfig_path(),
        args,
    );
    b.start(&[]);
    let canaries = [("app-a1", "a"), ("app-a2", "a"), ("app-b1", "b")];
    for (name, shard) in canaries {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
        let canary = canary(name).iterations(2).labels(json!({"shard": shard}));
        world.apply(&world.canaries(), canary.build()).await;
    }
    for (name, _) in canaries {
        world.wait_phase(name, Phase::Initialized, LONG).await;
        world.set_image(name, "app", "podinfo:6.0.1").await;
    }
    for (name, _) in canaries {
        world.wait_phase(name, Phase::Succeeded, LONG).await;
        world
            .wait_event(name, "Promotion completed! Scaling down", LONG)
            .await;
        let counts = world.event_counts(name).await;
        let ns = world.ns();
        for once in [
            format!("New revision detected! Scaling up {name}.{ns}"),
            format!("Promotion completed! Scaling down {name}.{ns}"),
        ] {
            let n = counts
                .iter()
                .find(|(m, _)| *m == once)
                .map_or(0, |(_, n)| *n);
            assert_eq!(n, 1, "{once}: {counts:?}");
        }
    }
    let span = |name: &str| format!("name=\"{name}\"");
    assert!(world.logged(&span("app-a1")) && world.logged(&span("app-a2")));
    assert!(
        !world.logged(&span("app-b1")),
        "shard a reconciled b's Canary"
    );
    let logs = b.all_logs();
    assert!(logs.contains(&span("app-b1")));
    assert!(
        !logs.contains(&span("app-a1")) && !logs.contains(&span("app-a2")),
        "shard b reconciled a's Canaries"
    );
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(world.client.clone(), world.ns());
    for lease in ["serin-a", "serin-b"] {
        let holder = leases
            .get(lease)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity);
        assert!(holder.is_some(), "{lease} held");
    }

    // A selector the API server cannot parse stops the controller at start, naming the flag.
    let mut args = world.controller_args();
    args.extend(["--canary-selector".to_string(), "shard in (a".to_string()]);
    let mut bad = serin_testkit::Controller::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_serin")),
        world.stack.kubeconfig_path(),
        args,
    );
    bad.start(&[]);
    let poll = serin_testkit::Poll::new(LONG);
    while !bad.exited() {
        assert!(
            !poll.expired(),
            "a bad selector not refused:\n{}",
            bad.logs(20)
        );
        poll.next().await;
    }
    assert!(
        bad.all_logs()
            .contains("--canary-selector \"shard in (a\": not a label selector"),
        "{}",
        bad.logs(20)
    );
}
