//! The real control plane (kube-local) as a platform engineer meets it, through kubectl:
//! serin's CRDs install, the API server validates Canaries against their schema, and a
//! release runs real pods (the stack's kubelet stand-in) that the real garbage collector
//! removes with the Canary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use serin_core::Phase;
use serin_testkit::LONG;
use serin_testkit::{ControlPlane, WorldConfig, selected, wait_until, workspace_file};

/// Runs kubectl against `kubeconfig`: (success, stdout, stderr).
fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("kubectl (scripts/setup installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_api_server_validates_canaries_against_the_crd_schema() {
    if !selected(ControlPlane::Real) {
        return;
    }
    let stack = serin_testkit::Stack::start(serin_testkit::StackConfig {
        control_plane: ControlPlane::Real,
        ..Default::default()
    })
    .await
    .unwrap();
    let kc = stack.kubeconfig_path();
    let cache = tempfile::tempdir().unwrap();
    let k = |args: &[&str]| kubectl(kc, cache.path(), args);
    // The version it was built from, as a release build reports it (Helm's kubeVersion
    // constraints, the chart's among them, read it).
    let (ok, out, err) = k(&["version", "-o", "json"]);
    assert!(ok, "{err}");
    let version: Value = serde_json::from_str(&out).unwrap();
    let server = &version["serverVersion"];
    assert_eq!(
        (&server["major"], &server["minor"]),
        (&Value::from("1"), &Value::from("37"))
    );
    assert!(
        server["gitVersion"].as_str().unwrap().starts_with("v1.37."),
        "{server}"
    );
    let crds = workspace_file("crds/crds.yaml");
    let (ok, _, err) = k(&["apply", "-f", crds.to_str().unwrap()]);
    assert!(ok, "serin's CRDs install on a real API server: {err}");
    let (ok, _, err) = k(&[
        "wait",
        "--for=condition=established",
        "crd/canaries.flagger.app",
        "--timeout=30s",
    ]);
    assert!(ok, "{err}");
    // The namespaces the examples live in.
    for ns in ["test", "flagger-system"] {
        let (ok, _, err) = k(&["create", "namespace", ns]);
        assert!(ok, "{err}");
    }

    let invalid = workspace_file("examples/invalid/canary-missing-target-ref.yaml");
    let (ok, _, err) = k(&["apply", "-f", invalid.to_str().unwrap()]);
    assert!(!ok, "a Canary without targetRef is refused");
    assert!(
        err.contains("spec.targetRef: Required value"),
        "the schema's message names the field: {err}"
    );
    // The traffic policy's oneOf, a CEL rule of the CRD.
    let two = workspace_file("examples/invalid/canary-traffic-policy-two-load-balancers.yaml");
    let (ok, _, err) = k(&["apply", "-f", two.to_str().unwrap()]);
    assert!(!ok, "a load balancer both simple and hashing is refused");
    assert!(
        err.contains("set exactly one of simple and consistentHash"),
        "{err}"
    );
    let valid = workspace_file("examples/podinfo-kubernetes-blue-green.yaml");
    let (ok, out, err) = k(&["apply", "-f", valid.to_str().unwrap()]);
    assert!(ok, "a valid Canary is accepted: {err}");
    assert!(out.contains("canary.flagger.app/podinfo created"), "{out}");

    // Every example (Flagger's documented shapes: durations such as 1m30s, a Knative Canary
    // without spec.service, ...) is accepted by a real API server with serin's CRDs.
    let mut examples: Vec<_> = std::fs::read_dir(workspace_file("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 10, "{examples:?}");
    for example in examples {
        let (ok, _, err) = k(&["apply", "--dry-run=server", "-f", example.to_str().unwrap()]);
        assert!(ok, "{} refused by the API server: {err}", example.display());
    }
    stack.shutdown().await;
}

/// Running, Ready pods of `app` among `pods`, a namespace's as `kubectl get pods` lists them.
fn ready_pods(pods: &Value, app: &str) -> usize {
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

#[tokio::test]
async fn a_release_runs_real_pods_and_the_garbage_collector_cleans_up() {
    if !selected(ControlPlane::Real) {
        return;
    }
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Real)
        .start()
        .await;
    let kc = world.stack.kubeconfig_path().to_path_buf();
    let cache = tempfile::tempdir().unwrap();
    let ns = world.ns();
    let pods = || {
        let (ok, out, err) = kubectl(&kc, cache.path(), &["get", "pods", "-n", ns, "-o", "json"]);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let mut canary = serin_testkit::canary("podinfo").iterations(4).build();
    let deployment = |image: &str| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{"name": "app", "image": image}]}}}})
    };
    world
        .apply(&world.deployments(), deployment("podinfo:6.0.0"))
        .await;
    world.apply(&world.canaries(), canary.take()).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    // During the analysis both versions run: the canary's pods and the primary's.
    wait_until(
        Duration::from_secs(30),
        "pods of both versions ready",
        || async {
            let p = pods();
            ready_pods(&p, "podinfo") == 2 && ready_pods(&p, "podinfo-primary") == 2
        },
    )
    .await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");

    world.delete_canary("podinfo").await;
    let deployments = world.deployments();
    wait_until(
        Duration::from_secs(60),
        "primary garbage collected",
        || async {
            deployments
                .get_opt("podinfo-primary")
                .await
                .unwrap()
                .is_none()
        },
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "the primary's pods gone",
        || async { ready_pods(&pods(), "podinfo-primary") == 0 },
    )
    .await;
    assert_eq!(ready_pods(&pods(), "podinfo"), 2, "the target serves again");
}
