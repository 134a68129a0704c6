//! The committed CRDs are the generated ones, they are structural schemas an API server
//! accepts, and their names and printer columns are Flagger's.
//!
//! Regenerate `crds/crds.yaml` with `cargo run -- crds > crds/crds.yaml`, or
//! `SERIN_UPDATE_CRDS=1 cargo test --test offline crds`.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds/crds.yaml")
}

#[test]
fn committed_crds_are_the_generated_ones() {
    let generated = serin::api::crds_yaml().unwrap();
    let path = committed_path();
    if std::env::var_os("SERIN_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/crds.yaml is out of date with the Rust types in src/api: regenerate it with \
         `cargo run -- crds > crds/crds.yaml` (or `SERIN_UPDATE_CRDS=1 cargo test --test offline crds`) \
         and commit the result"
    );
}

#[test]
fn committed_yaml_parses_back_into_the_same_crds() {
    let generated = serin::api::crds();
    let text = std::fs::read_to_string(committed_path()).unwrap();
    let parsed: Vec<CustomResourceDefinition> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    assert_eq!(parsed, generated);
}

/// Kubernetes' structural schema rules (apiextensions `ValidateStructural` and friends), as
/// far as serin's schemas can break them.
fn check_structural(node: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "$schema",
        "const",
        "examples",
    ] {
        if obj.contains_key(forbidden) {
            errors.push(format!("{path}: has `{forbidden}`"));
        }
    }
    let typed = obj.get("type").and_then(Value::as_str).is_some();
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed && !int_or_string && !preserve {
        errors.push(format!("{path}: no `type`"));
    }
    if let Some(t) = obj.get("type")
        && !t.is_string()
    {
        errors.push(format!("{path}: `type` must be a single string, got {t}"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        errors.push(format!("{path}: both properties and additionalProperties"));
    }
    for combinator in ["anyOf", "oneOf", "allOf", "not"] {
        if let Some(sub) = obj.get(combinator) {
            check_value_validation(sub, &format!("{path}.{combinator}"), errors);
        }
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array) {
        let t = obj.get("type").and_then(Value::as_str).unwrap_or("");
        for v in values {
            let ok = match t {
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => false,
            };
            if !ok {
                errors.push(format!("{path}: enum value {v} is not a {t}"));
            }
        }
    }
    if let Some(required) = obj.get("required").and_then(Value::as_array) {
        let props = obj.get("properties").and_then(Value::as_object);
        for r in required {
            let name = r.as_str().unwrap_or_default();
            if props.and_then(|p| p.get(name)).is_none() {
                errors.push(format!("{path}: required `{name}` is not a property"));
            }
        }
    }
    if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys = obj["x-kubernetes-list-map-keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let item_required = obj["items"]["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for k in keys {
            if !item_required.contains(&k) {
                errors.push(format!("{path}: list-map key {k} is not required in items"));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            check_structural(sub, &format!("{path}.{name}"), errors);
        }
    }
    if let Some(additional) = obj.get("additionalProperties") {
        if additional.is_object() {
            check_structural(additional, &format!("{path}.*"), errors);
        } else {
            errors.push(format!("{path}: additionalProperties must be a schema"));
        }
    }
    if let Some(items) = obj.get("items") {
        if items.is_object() {
            check_structural(items, &format!("{path}[]"), errors);
        } else {
            errors.push(format!("{path}: items must be a single schema"));
        }
    }
    if obj.get("type").and_then(Value::as_str) == Some("array") && !obj.contains_key("items") {
        errors.push(format!("{path}: array without items"));
    }
}

/// Inside anyOf/oneOf/allOf/not only value validations are allowed: no types, defaults,
/// descriptions or nullability.
fn check_value_validation(node: &Value, path: &str, errors: &mut Vec<String>) {
    match node {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value_validation(item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(obj) => {
            for forbidden in [
                "type",
                "description",
                "default",
                "nullable",
                "additionalProperties",
            ] {
                if obj.contains_key(forbidden) {
                    errors.push(format!("{path}: `{forbidden}` inside a value validation"));
                }
            }
            for sub in obj.values() {
                if sub.is_object() || sub.is_array() {
                    check_value_validation(sub, path, errors);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn every_schema_is_structural() {
    for crd in serin::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let json = serde_json::to_value(&crd).unwrap();
        let versions = json["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{name}");
        let schema = &versions[0]["schema"]["openAPIV3Schema"];
        let mut errors = Vec::new();
        check_structural(schema, &name, &mut errors);
        assert!(
            errors.is_empty(),
            "{name} is not structural:\n{}",
            errors.join("\n")
        );
        // Not a single reference or composition anywhere.
        let text = json.to_string();
        for needle in ["\"$ref\"", "\"anyOf\"", "\"oneOf\"", "\"allOf\""] {
            assert!(!text.contains(needle), "{name} contains {needle}");
        }
    }
}

/// Every optional property is nullable (so `field: null` and a missing field mean the same),
/// every required one is not.
#[test]
fn optional_properties_are_nullable_and_required_ones_are_not() {
    fn walk(node: &Value, path: &str, errors: &mut Vec<String>) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            if let Some(items) = node.get("items") {
                walk(items, &format!("{path}[]"), errors);
            }
            if let Some(additional) = node.get("additionalProperties") {
                walk(additional, &format!("{path}.*"), errors);
            }
            return;
        };
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, sub) in props {
            let nullable = sub.get("nullable") == Some(&Value::Bool(true));
            let has_default = sub.get("default").is_some();
            let is_required = required.contains(&name.as_str());
            if is_required && nullable {
                errors.push(format!("{path}.{name}: required but nullable"));
            }
            if !is_required && !nullable && !has_default {
                errors.push(format!("{path}.{name}: optional but not nullable"));
            }
            walk(sub, &format!("{path}.{name}"), errors);
        }
    }
    for crd in serin::api::crds() {
        let json = serde_json::to_value(&crd).unwrap();
        let schema = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut errors = Vec::new();
        for part in ["spec", "status"] {
            walk(&schema["properties"][part], part, &mut errors);
        }
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
}

#[test]
fn names_and_printer_columns_are_flaggers() {
    // (kind, plural, singular, printer columns as (name, type, jsonPath, priority))
    type Columns = &'static [(&'static str, &'static str, &'static str, i32)];
    let expected: [(&str, &str, &str, Columns); 3] = [
        (
            "Canary",
            "canaries",
            "canary",
            &[
                ("Status", "string", ".status.phase", 0),
                ("Weight", "string", ".status.canaryWeight", 0),
                ("Suspended", "boolean", ".spec.suspend", 1),
                ("FailedChecks", "string", ".status.failedChecks", 1),
                ("Interval", "string", ".spec.analysis.interval", 1),
                ("Mirror", "boolean", ".spec.analysis.mirror", 1),
                ("StepWeight", "string", ".spec.analysis.stepWeight", 1),
                ("StepWeights", "string", ".spec.analysis.stepWeights", 1),
                ("MaxWeight", "string", ".spec.analysis.maxWeight", 1),
                (
                    "LastTransitionTime",
                    "string",
                    ".status.lastTransitionTime",
                    0,
                ),
            ],
        ),
        (
            "MetricTemplate",
            "metrictemplates",
            "metrictemplate",
            &[("Provider", "string", ".spec.provider.type", 0)],
        ),
        (
            "AlertProvider",
            "alertproviders",
            "alertprovider",
            &[("Type", "string", ".spec.type", 0)],
        ),
    ];
    let crds = serin::api::crds();
    assert_eq!(crds.len(), expected.len());
    for (crd, (kind, plural, singular, columns)) in crds.iter().zip(expected) {
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.flagger.app").as_str())
        );
        assert_eq!(crd.spec.group, "flagger.app");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.singular.as_deref(), Some(singular));
        // Flagger's CRDs declare no short names; `kubectl get canary` works through the
        // singular name.
        assert_eq!(crd.spec.names.short_names, None, "{kind}");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["all".to_owned()][..])
        );
        assert_eq!(
            crd.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("helm.sh/resource-policy")),
            Some(&"keep".to_owned())
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1beta1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let actual: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.type_.as_str(),
                    c.json_path.as_str(),
                    c.priority.unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(actual, columns, "{kind}");
    }
}

