//! `serin check` as users run it: on the examples, the invalid examples (each names the paths
//! it must be rejected for), unreadable and non-YAML files, stdin and directories.

// Test helpers outside `#[test]` functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::text;

fn serin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_serin"))
}

/// `serin check -f -` with `manifests` on stdin.
fn check_stdin(manifests: &str) -> Output {
    let mut child = serin()
        .args(["check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn check(args: &[&std::ffi::OsStr]) -> Output {
    serin().arg("check").arg("-f").args(args).output().unwrap()
}

#[test]
fn every_example_is_valid() {
    let files = yaml_files(&examples());
    assert!(files.len() >= 10, "examples/ lost its manifests: {files:?}");
    for file in files {
        let out = check(&[file.as_os_str()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} should be valid:\n{}{}",
            file.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).ends_with("all valid\n"));
    }
}

#[test]
fn every_invalid_example_is_rejected_for_the_expected_paths() {
    let files = yaml_files(&examples().join("invalid"));
    assert!(
        files.len() >= 10,
        "examples/invalid/ lost its manifests: {files:?}"
    );
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let expected: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("# serin-check-expect:"))
            .map(str::trim)
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# serin-check-expect: PATH` line",
            file.display()
        );
        let out = check(&[file.as_os_str()]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} should be rejected:\n{stdout}{}",
            file.display(),
            text(&out.stderr)
        );
        let prefix = format!("{}: ", file.display());
        for path in expected {
            // FILE: Kind/name: PATH: message
            let found = stdout.lines().any(|line| {
                line.strip_prefix(&prefix)
                    .and_then(|rest| rest.split_once(": "))
                    .is_some_and(|(object, rest)| {
                        object.contains('/') && rest.starts_with(&format!("{path}: "))
                    })
            });
            assert!(
                found,
                "{}: expected a problem at `{path}`, got:\n{stdout}",
                file.display()
            );
        }
    }
}

#[test]
fn all_problems_of_all_files_are_printed() {
    let files = yaml_files(&examples().join("invalid"));
    if files.len() < 2 {
        return;
    }
    let args: Vec<&std::ffi::OsStr> = files.iter().map(|f| f.as_os_str()).collect();
    let out = check(&args);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let problem_lines = stdout.lines().filter(|l| l.contains(".yaml: ")).count();
    assert!(problem_lines >= files.len(), "{stdout}");
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!("{} files, ", files.len())),
        "{summary}"
    );
}

#[test]
fn a_missing_file_exits_2_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = check(&[missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&missing.display().to_string()));
}

#[test]
fn directories_are_walked_for_yaml_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), valid_alert_provider()).unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "not yaml: [").unwrap();
    let out = check(&[dir.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "1 file, 1 object: all valid\n");
}

#[test]
fn an_unreadable_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary.yaml");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let out = check(&[path.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("binary.yaml"));
}

#[test]
fn a_non_yaml_file_exits_2_and_the_others_are_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: flagger.app/v1beta1\nkind: [Canary\n  : :\n",
    )
    .unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, valid_alert_provider()).unwrap();
    let out = check(&[bad.as_os_str(), good.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("YAML"), "{stderr}");
    assert!(text(&out.stdout).contains("2 files, 1 object"));
}

#[test]
fn other_kinds_are_skipped_and_stdin_is_read() {
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n---\n{}",
        valid_alert_provider()
    );
    let out = check_stdin(&manifest);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 file, 1 object: all valid\n");
}

#[test]
fn the_mesh_provider_flag_sets_the_default_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.yaml");
    std::fs::write(
        &path,
        "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis: {interval: 30s, threshold: 2, stepWeight: 20}
",
    )
    .unwrap();
    let out = check(&[path.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = serin()
        .args(["check", "--mesh-provider", "nginx", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!(
            "{}: Canary/podinfo: spec.ingressRef: ",
            path.display()
        )),
        "{}",
        text(&out.stdout)
    );
    let out = serin()
        .args(["check", "--mesh-provider", "envoy", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap rejects an unknown provider"
    );
}

fn valid_alert_provider() -> &'static str {
    "apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata:
  name: slack
spec:
  type: slack
  address: https://hooks.slack.com/services/x
"
}

/// The manifests the documentation shows (every ```yaml block of docs/) pass `serin check`:
/// a tutorial that does not work as written is a bug.
#[test]
fn the_documentations_manifests_are_valid() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut files = Vec::new();
    for dir in [docs.clone(), docs.join("tutorials")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    let mut canaries = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            match (&mut current, line.trim_start()) {
                (None, "```yaml") => current = Some(String::new()),
                (Some(_), "```") => blocks.extend(current.take()),
                (Some(block), _) => {
                    block.push_str(line);
                    block.push('\n');
                }
                _ => {}
            }
        }
        let manifests: Vec<&String> = blocks
            .iter()
            .filter(|b| b.contains("apiVersion: flagger.app/"))
            .collect();
        if manifests.is_empty() {
            continue;
        }
        canaries += manifests
            .iter()
            .filter(|b| b.contains("kind: Canary"))
            .count();
        let stream = manifests
            .iter()
            .map(|b| b.as_str())
            .collect::<Vec<_>>()
            .join("---\n");
        let out = check_stdin(&stream);
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        canaries >= 4,
        "a Canary per provider tutorial, found {canaries}"
    );
}
