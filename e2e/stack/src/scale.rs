//! The scale subresource: an autoscaling/v1 Scale view of objects that have one.

use crate::error::{ApiError, ApiResult, Cause};
use crate::jsonpath;
use crate::registry::ResourceType;
use crate::selector::selector_string;
use serde_json::{Value, json};

/// autoscaling/v1 Scale view of an object with a scale subresource.
pub fn of(rt: &ResourceType, obj: &Value) -> Value {
    let Some(paths) = &rt.scale else {
        return json!({});
    };
    let first = |p: &str| jsonpath::select(obj, p).into_iter().next().cloned();
    let spec = first(&paths.spec_replicas).unwrap_or(json!(0));
    let status = first(&paths.status_replicas).unwrap_or(json!(0));
    let selector = match &paths.label_selector {
        Some(p) => first(p).and_then(|v| v.as_str().map(String::from)),
        None => obj.pointer("/spec/selector").map(selector_string),
    };
    let m = &obj["metadata"];
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": spec},
        "status": {"replicas": status},
    });
    if let Some(s) = selector {
        scale["status"]["selector"] = json!(s);
    }
    scale
}

/// The object with the replicas of a (possibly patched) Scale written into it.
pub fn to_object(rt: &ResourceType, old: &Value, scale: &Value) -> ApiResult<Value> {
    let Some(paths) = &rt.scale else {
        return Err(ApiError::not_found(&rt.group, &rt.plural, "scale"));
    };
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            old.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "spec.replicas".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            }],
        ));
    }
    let mut new = old.clone();
    jsonpath::set_dotted(&mut new, &paths.spec_replicas, replicas);
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    Ok(new)
}
