//! The controller's command line as Flagger's chart gives it: `-version` prints the version,
//! JSON logs by default (as Flagger's), a separate mesh cluster refused at start, and each
//! cause of an error said once.

use std::process::{Command, Output};

use crate::text;

fn serin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_prints_the_version_and_exits() {
    for flag in ["-version", "--version"] {
        let out = serin(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).trim(),
            format!("serin {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn a_flagger_argument_list_logs_json_and_notes_the_flags_without_effect() {
    let out = serin(&["-kubeconfig=/nonexistent/kubeconfig", "-threadiness", "4"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let note = stderr
        .lines()
        .find(|l| l.contains("has no effect"))
        .unwrap_or_else(|| panic!("no note on -threadiness:\n{stderr}"));
    let line: serde_json::Value = serde_json::from_str(note).unwrap();
    assert_eq!(line["level"], "INFO");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("`-threadiness 4`")
    );

    let out = serin(&[
        "-kubeconfig=/nonexistent/kubeconfig",
        "-threadiness=4",
        "-zap-encoding=console",
    ]);
    let stderr = text(&out.stderr);
    let note = stderr
        .lines()
        .find(|l| l.contains("has no effect"))
        .unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(note).is_err(),
        "{note}"
    );
}

#[test]
fn a_separate_mesh_cluster_is_refused_at_start() {
    let out = serin(&[
        "-kubeconfig=/tmp/workloads",
        "-kubeconfig-service-mesh=/tmp/mesh",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--kubeconfig-service-mesh /tmp/mesh")
            && stderr.contains("does not support a separate mesh cluster"),
        "{stderr}"
    );
}

#[test]
fn each_cause_of_an_error_is_said_once() {
    let out = serin(&["controller", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("serin: --kubeconfig /nonexistent/kubeconfig: cannot read"),
        "{stderr}"
    );
    assert_eq!(last.matches("os error 2").count(), 1, "{last}");
}
