//! `serin plan` end to end: the built binary on every example and on the sequences the
//! issue names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn serin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(args)
        .output()
        .expect("run serin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn canary_weights(json: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for tick in json["ticks"].as_array().unwrap() {
        let w = tick["canaryWeight"].as_u64().unwrap();
        if tick["phase"] == "Progressing" && w > 0 && out.last() != Some(&w) {
            out.push(w);
        }
    }
    out
}

fn plan_json(yaml: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canary.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (code, out, err) = serin(&["plan", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

fn canary_with(analysis: &str) -> String {
    format!(
        "apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service: {{port: 9898}}
  analysis:
    interval: 1m
    threshold: 5
{analysis}"
    )
}

#[test]
fn every_canary_example_plans_to_success() {
    let mut planned = 0;
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.contains("kind: Canary") {
            continue;
        }
        let (code, out, err) = serin(&["plan", "-f", file.to_str().unwrap(), "-o", "json"]);
        assert_eq!(code, 0, "{}: {out}{err}", file.display());
        let json: Value = serde_json::from_str(&out).unwrap();
        let ticks = json["ticks"].as_array().unwrap();
        assert_eq!(
            ticks.last().unwrap()["phase"],
            "Succeeded",
            "{}",
            file.display()
        );
        for tick in ticks {
            for key in ["phase", "canaryWeight", "primaryWeight", "iterations"] {
                assert!(tick.get(key).is_some(), "{key} missing in {tick}");
            }
            let sum =
                tick["canaryWeight"].as_u64().unwrap() + tick["primaryWeight"].as_u64().unwrap();
            assert_eq!(sum, 100);
        }
        let (code, out, _) = serin(&["plan", "-f", file.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert!(out.contains("Minimum wall time of a release"), "{out}");
        assert!(out.contains("Analyses before promotion: "), "{out}");
        planned += 1;
    }
    assert!(planned >= 12, "only {planned} Canary examples");
}

#[test]
fn max_weight_is_a_cap() {
    let json = plan_json(&canary_with("    stepWeight: 20\n    maxWeight: 50\n"));
    assert_eq!(canary_weights(&json), vec![20, 40, 50]);
    let after: Vec<&str> = json["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["phase"].as_str().unwrap())
        .skip_while(|p| *p == "Progressing")
        .collect();
    assert_eq!(after.first(), Some(&"Promoting"));
    assert_eq!(json["minDurationSeconds"], 190);
    // Nothing to check, nothing analysed; with a metric, one analysis per step.
    assert_eq!(json["analyses"], 0);
    let checked = plan_json(&canary_with(
        "    stepWeight: 20\n    maxWeight: 50\n    metrics:\n      - {name: request-success-rate, thresholdRange: {min: 99}}\n",
    ));
    assert_eq!(checked["analyses"], 3);
}

#[test]
fn step_weights_sequence() {
    let json = plan_json(&canary_with("    stepWeights: [1, 2, 10, 80]\n"));
    assert_eq!(canary_weights(&json), vec![1, 2, 10, 80]);
}

#[test]
fn invalid_canary_is_not_planned() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/invalid");
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).unwrap().contains("kind: Canary"))
        .unwrap();
    let (code, out, _) = serin(&["plan", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(": Canary/"), "{out}");
}

#[test]
fn unreadable_file_exits_2() {
    let (code, _, err) = serin(&["plan", "-f", "/nonexistent/canary.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/canary.yaml"), "{err}");
}
