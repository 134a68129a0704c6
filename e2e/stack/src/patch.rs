//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge
//! patch for built-in types.
//!
//! Strategic merge subset: lists named `containers`, `initContainers`, `ephemeralContainers`,
//! `env`, `volumes`, `imagePullSecrets` (key `name`), `ports` (`containerPort`, or `port` for
//! service ports), `volumeMounts` (`mountPath`), `conditions` (`type`), `ownerReferences`
//! (`uid`), `hostAliases` (`ip`) merge by key; `finalizers` merges as a set; other lists are
//! replaced. Directives: `$patch: replace|delete` (maps and list items), `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` (accepted, order kept as is).

use crate::error::{ApiError, ApiResult};
use crate::fields::{Shape, list_keys};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a merge, JSON or strategic patch to a copy of `target`.
pub fn apply_patch(target: &Value, kind: PatchType, body: &Value) -> ApiResult<Value> {
    let mut doc = target.clone();
    match kind {
        PatchType::Merge => {
            if !body.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, body);
        }
        PatchType::Json => {
            // As the API server's JSON patch library does, a `test` for null passes on a
            // missing path (kube-runtime's finalizer helper relies on this).
            let body = match body.as_array() {
                Some(ops) => Value::Array(
                    ops.iter()
                        .filter(|op| {
                            let null_test = op.get("op").and_then(Value::as_str) == Some("test")
                                && op.get("value").is_some_and(Value::is_null);
                            let missing = op
                                .get("path")
                                .and_then(Value::as_str)
                                .is_some_and(|p| doc.pointer(p).is_none());
                            !(null_test && missing)
                        })
                        .cloned()
                        .collect(),
                ),
                None => body.clone(),
            };
            let ops: json_patch::Patch = serde_json::from_value(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
        PatchType::Strategic => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            strategic(
                &mut doc,
                body,
                Shape {
                    builtin: true,
                    schema: None,
                    status_subresource: true,
                },
            );
        }
        PatchType::Apply => {
            return Err(ApiError::internal("apply patches are handled by apply.rs"));
        }
    }
    Ok(doc)
}

/// Strategic merge of `patch` into the map `target`.
pub fn strategic(target: &mut Value, patch: &Value, shape: Shape<'_>) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = pm.clone();
        replaced.remove("$patch");
        *target = Value::Object(strip_directives(replaced));
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = pm.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect()
    });
    for (k, pv) in pm {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        let Some(tm) = target.as_object_mut() else {
            return;
        };
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (tm.get_mut(field), pv.as_array()) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
            tm.remove(k);
            continue;
        }
        let child_shape = shape.child(k);
        match pv {
            Value::Object(_) => {
                let entry = tm.entry(k.clone()).or_insert(Value::Null);
                strategic(entry, pv, child_shape);
            }
            Value::Array(items) => {
                let existing = tm.remove(k);
                let merged = merge_list(k, existing, items, child_shape);
                tm.insert(k.clone(), merged);
            }
            _ => {
                tm.insert(k.clone(), pv.clone());
            }
        }
    }
    if let (Some(keep), Some(tm)) = (retain, target.as_object_mut()) {
        tm.retain(|k, _| keep.contains(k));
    }
}

fn merge_list(field: &str, existing: Option<Value>, patch: &[Value], shape: Shape<'_>) -> Value {
    let mut current = match existing {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let items = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .map(strip_value);
        return Value::Array(items.collect());
    }
    if field == "finalizers" {
        for p in patch {
            if !current.contains(p) {
                current.push(p.clone());
            }
        }
        return Value::Array(current);
    }
    let plain: Vec<Value> = patch
        .iter()
        .filter(|i| i.get("$patch").is_none())
        .cloned()
        .collect();
    let Some(keys) = list_keys(shape, field, &plain) else {
        return Value::Array(plain.into_iter().map(strip_value).collect());
    };
    let same = |a: &Value, b: &Value| keys.iter().all(|k| a.get(k) == b.get(k));
    for p in patch {
        let idx = current.iter().position(|c| same(c, p));
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (idx, delete) {
            (Some(i), true) => {
                current.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut current[i], p, shape.items()),
            (None, false) => current.push(strip_value(p.clone())),
        }
    }
    Value::Array(current)
}

fn strip_directives(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k, strip_value(v)))
        .collect()
}

fn strip_value(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_value).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b:2"}, {"name": "a", "$patch": "delete"}]}}}});
        let out = apply_patch(&target, PatchType::Strategic, &patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "b:2"}])
        );
    }

    #[test]
    fn strategic_replaces_plain_lists_and_deletes_nulls() {
        let target = json!({"spec": {"args": ["x"], "keep": 1, "drop": 2}});
        let patch = json!({"spec": {"args": ["y"], "drop": null}});
        let out = apply_patch(&target, PatchType::Strategic, &patch).unwrap();
        assert_eq!(out, json!({"spec": {"args": ["y"], "keep": 1}}));
    }

    #[test]
    fn strategic_directives() {
        let target = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "finalizers": ["a", "b"], "ports": [{"port": 80, "name": "http"}, {"port": 90}]}});
        let patch = json!({"spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "ports": [{"port": 80, "name": "web"}, {"$patch": "delete", "port": 90}],
            "meta": {"$patch": "replace", "only": 1}}});
        let out = apply_patch(&target, PatchType::Strategic, &patch).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["spec"]["finalizers"], json!(["b"]));
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "name": "web"}]));
        assert_eq!(out["spec"]["meta"], json!({"only": 1}));
    }

    #[test]
    fn json_patch_null_test_passes_on_missing_paths() {
        let ops = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        let out = apply_patch(&json!({"metadata": {}}), PatchType::Json, &ops).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
        let wrong = json!([{"op": "test", "path": "/metadata/name", "value": null}]);
        assert!(apply_patch(&json!({"metadata": {"name": "x"}}), PatchType::Json, &wrong).is_err());
    }

    #[test]
    fn json_patch_errors_are_422() {
        let err = apply_patch(
            &json!({}),
            PatchType::Json,
            &json!([{"op": "test", "path": "/a", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }
}
