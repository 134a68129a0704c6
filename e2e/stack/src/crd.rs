//! CustomResourceDefinitions: validating one, serving its type, and its status.

use crate::crud::now;
use crate::error::Cause;
use crate::registry;
use crate::store::Inner;
use serde_json::{Value, json};
use std::sync::Arc;

/// Checks what the registry needs from a CRD, and that its name is `plural.group`.
pub fn validate(obj: &Value, name: &str) -> Result<(), Cause> {
    let t = registry::from_crd(obj).map_err(|why| Cause {
        reason: "FieldValueInvalid",
        field: "spec".into(),
        message: why,
    })?;
    if protected(&t.group)
        && obj
            .pointer("/metadata/annotations/api-approved.kubernetes.io")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(Cause {
            reason: "FieldValueRequired",
            field: "metadata.annotations[api-approved.kubernetes.io]".into(),
            message: "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111".into(),
        });
    }
    if name != t.key() {
        return Err(Cause {
            reason: "FieldValueInvalid",
            field: "metadata.name".into(),
            message: format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        });
    }
    Ok(())
}

/// Groups the Kubernetes project owns (`k8s.io`, `kubernetes.io` and their subdomains): the
/// API server accepts CRDs in them only with an `api-approved.kubernetes.io` annotation.
fn protected(group: &str) -> bool {
    ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|d| group == *d || group.ends_with(&format!(".{d}")))
}

/// The status the API server's CRD controllers converge to: names accepted, established.
/// Set synchronously, so `kubectl wait --for=condition=established` returns at once.
pub fn set_status(obj: &mut Value) {
    let t = now();
    let mut names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if names.get("singular").is_none() {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        names["singular"] = json!(kind);
    }
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage") == Some(&json!(true)))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    obj["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": t},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": t},
        ],
        "storedVersions": stored,
    });
}

/// Serves (or re-serves, after an update) the CRD's type.
pub fn register(inner: &mut Inner, crd: &Value) {
    if let Ok(t) = registry::from_crd(crd) {
        inner.registry.types.insert(t.id(), Arc::new(t));
    }
}

/// Stops serving the CRD's type and deletes its objects (the API server's
/// `customresourcecleanup` finalizer does this before the CRD goes).
pub fn unregister(inner: &mut Inner, crd: &Value) {
    let Ok(t) = registry::from_crd(crd) else {
        return;
    };
    let key = t.key();
    let all: Vec<(String, String)> = inner
        .iter_ns(&key, None)
        .map(|o| crate::store::ns_name(o))
        .collect();
    for (ns, name) in all {
        inner.remove(&key, &ns, &name);
    }
    inner.registry.types.remove(&t.id());
}
