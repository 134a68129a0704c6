//! The `serin-stack up` command-line contract: `admin <url>` then `ready` on stdout, a
//! usable kubeconfig, exit 0 on SIGTERM.

use serin_stack::testing::poll::Poll;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Starts `serin-stack args`, its stdout piped.
fn serin_stack(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `path` as an argument (temporary directories have UTF-8 names).
fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs kubectl against the kubeconfig in `dir`, with its discovery cache there too.
fn kubectl(dir: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .expect("kubectl is required for this test")
}

/// Reads stdout lines until `ready`.
fn lines_until_ready(child: &mut Child) -> Vec<String> {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let done = l == "ready";
        out.push(l);
        if done {
            return out;
        }
    }
    panic!("no ready line: {out:?}");
}

/// Asserts that stdout says `admin <url>`, then `ready`, and nothing else.
fn admin_then_ready(child: &mut Child) {
    let lines = lines_until_ready(child);
    assert!(lines[0].starts_with("admin http://127.0.0.1:"), "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
}

/// The URL a line `<name> <url>` of stdout gave.
fn url_of(lines: &[String], name: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap()
        .to_string()
}

fn answers(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_ok()
}

/// SIGTERM, then waits (at most `within`) for a clean exit.
fn stop(child: &mut Child, within: Duration) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = Poll::new("serin-stack to exit after SIGTERM", within)
        .try_until_blocking(|| child.try_wait().unwrap());
    let Ok(code) = exited else {
        let _ = child.kill();
        panic!("serin-stack did not exit after SIGTERM");
    };
    assert!(code.success(), "exit status {code}");
}

#[test]
fn up_prints_ready_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let scenario = dir.path().join("scenario.yaml");
    std::fs::write(&scenario, "workloads:\n  nodes: 2\nfaults:\n  - verb: get\n    resource: secrets\n    errorRate: 1\n    status: 500\n").unwrap();
    let mut child = serin_stack(&[
        "up",
        "--kubeconfig",
        arg(&kubeconfig),
        "--scenario",
        arg(&scenario),
    ]);
    admin_then_ready(&mut child);

    let out = kubectl(
        dir.path(),
        &[
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.status.phase}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Active",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let faulty = kubectl(dir.path(), &["get", "secret", "x"]);
    assert!(
        String::from_utf8_lossy(&faulty.stderr).contains("InternalError"),
        "{}",
        String::from_utf8_lossy(&faulty.stderr)
    );

    stop(&mut child, Duration::from_secs(10));
}

#[test]
fn up_prints_the_metric_endpoints_before_ready_and_stops_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = serin_stack(&[
        "up",
        "--prometheus",
        "--datadog",
        "--newrelic",
        "--graphite",
        "--influxdb",
        "--mesh-provider",
        "istio",
        "--kubeconfig",
        arg(&kubeconfig),
    ]);
    let lines = lines_until_ready(&mut child);
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "admin",
            "prometheus",
            "datadog",
            "newrelic",
            "graphite",
            "influxdb",
            "ready"
        ],
        "{lines:?}"
    );
    for name in ["prometheus", "datadog", "newrelic", "graphite", "influxdb"] {
        assert!(
            url_of(&lines, name).starts_with("http://127.0.0.1:"),
            "{lines:?}"
        );
        assert!(answers(&url_of(&lines, name)), "{name} does not answer");
    }
    stop(&mut child, Duration::from_secs(10));
    assert!(
        !answers(&url_of(&lines, "prometheus")),
        "Prometheus outlived the stack"
    );
}

#[test]
fn up_rejects_a_provider_the_world_cannot_follow() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args(["up", "--mesh-provider", "contour", "--kubeconfig"])
        .arg(dir.path().join("kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"contour\" is not emulated"), "{err}");
}

#[test]
fn demo_is_ready_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serin_stack(&["demo", "--dir", arg(dir.path())]);
    let lines = lines_until_ready(&mut child);
    let kubeconfig = dir.path().join("kubeconfig");
    assert!(
        lines.contains(&format!("kubeconfig {}", kubeconfig.display())),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("serin controller --kubeconfig")),
        "{lines:?}"
    );
    let canary = std::fs::read_to_string(dir.path().join("canary.yaml")).unwrap();
    assert!(
        canary.contains("kind: Canary") && canary.contains("templateRef: {name: error-rate}"),
        "{canary}"
    );
    let out = kubectl(
        dir.path(),
        &["-n", "test", "get", "metrictemplates", "-o", "name"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "metrictemplate.flagger.app/dd-error-rate\nmetrictemplate.flagger.app/error-rate\nmetrictemplate.flagger.app/nr-error-rate\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(&mut child, Duration::from_secs(10));
}

#[test]
fn demo_installs_what_the_mesh_provider_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serin_stack(&["demo", "--mesh-provider", "istio", "--dir", arg(dir.path())]);
    let lines = lines_until_ready(&mut child);
    assert!(
        lines.iter().any(|l| l.contains("--mesh-provider istio")),
        "{lines:?}"
    );
    let canary = std::fs::read_to_string(dir.path().join("canary.yaml")).unwrap();
    assert!(
        canary.contains("provider: istio") && canary.contains("stepWeight: 20"),
        "{canary}"
    );
    let out = kubectl(
        dir.path(),
        &[
            "wait",
            "--for=condition=established",
            "crd/virtualservices.networking.istio.io",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(&mut child, Duration::from_secs(10));
}

#[test]
fn prometheus_does_not_outlive_a_killed_stack() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = serin_stack(&["up", "--prometheus", "--kubeconfig", arg(&kubeconfig)]);
    let prometheus = url_of(&lines_until_ready(&mut child), "prometheus");
    assert!(answers(&prometheus));
    child.kill().unwrap(); // SIGKILL: no cleanup in the stack
    child.wait().unwrap();
    Poll::new(
        "Prometheus to go with a killed stack",
        Duration::from_secs(10),
    )
    .until_blocking(|| !answers(&prometheus));
}

/// `up --control-plane real`: kube-local behind the same contract, with the scenario's
/// nodes registered by the kubelet stand-in; SIGTERM stops the control plane too.
#[test]
fn up_on_the_real_control_plane() {
    if std::env::var("SERIN_CONTROL_PLANES").is_ok_and(|v| !v.contains("real")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let scenario = dir.path().join("scenario.yaml");
    std::fs::write(&scenario, "workloads:\n  nodes: 2\n").unwrap();
    let mut child = serin_stack(&[
        "up",
        "--control-plane",
        "real",
        "--kubeconfig",
        arg(&kubeconfig),
        "--scenario",
        arg(&scenario),
    ]);
    admin_then_ready(&mut child);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains("server: https://127.0.0.1:"), "{text}");

    // The nodes are registered right after `ready`; a moment may pass before both report.
    let ready = "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}";
    Poll::new("both nodes Ready", Duration::from_secs(20))
        .every(Duration::from_millis(200))
        .until_blocking(|| {
            let out = kubectl(dir.path(), &["get", "nodes", "-o", ready]);
            let nodes = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (nodes == "node-1=True node-2=True")
                .then_some(())
                .ok_or(nodes)
        });

    stop(&mut child, Duration::from_secs(30));
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let port = server.rsplit(':').next().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err(),
        "the API server stopped with the stack"
    );
}
