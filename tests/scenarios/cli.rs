//! `serin controller` refuses bad flags with exit code 2 and a message naming the flag.

use std::process::Command;

use serin_testkit::Poll;

fn controller(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_serin"))
        .arg("controller")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_name_the_flag() {
    let (code, err) = controller(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--kubeconfig /nonexistent/kubeconfig: cannot read"),
        "{err}"
    );

    let (code, err) = controller(&["--kubeconfig-qps", "0", "--kubeconfig", "/dev/null"]);
    assert_eq!(code, 2);
    assert!(err.contains("--kubeconfig-qps"), "{err}");

    let (code, err) = controller(&["--mesh-provider", "envoy"]);
    assert_eq!(code, 2);
    assert!(err.contains("--mesh-provider"), "{err}");

    let (code, err) = controller(&["--log-level", "loud[", "--kubeconfig", "/dev/null"]);
    assert_eq!(code, 2);
    assert!(err.contains("--log-level"), "{err}");
}

/// A Flagger chart's argument list (single dashes, no subcommand) starts the controller,
/// logging JSON lines as Flagger does, with a note for the flag that has no effect.
#[tokio::test]
async fn a_flagger_argument_list_starts_the_controller() {
    let world = serin_testkit::WorldConfig::new(
        env!("CARGO_BIN_EXE_serin"),
        serin_testkit::ControlPlane::Emulator,
    )
    .without_controller()
    .start()
    .await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let kubeconfig = format!("-kubeconfig={}", world.stack.kubeconfig_path().display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args([
            kubeconfig.as_str(),
            "-mesh-provider=istio",
            "-metrics-server=http://prometheus:9090",
            "-enable-leader-election=true",
            "-leader-election-namespace",
            world.ns(),
            "-threadiness",
            "4",
            "-zap-encoding",
            "json",
            "-port=0",
        ])
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let poll =
        Poll::new(std::time::Duration::from_secs(20)).every(std::time::Duration::from_millis(100));
    let text = loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        if text.contains("became the leader") {
            break text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited with {status}: {text}");
        }
        assert!(!poll.expired(), "not started: {text}");
        poll.next().await;
    };
    let _ = child.kill();
    let _ = child.wait();
    // JSON lines, as Flagger logs.
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["mesh_provider"] == "istio"),
        "{text}"
    );
    let notes: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.contains("has no effect"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("`-threadiness 4`"), "{notes:?}");
}
