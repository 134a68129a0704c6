#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every MetricTemplate shipped (examples/, metrics-templates/) renders with serin's template
//! engine: no syntax error, no unknown variable, nothing left unrendered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serin::analysis::template::{TemplateVars, render};
use serin::api::MetricTemplate;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "invalid") {
                yaml_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn templates() -> Vec<(PathBuf, MetricTemplate)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    yaml_files(&root.join("examples"), &mut files);
    yaml_files(&root.join("metrics-templates"), &mut files);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            if value["kind"] == "MetricTemplate" {
                out.push((file.clone(), serde_json::from_value(value).unwrap()));
            }
        }
    }
    out
}

#[test]
fn every_shipped_template_renders() {
    let vars = TemplateVars {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "podinfo".into(),
        ingress: "podinfo".into(),
        route: "podinfo".into(),
        interval: "1m".into(),
        // The templateVariables the examples' Canaries set.
        variables: BTreeMap::from([
            ("quantile".to_string(), "0.99".to_string()),
            ("reporter".to_string(), "destination".to_string()),
            ("cluster".to_string(), "prod-eu-1".to_string()),
        ]),
    };
    let templates = templates();
    assert!(templates.len() >= 30, "found only {}", templates.len());
    for (file, template) in templates {
        let name = template.metadata.name.unwrap_or_default();
        let rendered = render(&template.spec.query, &vars)
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()));
        assert!(
            !rendered.contains("{{") && !rendered.contains("}}") && !rendered.contains('\n'),
            "{}: {name}: {rendered}",
            file.display()
        );
    }
}
