//! `meta.k8s.io/v1` Table output for `kubectl get`: NAME, printer columns, AGE.

use crate::jsonpath;
use crate::registry::{PrinterColumn, ResourceType};
use serde_json::{Value, json};
use std::sync::Arc;

fn columns(rt: &ResourceType, version: &str) -> Vec<PrinterColumn> {
    let col = |name: &str, type_: &str, path: &str, desc: &str| PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        description: desc.into(),
        priority: 0,
    };
    if rt.builtin && rt.plural == "events" {
        // As the API server prints events: newest-first facts, the name hidden (priority 1).
        let mut name = col("Name", "string", ".metadata.name", "");
        name.priority = 1;
        return vec![
            col(
                "Last Seen",
                "string",
                "",
                "Time since the event was last seen.",
            ),
            col("Type", "string", ".type", ""),
            col("Reason", "string", ".reason", ""),
            col("Object", "string", "", "The object this event is about."),
            col("Message", "string", ".message", ""),
            name,
        ];
    }
    let mut cols = vec![col(
        "Name",
        "string",
        ".metadata.name",
        "Name must be unique within a namespace.",
    )];
    let custom = rt
        .version(version)
        .map(|v| v.columns.clone())
        .unwrap_or_default();
    if !custom.is_empty() {
        cols.extend(custom);
        return cols;
    }
    match rt.plural.as_str() {
        "deployments" => {
            cols.push(col(
                "Ready",
                "string",
                "",
                "Ready replicas / desired replicas.",
            ));
            cols.push(col("Up-to-date", "integer", ".status.updatedReplicas", ""));
            cols.push(col("Available", "integer", ".status.availableReplicas", ""));
        }
        "daemonsets" => {
            cols.push(col(
                "Desired",
                "integer",
                ".status.desiredNumberScheduled",
                "",
            ));
            cols.push(col("Ready", "integer", ".status.numberReady", ""));
        }
        "namespaces" => cols.push(col("Status", "string", ".status.phase", "")),
        "services" => {
            cols.push(col("Type", "string", ".spec.type", ""));
            cols.push(col("Cluster-IP", "string", ".spec.clusterIP", ""));
        }
        _ => {}
    }
    cols.push(col(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "Time since creation.",
    ));
    cols
}

/// Renders a duration like kubectl does (`45s`, `5m10s`, `3h`, `2d4h`).
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "0s".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 730 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn cell(obj: &Value, c: &PrinterColumn, rt: &ResourceType) -> Value {
    if rt.builtin && rt.plural == "events" {
        match c.name.as_str() {
            "Last Seen" => {
                let seen = [
                    "/series/lastObservedTime",
                    "/lastTimestamp",
                    "/eventTime",
                    "/metadata/creationTimestamp",
                ]
                .iter()
                .find_map(|p| obj.pointer(p).and_then(Value::as_str))
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                return match seen {
                    Some(t) => json!(human_duration(
                        crate::clock::utc().signed_duration_since(t).num_seconds()
                    )),
                    None => json!("<unknown>"),
                };
            }
            "Object" => {
                let kind = obj
                    .pointer("/involvedObject/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = obj
                    .pointer("/involvedObject/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return json!(format!("{}/{name}", kind.to_lowercase()));
            }
            _ => {}
        }
    }
    if rt.plural == "deployments" && c.name == "Ready" {
        let ready = obj
            .pointer("/status/readyReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let want = obj
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        return json!(format!("{ready}/{want}"));
    }
    let found = jsonpath::select(obj, &c.json_path);
    let Some(v) = found.first() else {
        return match c.type_.as_str() {
            "integer" if rt.builtin => json!(0),
            // kubectl prints missing cells as <none>, as the API server sends them: null.
            _ => Value::Null,
        };
    };
    if c.type_ == "date"
        && let Some(t) = v
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        let secs = crate::clock::utc().signed_duration_since(t).num_seconds();
        return json!(human_duration(secs));
    }
    if found.len() > 1 {
        let parts: Vec<String> = found
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        return json!(parts.join(","));
    }
    (*v).clone()
}

/// The `PartialObjectMetadata` of an object (metadata-only views).
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A Table of `objects`; `include_object` is the `includeObject` query parameter.
pub fn table(
    rt: &ResourceType,
    version: &str,
    objects: &[Arc<Value>],
    meta: Value,
    include_object: &str,
) -> Value {
    let cols = columns(rt, version);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            let (type_, format) = match c.type_.as_str() {
                "date" => ("string", ""),
                t => (t, if c.name == "Name" { "name" } else { "" }),
            };
            json!({"name": c.name, "type": type_, "format": format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|c| cell(o, c, rt)).collect();
            let object = match include_object {
                "None" => Value::Null,
                "Object" => (**o).clone(),
                _ => partial_metadata(o),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(310), "5m10s");
        assert_eq!(human_duration(3600 * 3), "3h");
        assert_eq!(human_duration(86400 * 2 + 3600 * 4), "2d4h");
    }
}
