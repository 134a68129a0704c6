//! The `serin-stack up` command-line contract: `admin <url>` then `ready` on stdout, a
//! usable kubeconfig, exit 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn up_prints_ready_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let scenario = dir.path().join("scenario.yaml");
    std::fs::write(&scenario, "workloads:\n  nodes: 2\nfaults:\n  - verb: get\n    resource: secrets\n    errorRate: 1\n    status: 500\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args(["up", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--scenario")
        .arg(&scenario)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let admin = lines.next().unwrap().unwrap();
    assert!(admin.starts_with("admin http://127.0.0.1:"), "{admin}");
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args([
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .output()
        .expect("kubectl is required for this test");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Active",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let faulty = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["get", "secret", "x"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&faulty.stderr).contains("InternalError"),
        "{}",
        String::from_utf8_lossy(&faulty.stderr)
    );

    stop(&mut child, Duration::from_secs(10));
}

/// Reads stdout lines until `ready`.
fn lines_until_ready(child: &mut std::process::Child) -> Vec<String> {
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

fn terminate(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serin-stack did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answers(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_ok()
}

#[test]
fn up_prints_the_metric_endpoints_before_ready_and_stops_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args([
            "up",
            "--prometheus",
            "--datadog",
            "--newrelic",
            "--graphite",
            "--influxdb",
            "--mesh-provider",
            "istio",
            "--kubeconfig",
        ])
        .arg(dir.path().join("kubeconfig"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
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
    let url = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .to_string()
    };
    for name in ["prometheus", "datadog", "newrelic", "graphite", "influxdb"] {
        assert!(url(name).starts_with("http://127.0.0.1:"), "{lines:?}");
        assert!(answers(&url(name)), "{name} does not answer");
    }
    terminate(&mut child);
    assert!(
        !answers(&url("prometheus")),
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
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
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["-n", "test", "get", "metrictemplates", "-o", "name"])
        .output()
        .expect("kubectl is required for this test");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "metrictemplate.flagger.app/dd-error-rate\nmetrictemplate.flagger.app/error-rate\nmetrictemplate.flagger.app/nr-error-rate\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(&mut child);
}

#[test]
fn demo_installs_what_the_mesh_provider_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args(["demo", "--mesh-provider", "istio", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
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
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args([
            "wait",
            "--for=condition=established",
            "crd/virtualservices.networking.istio.io",
        ])
        .output()
        .expect("kubectl is required for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(&mut child);
}

#[test]
fn prometheus_does_not_outlive_a_killed_stack() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args(["up", "--prometheus", "--kubeconfig"])
        .arg(dir.path().join("kubeconfig"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_until_ready(&mut child);
    let prometheus = lines
        .iter()
        .find_map(|l| l.strip_prefix("prometheus "))
        .unwrap()
        .to_string();
    assert!(answers(&prometheus));
    child.kill().unwrap(); // SIGKILL: no cleanup in the stack
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers(&prometheus) {
        assert!(
            Instant::now() < deadline,
            "Prometheus outlived a killed stack"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin-stack"))
        .args(["up", "--control-plane", "real", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--scenario")
        .arg(&scenario)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let admin = lines.next().unwrap().unwrap();
    assert!(admin.starts_with("admin http://127.0.0.1:"), "{admin}");
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains("server: https://127.0.0.1:"), "{text}");

    // The nodes are registered right after `ready`; a moment may pass before both report.
    let deadline = Instant::now() + Duration::from_secs(20);
    let nodes = loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}"])
            .output()
            .expect("kubectl is required for this test");
        let nodes = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if nodes == "node-1=True node-2=True" || Instant::now() > deadline {
            break nodes;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(nodes, "node-1=True node-2=True");

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

/// SIGTERM, then waits (at most `within`) for a clean exit.
fn stop(child: &mut std::process::Child, within: Duration) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + within;
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serin-stack did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
