//! A person steering releases with `serin pause|resume|promote|abort|retry|status`, through
//! annotations the controller consumes; and Flagger's webhook pattern through
//! `serin loadtester`.

use std::time::Duration;

use serde_json::{Value, json};
use serin_core::Phase;
use serin_testkit::Receiver;

use crate::harness::{ControlPlane, World, canary, initialized, wait_until, world};

use serin_testkit::LONG;

async fn serin(world: &World, args: &[&str]) -> String {
    let (code, out, err) = world.cli(args).await;
    assert_eq!(code, 0, "serin {args:?}: {err}");
    out
}

async fn status_json(world: &World) -> Value {
    let out = serin(
        world,
        &["status", "podinfo", "-n", world.ns(), "-o", "json"],
    )
    .await;
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

async fn iterations(world: &World) -> i32 {
    world
        .canary("podinfo")
        .await
        .status
        .map(|s| s.iterations)
        .unwrap_or(0)
}

/// Flagger's event for a reconcile that finds the Canary suspended (or paused), recorded on
/// every such reconcile.
const SUSPENDED: &str = "skipping canary run as object is suspended";

async fn commands_steer_a_release_without_editing_the_spec(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    initialized(&world, "podinfo", 60).await;
    let generation = world.canary("podinfo").await.metadata.generation;

    // Pause holds the release; status says so; resume continues it.
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    serin(&world, &["pause", "podinfo", "-n", ns]).await;
    let seen = world.wait_event_count("podinfo", SUSPENDED, 1, LONG).await;
    let held = iterations(&world).await;
    // Two more reconciles under the pause, and no step.
    world
        .wait_event_count("podinfo", SUSPENDED, seen + 2, LONG)
        .await;
    assert_eq!(iterations(&world).await, held, "paused: no step");
    let status = status_json(&world).await;
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["waitingFor"], "paused (serin resume)");
    serin(&world, &["resume", "podinfo", "-n", ns]).await;
    wait_until(LONG, "steps again", || async {
        iterations(&world).await > held
    })
    .await;
    let table = serin(&world, &["status", "-n", ns]).await;
    assert!(
        table.contains("podinfo") && table.contains("Progressing"),
        "{table}"
    );

    // Promote finishes now, 60 iterations early.
    serin(&world, &["promote", "podinfo", "-n", ns]).await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    world
        .wait_event("podinfo", "serin promote requested", LONG)
        .await;

    // Abort rolls back within an interval; retry runs the failed revision again.
    world.set_image("podinfo", "app", "podinfo:6.0.2").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    serin(&world, &["abort", "podinfo", "-n", ns]).await;
    world
        .wait_phase("podinfo", Phase::Failed, Duration::from_secs(5))
        .await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    serin(&world, &["retry", "podinfo", "-n", ns]).await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    serin(&world, &["promote", "podinfo", "-n", ns]).await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.2");

    // A command where it does nothing is reported, not kept; the spec was never edited.
    serin(&world, &["abort", "podinfo", "-n", ns]).await;
    world
        .wait_event(
            "podinfo",
            "does nothing in phase Succeeded: no release is running",
            LONG,
        )
        .await;
    wait_until(LONG, "command annotation cleared", || async {
        !world
            .canary("podinfo")
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("serin.flagger.app/command")
    })
    .await;
    assert_eq!(
        world.canary("podinfo").await.metadata.generation,
        generation
    );

    // As a kubectl plugin: `kubectl serin ...` runs `kubectl-serin` from the PATH.
    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_serin"),
        plugins.path().join("kubectl-serin"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        plugins.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = tokio::process::Command::new("kubectl")
        .env("PATH", path)
        .args(["serin", "status", "podinfo", "-n", ns, "--kubeconfig"])
        .arg(world.stack.kubeconfig_path())
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("Succeeded"),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, _, err) = world.cli(&["promote", "nothere", "-n", ns]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("Canary {ns}/nothere not found")),
        "{err}"
    );
}

/// `serin loadtester` on a free port, killed with the test.
struct LoadTester {
    child: tokio::process::Child,
    url: String,
    _log: tempfile::NamedTempFile,
}

