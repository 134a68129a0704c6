//! Types shared by the three kinds: conditions, name references, labels/annotations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serin_core::ConditionStatus;

/// Condition type Flagger (and serin) write on every Canary: `kubectl wait canary/x
/// --for=condition=promoted`.
pub const CONDITION_PROMOTED: &str = "Promoted";

/// A status condition, as Flagger writes them (`type`, `status`, `reason` are always set).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of this condition; Flagger writes `Promoted` on Canaries.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of this condition: True, False or Unknown.
    pub status: ConditionStatus,
    /// Reason for the current status of this condition; for `Promoted`, the canary phase.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message associated with this condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When this condition was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<DateTime<Utc>>,
    /// When the status of this condition last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
}

/// A reference by name to an object in the same namespace or, when `namespace` is set, in
/// another namespace (metric templates, alert providers).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceRef {
    /// Name of the referenced object.
    pub name: String,
    /// Namespace of the referenced object; defaults to the Canary's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to a Kubernetes Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Kubernetes Secret.
    pub name: String,
}

/// Labels and annotations added to an object serin generates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetadata {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Schema override for `conditions`: a list-map keyed by `type`, so server-side apply merges
/// conditions by type instead of replacing the list.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Option<Vec<Condition>>>::json_schema(generator);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), "map".into());
        obj.insert(
            "x-kubernetes-list-map-keys".into(),
            serde_json::json!(["type"]),
        );
    }
    schema
}

/// Removes `null` from `enum` lists (schemars lists it for `Option<enum>`; the generator's
/// `AddNullable` transform then marks the property `nullable`, which is how Kubernetes says
/// it). Applied recursively, as a `#[schemars(transform)]` on each top-level spec and status.
pub(crate) fn tidy_enums(schema: &mut schemars::Schema) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(obj) => {
                if let Some(values) = obj.get_mut("enum").and_then(|e| e.as_array_mut()) {
                    values.retain(|v| !v.is_null());
                }
                obj.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(obj) = schema.as_object_mut() {
        obj.values_mut().for_each(walk);
    }
}

/// Turns the schema of an `Option<T>` property back into the schema of `T` (for a property
/// the CRD requires although the Rust type is optional).
pub(crate) fn make_non_nullable(property: &mut serde_json::Value) {
    let Some(obj) = property.as_object_mut() else {
        return;
    };
    obj.remove("nullable");
    if let Some(types) = obj.get("type").and_then(|t| t.as_array()) {
        let rest: Vec<_> = types.iter().filter(|t| *t != "null").cloned().collect();
        let single = match rest.as_slice() {
            [one] => one.clone(),
            _ => serde_json::Value::Array(rest),
        };
        obj.insert("type".into(), single);
    }
    if let Some(any_of) = obj.get("anyOf").and_then(|a| a.as_array()).cloned() {
        let rest: Vec<_> = any_of
            .into_iter()
            .filter(|s| s.get("type").and_then(|t| t.as_str()) != Some("null"))
            .collect();
        if let [one] = rest.as_slice()
            && let Some(inner) = one.as_object()
        {
            obj.remove("anyOf");
            for (k, v) in inner {
                obj.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}
