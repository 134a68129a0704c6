//! The `serin-stack up` command-line contract: `admin <url>` then `ready` on stdout, a
//! usable kubeconfig, exit 0 on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serin-stack did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
