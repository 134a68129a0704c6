//! Flagger's chart, unchanged, with serin's image: its probes `exec` a `wget` command, which
//! the image links to the serin binary. Run here as the probes run it (the binary started
//! under the name `wget`), against a server standing in for the controller's `/healthz`.

use std::process::Command;

use serde_json::Value;
use serin_stack::testing::fake_http::{FakeServer, Response};

/// A probe command of the fixture, its URL pointed at `authority`: its exit code.
fn probe(command: &[String], wget: &std::path::Path, authority: &str) -> Option<i32> {
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| a.replace("localhost:8080", authority))
        .collect();
    Command::new(wget).args(&args).status().unwrap().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaggers_probe_commands_pass_on_a_healthy_controller_only() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(serin_testkit::workspace_file(
            "tests/fixtures/flagger-chart-probes.json",
        ))
        .unwrap(),
    )
    .unwrap();
    // The image's link, as in the Dockerfile.
    let dir = tempfile::tempdir().unwrap();
    let wget = dir.path().join("wget");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_serin"), &wget).unwrap();

    let healthy = FakeServer::start(|r| match r.path.as_str() {
        "/healthz" => Response::text(200, "text/plain", "OK"),
        _ => Response::text(404, "text/plain", "no"),
    })
    .await;
    let wedged = FakeServer::start(|_| Response::text(503, "text/plain", "wedged")).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_at = closed.local_addr().unwrap().to_string();
    drop(closed);

    for probe_name in ["readinessProbe", "livenessProbe"] {
        let command: Vec<String> = serde_json::from_value(fixture[probe_name].clone()).unwrap();
        assert_eq!(command[0], "wget", "{probe_name}");
        let authority = |s: &FakeServer| {
            s.url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        };
        assert_eq!(
            probe(&command, &wget, &authority(&healthy)),
            Some(0),
            "{probe_name}: healthy"
        );
        assert_eq!(
            probe(&command, &wget, &authority(&wedged)),
            Some(1),
            "{probe_name}: 503"
        );
        assert_eq!(
            probe(&command, &wget, &closed_at),
            Some(1),
            "{probe_name}: nothing listening"
        );
    }
}