#[test]
fn canary_schema_requires_what_flagger_requires() {
    let json = serde_json::to_value(serin::api::crds()[0].clone()).unwrap();
    let spec = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Flagger's CRD requires these two only: a Knative Canary has no `service`.
    assert_eq!(required, ["analysis", "targetRef"]);
    assert_eq!(
        spec["properties"]["service"]["required"],
        serde_json::json!(["port"])
    );
    assert_eq!(
        spec["properties"]["targetRef"]["required"],
        serde_json::json!(["apiVersion", "kind", "name"])
    );
    let provider = &spec["properties"]["provider"];
    assert_eq!(provider["enum"].as_array().unwrap().len(), 19);
    assert!(
        provider["enum"]
            .as_array()
            .unwrap()
            .contains(&"gatewayapi:v1".into())
    );
    assert_eq!(
        spec["properties"]["service"]["properties"]["targetPort"]["x-kubernetes-int-or-string"],
        true
    );
}

/// The node at `path` (`spec.service.gatewayRefs[].group`) below a schema.
fn schema_at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(schema, |node, part| {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        let node = &node["properties"][name];
        if items { &node["items"] } else { node }
    })
}

/// The fields of Flagger's Canary schema kept as facts in `tests/fixtures/`: each type,
/// default, enum, pattern, length bound and required list is the same in serin's.
#[test]
fn canary_fields_have_flaggers_defaults_enums_and_required_lists() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(serin_testkit::workspace_file(
            "tests/fixtures/flagger-canary-fields.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let json = serde_json::to_value(serin::api::crds()[0].clone()).unwrap();
    let schema = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut differences = Vec::new();
    for field in fixture["fields"].as_array().unwrap() {
        let path = field["path"].as_str().unwrap();
        let node = schema_at(schema, path);
        if node.is_null() {
            differences.push(format!("{path}: missing"));
            continue;
        }
        for key in [
            "type",
            "default",
            "enum",
            "pattern",
            "minLength",
            "maxLength",
            "required",
        ] {
            if let Some(expected) = field.get(key)
                && node.get(key) != Some(expected)
            {
                differences.push(format!(
                    "{path}: {key} {:?}, Flagger's {expected}",
                    node.get(key)
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
}