impl LoadTester {
    async fn start() -> LoadTester {
        let log = tempfile::NamedTempFile::new().unwrap();
        // Flagger's `helm` and `kubectl` tasks run those binaries from the PATH.
        let helm = serin_testkit::helm_binary();
        let helm_dir = helm.parent().unwrap().to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(helm_dir).chain(std::env::split_paths(&path)))
                .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_serin"))
            .args(["loadtester", "--port", "0"])
            .env("PATH", path)
            .stderr(log.reopen().unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut port = None;
        wait_until(Duration::from_secs(10), "the load tester's port", || {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            port = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("port="))
                .map(String::from);
            let found = port.is_some();
            async move { found }
        })
        .await;
        LoadTester {
            child,
            url: format!("http://127.0.0.1:{}", port.unwrap()),
            _log: log,
        }
    }

    async fn post(&self, ns: &str, path: &str) {
        let body = json!({"name": "podinfo", "namespace": ns});
        let (status, _) =
            serin_testkit::http::request("POST", &format!("{}{path}", self.url), Some(&body)).await;
        assert_eq!(status, 202, "{path}");
    }
}

async fn flaggers_webhook_pattern_runs_through_serin_loadtester(cp: ControlPlane) {
    let tester = LoadTester::start().await;
    let app = Receiver::start(200).await;
    let marker = tempfile::tempdir().unwrap();
    let pre = marker.path().join("pre-rollout-ran");
    let world = world(cp).await;
    let ns = world.ns();
    initialized(&world, "podinfo", 3).await;
    world
        .apply(
            &world.configmaps(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "smoke"}}),
        )
        .await;
    let kubeconfig = world.stack.kubeconfig_path().display().to_string();
    let mut c = canary("podinfo").iterations(3).build();
    c["spec"]["analysis"]["webhooks"] = json!([
        {"name": "gate", "type": "confirm-rollout", "url": format!("{}/gate/check", tester.url)},
        {"name": "acceptance", "type": "pre-rollout", "url": format!("{}/", tester.url),
         "metadata": {"type": "cmd", "cmd": format!("touch {}", pre.display())}},
        // Flagger's blocking task types, run by the binaries on the load tester's PATH: a
        // failure would fail the pre-rollout check and roll the release back.
        {"name": "smoke", "type": "pre-rollout", "url": format!("{}/", tester.url),
         "metadata": {"type": "kubectl", "cmd": format!(
             "--kubeconfig {kubeconfig} annotate configmap smoke -n {ns} smoke=passed")}},
        {"name": "chart", "type": "pre-rollout", "url": format!("{}/", tester.url),
         "metadata": {"type": "helmv3", "cmd": format!("--kubeconfig {kubeconfig} list -n {ns}")}},
        {"name": "rollback", "type": "rollback", "url": format!("{}/rollback/check", tester.url)},
        {"name": "load", "type": "rollout", "url": format!("{}/", tester.url),
         "metadata": {"cmd": format!("hey -z 1m -q 20 -c 1 {}", app.url)}}
    ]);
    world.apply(&world.canaries(), c).await;
    world.wait_observed("podinfo").await;

    // The release waits at the closed gate until it is opened, then runs and promotes.
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Waiting, LONG).await;
    // Held, not slow: the closed gate is asked again and the release still waits.
    world
        .wait_event_count("podinfo", "waiting for approval gate", 2, LONG)
        .await;
    assert_eq!(world.phase("podinfo").await, Phase::Waiting);
    tester.post(ns, "/gate/open").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert!(pre.exists(), "the pre-rollout cmd task ran");
    let smoke = world.configmaps().get("smoke").await.unwrap();
    assert_eq!(
        smoke.metadata.annotations.unwrap_or_default().get("smoke"),
        Some(&"passed".to_string()),
        "the kubectl task ran"
    );
    wait_until(LONG, "load from the built-in hey", || async {
        app.headers.lock().await.len() >= 5
    })
    .await;

    // An open rollback gate aborts the next release.
    world.set_image("podinfo", "app", "podinfo:6.0.2").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    tester.post(ns, "/rollback/open").await;
    world.wait_phase("podinfo", Phase::Failed, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    drop(tester.child);
}

serin_testkit::on_every_control_plane!(
    virtual_time:
    commands_steer_a_release_without_editing_the_spec,
    ; real_time:
    flaggers_webhook_pattern_runs_through_serin_loadtester,
);
