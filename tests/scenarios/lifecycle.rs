//! A release from initialization to promotion or rollback, with the events Flagger users
//! know, through the real controller binary.

use std::time::Duration;

use serde_json::json;
use serin_core::Phase;

use crate::harness::{ControlPlane, canary, deployment, initialized, world};

use serin_testkit::LONG;

async fn initialization_creates_the_primary_and_services_and_scales_the_target_to_zero(
    cp: ControlPlane,
) {
    let world = world(cp).await;
    let canary = initialized(&world, "podinfo", 3).await;

    // The primary serves with the target's replicas and template.
    assert_eq!(world.replicas("podinfo-primary").await, 2);
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.0");
    let primary = world.deployments().get("podinfo-primary").await.unwrap();
    let owner = &primary.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Canary", "podinfo")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    // The target is scaled to zero once the primary is ready.
    assert_eq!(world.replicas("podinfo").await, 0);

    // Services: the apex and -primary select the primary's pods, -canary the target's.
    for (service, selects) in [
        ("podinfo", "podinfo-primary"),
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        let s = world.services().get(service).await.unwrap();
        let selector = s.spec.unwrap().selector.unwrap();
        assert_eq!(selector["app"], selects, "Service {service}");
    }

    // Labels other controllers put on a generated Service stay theirs (serin applies only its
    // own fields; `unmanagedMetadata` keys it does not even send).
    let params = kube::api::PatchParams::apply("another-controller");
    let label = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo-canary", "labels": {"team": "web"}}});
    world
        .services()
        .patch("podinfo-canary", &params, &kube::api::Patch::Apply(&label))
        .await
        .unwrap();
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    let kept = world.services().get("podinfo-canary").await.unwrap();
    assert_eq!(
        kept.metadata
            .labels
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("web")
    );

    let status = canary.status.unwrap();
    let promoted = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Promoted")
        .unwrap();
    assert_eq!(promoted.status.as_str(), "True");
    assert_eq!(promoted.reason, "Initialized");
    assert!(status.last_promoted_spec.unwrap().starts_with("v2:"));
    assert!(
        canary
            .metadata
            .finalizers
            .unwrap()
            .contains(&"finalizer.flagger.app".to_string())
    );
    let done = format!("Initialization done! podinfo.{}", world.ns());
    world.wait_event("podinfo", &done, LONG).await;
}

async fn a_new_revision_is_analysed_and_promoted(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, "podinfo", 3).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;

    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    let done = world.wait_phase("podinfo", Phase::Succeeded, LONG).await;

    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    assert_eq!(
        world.replicas("podinfo").await,
        0,
        "target scaled down after promotion"
    );
    let status = done.status.unwrap();
    assert_eq!(status.last_promoted_spec, status.last_applied_spec);
    // The outbox records a transition's events after its status: the last one may follow.
    world
        .wait_event("podinfo", "Promotion completed! Scaling down", LONG)
        .await;
    let events = world.events("podinfo").await;
    let ns = world.ns();
    let expected = [
        format!("New revision detected! Scaling up podinfo.{ns}"),
        format!("Starting canary analysis for podinfo.{ns}"),
        format!("Advance podinfo.{ns} canary iteration 1/3"),
        format!("Advance podinfo.{ns} canary iteration 3/3"),
        format!("Copying podinfo.{ns} template spec to podinfo-primary.{ns}"),
        format!("Promotion completed! Scaling down podinfo.{ns}"),
    ];
    let mut at = 0;
    for want in expected {
        match events[at..].iter().position(|e| e.contains(&want)) {
            Some(i) => at += i + 1,
            None => {
                world
                    .fail(
                        "podinfo",
                        &format!("event {want:?} missing or out of order"),
                    )
                    .await
            }
        }
    }
}

