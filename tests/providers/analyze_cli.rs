#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `serin analyze` as a user runs it: the binary, a kubeconfig of the API emulator, a Canary
//! file, and a Prometheus (scripted) answering the builtin queries.

// The stack's own test helpers (podinfo layout, CRDs, object creation).
use serin_stack::testing as common;

use std::process::Output;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use serin_stack::testing::fake_http::{FakeServer, Response};

const CANARY: &str = "\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: default
spec:
  provider: istio
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 10s
    threshold: 2
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
        interval: 1m
      - name: request-duration
        thresholdRange: {max: 500}
        interval: 30s
";

/// Runs `serin analyze` against a Prometheus answering `success_rate` and 120 ms.
async fn analyze(success_rate: &'static str) -> Output {
    let stack = serin_stack::Stack::start(serin_stack::StackConfig::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(kube::Config::new(stack.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in serin::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let prometheus = FakeServer::start(move |request| {
        let query = request.query.get("query").cloned().unwrap_or_default();
        let value = if query.contains("istio_requests_total") {
            success_rate
        } else {
            "120.4"
        };
        Response::json(
            200,
            json!({"status": "success", "data": {"resultType": "vector",
                "result": [{"metric": {}, "value": [1.0, value]}]}}),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canary.yaml");
    std::fs::write(&file, CANARY).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_serin"));
    command
        .arg("analyze")
        .arg("-f")
        .arg(&file)
        .arg("--kubeconfig")
        .arg(stack.kubeconfig_path())
        .arg("--metrics-server")
        .arg(&prometheus.url);
    // Blocking wait off the runtime that serves the emulator and the fake Prometheus.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    stack.shutdown().await;
    output
}

#[tokio::test]
async fn a_healthy_canary_prints_a_passing_table_and_exits_0() {
    let output = analyze("99.5").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "Canary default/podinfo");
    assert!(lines[1].starts_with("METRIC"), "{stdout}");
    let words = |line: &str| {
        line.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[2]),
        [
            "request-success-rate",
            "prometheus",
            "99.50%",
            ">=",
            "99%",
            "pass"
        ]
    );
    assert_eq!(
        words(lines[3]),
        [
            "request-duration",
            "prometheus",
            "120ms",
            "<=",
            "500ms",
            "pass"
        ]
    );
    assert!(
        stdout.contains("request-success-rate: sum(rate(istio_requests_total{reporter=\"destination\", destination_workload_namespace=\"default\""),
        "{stdout}"
    );
    assert!(stdout.contains("[30s]"), "{stdout}");
    assert!(stdout.trim_end().ends_with("result: pass"), "{stdout}");
}

#[tokio::test]
async fn a_faulty_canary_prints_the_failing_value_and_exits_1() {
    let output = analyze("69.7").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("request-success-rate "))
        .unwrap();
    assert!(
        row.contains("69.70%") && row.trim_end().ends_with("fail"),
        "{row}"
    );
    assert!(
        stdout.contains("result: fail: success rate 69.70% < 99%"),
        "{stdout}"
    );
}

#[test]
fn an_unreadable_file_exits_2() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["analyze", "-f", "/nonexistent/canary.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("canary.yaml"));
}

/// `serin analyze` on the local stack: the traffic world sends 50 requests/s to `podinfo`,
/// split 50/50 between a healthy `podinfo-primary` and a `podinfo` failing 30 %, and the real
/// Prometheus scrapes it. A canary of the primary passes, one of `podinfo` fails.
#[tokio::test]
async fn on_the_local_stack_a_healthy_canary_passes_and_a_faulty_one_fails() {
    let scenario = serin_stack::Scenario::parse(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: istio\n  services:\n    - name: podinfo\n      rate: 50\n",
    )
    .unwrap();
    let stack = serin_stack::Stack::start(serin_stack::StackConfig {
        scenario,
        prometheus: true,
        ..serin_stack::StackConfig::default()
    })
    .await
    .unwrap();
    let client = common::client(&stack);
    common::podinfo_split_by_istio(&client, "podinfo:6.0.0", "podinfo:6.0.1-faulty").await;
    let dir = tempfile::tempdir().unwrap();
    let run = |target: &str| {
        let file = dir.path().join(format!("{target}.yaml"));
        std::fs::write(
            &file,
            CANARY.replace("name: podinfo}", &format!("name: {target}}}")),
        )
        .unwrap();
        let kubeconfig = stack.kubeconfig_path().to_path_buf();
        let prometheus = stack.prometheus_url().unwrap().to_string();
        async move {
            // Prometheus needs a few scrapes before the rates have values.
            let poll = serin_testkit::Poll::new(std::time::Duration::from_secs(30))
                .every(std::time::Duration::from_millis(500));
            loop {
                let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_serin"));
                command
                    .arg("analyze")
                    .arg("-f")
                    .arg(&file)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .arg("--metrics-server")
                    .arg(&prometheus);
                // Blocking wait off the runtime that serves the emulator.
                let output = tokio::task::spawn_blocking(move || command.output())
                    .await
                    .unwrap()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout).to_string();
                if !stdout.contains("no values found") || poll.expired() {
                    return (output.status.code(), stdout);
                }
                poll.next().await;
            }
        }
    };
    let (code, healthy) = run("podinfo-primary").await;
    assert_eq!(code, Some(0), "{healthy}");
    assert!(
        healthy.contains("destination_workload=~\"podinfo-primary\""),
        "{healthy}"
    );
    assert!(healthy.trim_end().ends_with("result: pass"), "{healthy}");
    let (code, faulty) = run("podinfo").await;
    assert_eq!(code, Some(1), "{faulty}");
    let row = faulty
        .lines()
        .find(|l| l.starts_with("request-success-rate "))
        .unwrap();
    assert!(
        row.contains("% ") && row.trim_end().ends_with("fail"),
        "{row}"
    );
    assert!(faulty.contains("result: fail: success rate 7"), "{faulty}");
    stack.shutdown().await;
}