async fn a_canary_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline(
    cp: ControlPlane,
) {
    let world = world(cp).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    world
        .apply(&world.canaries(), canary("podinfo").iterations(3).build())
        .await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    // The short deadline for the release only: initializing on a loaded control plane may
    // take longer than 3 s.
    world
        .merge(
            &world.canaries(),
            "podinfo",
            json!({"spec": {"progressDeadlineSeconds": 3}}),
        )
        .await;
    world.wait_observed("podinfo").await;

    // An image that never becomes ready (the stack's rule: the tag says "broken").
    world
        .set_image("podinfo", "app", "podinfo:6.0.1-broken")
        .await;
    world.wait_phase("podinfo", Phase::Failed, LONG).await;

    assert_eq!(
        world.image("podinfo-primary").await,
        "podinfo:6.0.0",
        "primary untouched"
    );
    assert_eq!(
        world.ready_replicas("podinfo-primary").await,
        2,
        "primary still serving"
    );
    assert_eq!(world.replicas("podinfo").await, 0, "canary scaled to zero");
    world
        .wait_event(
            "podinfo",
            &format!("Canary failed! Scaling down podinfo.{}", world.ns()),
            LONG,
        )
        .await;
    let events = world.events("podinfo").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning") && e.contains("deadline")),
        "{events:#?}"
    );
    let status = world.canary("podinfo").await.status.unwrap();
    let promoted = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Promoted")
        .unwrap();
    assert_eq!(promoted.status.as_str(), "False");
    // The release's record names why it failed, after the events have gone.
    let failed = status.history.unwrap_or_default();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].outcome, "Failed");
    let why = failed[0].message.as_deref().unwrap_or_default();
    assert!(why.contains("deadline"), "{why}");

    // Re-applying the same failed spec does not retry; changing the template does. The next
    // release gets a deadline a loaded machine meets: the primary's rolling update on the real
    // control plane took more than 3 s in one run of eight scenarios at once.
    let deadline = json!({"spec": {"progressDeadlineSeconds": 60}});
    world.merge(&world.canaries(), "podinfo", deadline).await;
    world.set_image("podinfo", "app", "podinfo:6.0.2").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.2");
}

async fn a_new_revision_during_analysis_restarts_it(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, "podinfo", 6).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_iterations("podinfo", 2).await;
    world.set_image("podinfo", "app", "podinfo:6.0.2").await;
    world
        .wait_event(
            "podinfo",
            &format!(
                "New revision detected! Restarting analysis for podinfo.{}",
                world.ns()
            ),
            LONG,
        )
        .await;
    let done = world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.2");
    // The history says so too: 6.0.1's release superseded, 6.0.2's promoted, both ended.
    let history = done.status.unwrap().history.unwrap_or_default();
    let outcomes: Vec<&str> = history.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["Superseded", "Succeeded"], "{history:?}");
    assert!(
        history
            .iter()
            .all(|r| r.ended.is_some_and(|e| e >= r.started))
    );
    // 6.0.1 was never promoted.
    let copy = format!("Copying podinfo.{} template spec", world.ns());
    let copying = world
        .events("podinfo")
        .await
        .into_iter()
        .filter(|e| e.contains(&copy))
        .count();
    assert_eq!(copying, 1);
}

async fn suspend_holds_a_release_and_resume_finishes_it(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, "podinfo", 5).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_iterations("podinfo", 1).await;
    world
        .merge(
            &world.canaries(),
            "podinfo",
            json!({"spec": {"suspend": true}}),
        )
        .await;
    world
        .wait_event(
            "podinfo",
            "skipping canary run as object is suspended",
            LONG,
        )
        .await;
    let held = world.canary("podinfo").await.status.unwrap();
    // Two more reconciles under the suspension (each records the event again), and no step.
    let skipped = "skipping canary run as object is suspended";
    let seen = world.event_count("podinfo", skipped).await;
    world
        .wait_event_count("podinfo", skipped, seen + 2, LONG)
        .await;
    let still = world.canary("podinfo").await.status.unwrap();
    assert_eq!(still.phase, Phase::Progressing);
    assert_eq!(still.iterations, held.iterations, "no step while suspended");
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.0");

    world
        .merge(
            &world.canaries(),
            "podinfo",
            json!({"spec": {"suspend": false}}),
        )
        .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
}

async fn a_controller_killed_mid_release_is_restarted_and_finishes_it(cp: ControlPlane) {
    let mut world = world(cp).await;
    initialized(&world, "podinfo", 6).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_iterations("podinfo", 2).await;
    world.kill_controller();
    let at_kill = world.canary("podinfo").await.status.unwrap();
    assert_eq!(at_kill.phase, Phase::Progressing);

    world.start_controller(&[]);
    let done = world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    assert_eq!(world.replicas("podinfo").await, 0);
    assert_eq!(done.status.unwrap().iterations, 0);
    // The restart resumed from the recorded iteration instead of starting over.
    let events = world.events("podinfo").await;
    let starts = events
        .iter()
        .filter(|e| e.contains("Starting canary analysis"))
        .count();
    assert_eq!(starts, 1, "{events:#?}");
    assert!(
        events.iter().any(|e| e.contains("canary iteration 6/6")),
        "{events:#?}"
    );
}

serin_testkit::on_every_control_plane!(
    virtual_time:
    initialization_creates_the_primary_and_services_and_scales_the_target_to_zero,
    a_new_revision_is_analysed_and_promoted,
    a_canary_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline,
    a_new_revision_during_analysis_restarts_it,
    suspend_holds_a_release_and_resume_finishes_it,
    a_pod_template_of_several_hundred_kib_is_released_and_kept_on_the_primary,
    ; real_time:
    a_controller_killed_mid_release_is_restarted_and_finishes_it,
    a_killed_leader_is_replaced_and_the_release_finishes_once,
    a_leader_deposed_while_a_webhook_hangs_stops_at_once,
);

/// A pod template of about 330 KiB (environment variables): larger than the API server's
/// 256 KiB budget for all of an object's annotations, so serin's copy of it on the primary
/// (to put a hand edit back) must be compressed to be written at all.
async fn a_pod_template_of_several_hundred_kib_is_released_and_kept_on_the_primary(
    cp: ControlPlane,
) {
    let world = world(cp).await;
    // 320 variables of 1 KiB each (a long list would measure the API servers' merging of
    // list entries instead).
    let env: Vec<serde_json::Value> = (0..320)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("{i}:{}", "settings".repeat(128))}))
        .collect();
    let mut target = deployment("podinfo", "podinfo:6.0.0", 1);
    target["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
    assert!(target.to_string().len() > 300 * 1024);
    world.apply(&world.deployments(), target).await;
    world
        .apply(&world.canaries(), canary("podinfo").iterations(1).build())
        .await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    let primary = world.deployments().get("podinfo-primary").await.unwrap();
    let annotations = primary.metadata.annotations.unwrap_or_default();
    let copy = &annotations["serin.flagger.app/promoted-template"];
    assert!(
        copy.starts_with("gzip:") && copy.len() < 128 * 1024,
        "{} bytes",
        copy.len()
    );

    // A hand edit of the big primary is put back from that copy.
    let edit = json!({"spec": {"template": {"metadata": {"labels": {"edited": "by-hand"}}}}});
    world
        .merge(&world.deployments(), "podinfo-primary", edit)
        .await;
    serin_testkit::wait_until(LONG, "the hand edit put back", || async {
        let p = world.deployments().get("podinfo-primary").await.unwrap();
        let labels = p.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        !labels.contains_key("edited")
    })
    .await;

    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
}

/// The leader election flags of the leader scenarios. The Lease is in the world's namespace:
/// the kit starts the world's controller with `--leader-election-namespace <ns>`, and
/// `World::controller_args` has it for another one (given twice, the flag is refused).
pub(crate) const ELECTION: [&str; 3] = [
    "--enable-leader-election",
    "--leader-election-lease-duration",
    // Renewed every 4 s, given up 1 s before expiry when no renewal shows (a loaded machine
    // can delay one by more than a 3 s lease's half second).
    "6s",
];

/// Two replicas with leader election: only the Lease holder acts; killed (SIGKILL) mid-release,
/// it is replaced within the lease duration and the release finishes, each step once.
async fn a_killed_leader_is_replaced_and_the_release_finishes_once(cp: ControlPlane) {
    let election = ELECTION;
    let mut world = crate::harness::world_without_controller(cp).await;
    world.start_controller(&election);
    let mut args = world.controller_args();
    args.extend(election.map(String::from));
    let mut other = serin_testkit::Controller::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_serin")),
        world.stack.kubeconfig_path(),
        args,
    );
    other.start(&[]);
    initialized(&world, "podinfo", 8).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    crate::harness::wait_until(LONG, "a few steps", || async {
        world
            .canary("podinfo")
            .await
            .status
            .is_some_and(|s| s.iterations >= 3)
    })
    .await;

    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(world.client.clone(), world.ns());
    let holder = leases
        .get("serin-leader-election")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap();
    let first = world.controller_pid().unwrap();
    if holder.ends_with(&format!("-{first}")) {
        world.kill_controller();
    } else {
        assert!(
            holder.ends_with(&format!("-{}", other.pid().unwrap())),
            "{holder}"
        );
        other.kill();
    }
    // Until the release ends, a replica that exited is restarted, as its Deployment would:
    // one that lost the Lease (renewals too slow on a loaded machine) exits by design, and
    // the killed one comes back as a stand-by.
    let poll = serin_testkit::Poll::new(2 * LONG).every(Duration::from_millis(200));
    let mut restarts = 0;
    loop {
        if world.controller_exited() || world.controller_pid().is_none() {
            restarts += 1;
            world.start_controller(&election);
        }
        if other.exited() || other.pid().is_none() {
            restarts += 1;
            other.start(&[]);
        }
        let phase = world.canary("podinfo").await.status.map(|s| s.phase);
        if phase == Some(Phase::Succeeded) {
            break;
        }
        if poll.expired() {
            let lease = leases
                .get("serin-leader-election")
                .await
                .ok()
                .and_then(|l| l.spec);
            panic!(
                "phase {phase:?}, not Succeeded within {:?} of the kill ({restarts} \
                 restarts); the Lease: {lease:?}\n--- the first replica (pid {:?}) ---\n{}\n\
                 --- the other replica (pid {:?}) ---\n{}",
                2 * LONG,
                world.controller_pid(),
                world.logs(),
                other.pid(),
                other.logs(60)
            );
        }
        poll.next().await;
    }
    eprintln!("{restarts} replica restarts after the kill");
    // The outbox records a transition's events after its status: the last one may follow.
    world
        .wait_event("podinfo", "Promotion completed! Scaling down", LONG)
        .await;
    let counts = world.event_counts("podinfo").await;
    let ns = world.ns();
    for k in 1..=8 {
        let step = format!("Advance podinfo.{ns} canary iteration {k}/8");
        let n = counts
            .iter()
            .find(|(m, _)| *m == step)
            .map_or(0, |(_, n)| *n);
        assert_eq!(n, 1, "{step}: {counts:?}");
    }
    for once in [
        format!("New revision detected! Scaling up podinfo.{ns}"),
        format!("Promotion completed! Scaling down podinfo.{ns}"),
    ] {
        let n = counts
            .iter()
            .find(|(m, _)| *m == once)
            .map_or(0, |(_, n)| *n);
        assert_eq!(n, 1, "{once}: {counts:?}");
    }
}

/// The leader loses its Lease (another holder takes it) while a rollout webhook takes 5 s to
/// answer: it stops at once (exits well before the webhook answers) and writes nothing more;
/// restarted, it waits for the Lease, and the release finishes with each step once.
async fn a_leader_deposed_while_a_webhook_hangs_stops_at_once(cp: ControlPlane) {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Patch, PatchParams};
    use std::sync::atomic::Ordering;
    let election = ELECTION;
    let mut world = crate::harness::world_without_controller(cp).await;
    world.start_controller(&election);
    let slow = serin_testkit::Receiver::start(200).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    let mut c = canary("podinfo").iterations(4).build();
    c["spec"]["analysis"]["webhooks"] =
        json!([{"name": "slow", "type": "rollout", "url": slow.url, "timeout": "30s"}]);
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_iterations("podinfo", 1).await;

    // The webhook hangs; once it has been called again, the Lease goes to someone else.
    slow.delay_ms.store(5_000, Ordering::SeqCst);
    let called = slow.headers.lock().await.len();
    crate::harness::wait_until(LONG, "the slow webhook called", || async {
        slow.headers.lock().await.len() > called
    })
    .await;
    let leases: kube::Api<Lease> = kube::Api::namespaced(world.client.clone(), world.ns());
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    let stolen = json!({"spec": {"holderIdentity": "thief", "leaseDurationSeconds": 6,
                                 "renewTime": now, "acquireTime": now}});
    leases
        .patch(
            "serin-leader-election",
            &PatchParams::default(),
            &Patch::Merge(&stolen),
        )
        .await
        .unwrap();
    let deposed = std::time::Instant::now();
    let poll = serin_testkit::Poll::new(LONG);
    while !world.controller_exited() {
        assert!(!poll.expired(), "the deposed leader did not stop");
        poll.next().await;
    }
    let stopped = deposed.elapsed();
    assert!(
        stopped < Duration::from_secs(4),
        "stopped {stopped:?} after losing the Lease: it waited for the webhook\n{}",
        world.logs()
    );
    let after = world.canary("podinfo").await.status;

    // Restarted (as its Deployment would), it waits for the thief's Lease to expire: nothing
    // is written meanwhile.
    world.start_controller(&election);
    let poll = serin_testkit::Poll::new(LONG).every(Duration::from_millis(200));
    loop {
        let holder = leases
            .get("serin-leader-election")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity);
        if holder.as_deref() != Some("thief") {
            break;
        }
        assert_eq!(
            serde_json::to_value(world.canary("podinfo").await.status).unwrap(),
            serde_json::to_value(&after).unwrap(),
            "the Canary was written while the thief held the Lease"
        );
        assert!(!poll.expired(), "nobody took the Lease back");
        poll.next().await;
    }
    slow.delay_ms.store(0, Ordering::SeqCst);
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    let ns = world.ns();
    for k in 1..=4 {
        let step = format!("Advance podinfo.{ns} canary iteration {k}/4");
        world.wait_event("podinfo", &step, LONG).await;
        assert_eq!(world.event_count("podinfo", &step).await, 1, "{step}");
    }
    eprintln!("the deposed leader stopped {stopped:?} after losing the Lease");
}
