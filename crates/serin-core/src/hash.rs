//! Spec hashing: which revision of the target a Canary has seen and promoted.
//!
//! Flagger hashes a debug dump of Go structs, so a library upgrade that adds a field changes
//! every hash and re-triggers every analysis (flagger#1201, #1673, #1799). serin hashes
//! canonical JSON instead: keys sorted, and "empty" values (null, "", {}, []) dropped, because
//! Kubernetes and every client treat them as omitted. A field added with its zero value by a
//! newer client therefore leaves the hash unchanged. `false` and `0` are kept: for some fields
//! (`automountServiceAccountToken`, `enableServiceLinks`) they differ from the default.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Prefix of every hash, so a later change of scheme can be told apart from this one.
pub const SCHEME: &str = "v2:";

/// Hash of a pod template (or Service spec) plus the checksums of the ConfigMaps and Secrets it
/// references, keyed `configmap/<name>` / `secret/<name>`.
pub fn spec_hash(template: &Value, tracked_configs: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    out.push_str("{\"configs\":");
    let configs = Value::Object(
        tracked_configs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    );
    write_canonical(&configs, &mut out);
    out.push_str(",\"template\":");
    write_canonical(template, &mut out);
    out.push('}');
    let digest = Sha256::digest(out.as_bytes());
    format!("{SCHEME}{}", hex::encode(digest))
}

/// Checksum of a ConfigMap's or Secret's data: the first 8 bytes of SHA-256 over its
/// canonical JSON, in hex, as Flagger records them in `status.trackedConfigs`.
pub fn config_checksum(data: &Value) -> String {
    let mut out = String::new();
    write_canonical(data, &mut out);
    let digest = Sha256::digest(out.as_bytes());
    hex::encode(&digest[..8])
}

/// True for values Kubernetes treats as omitted.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_empty),
        Value::Object(o) => o.values().all(is_empty),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Writes `v` as JSON with object keys sorted and empty members dropped.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !is_empty(v))
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            // Order of list items is meaningful (containers, args); empty items are kept in
            // place so that positions do not shift.
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stable_under_key_order() {
        let a = json!({"metadata": {"labels": {"app": "podinfo", "tier": "web"}},
                       "spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0"}]}});
        let b = json!({"spec": {"containers": [{"image": "podinfo:6.0.0", "name": "app"}]},
                       "metadata": {"labels": {"tier": "web", "app": "podinfo"}}});
        assert_eq!(
            spec_hash(&a, &BTreeMap::new()),
            spec_hash(&b, &BTreeMap::new())
        );
    }

    #[test]
    fn omitted_and_empty_hash_the_same() {
        let omitted = json!({"spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0"}]}});
        let empty = json!({"metadata": {}, "spec": {
            "containers": [{"name": "app", "image": "podinfo:6.0.0", "env": [], "args": null,
                            "workingDir": "", "resources": {"limits": {}}}],
            "nodeSelector": {}, "volumes": []}});
        assert_eq!(
            spec_hash(&omitted, &BTreeMap::new()),
            spec_hash(&empty, &BTreeMap::new())
        );
    }

    #[test]
    fn meaningful_changes_change_the_hash() {
        let base = json!({"spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0"}]}});
        let h = spec_hash(&base, &BTreeMap::new());
        let image = json!({"spec": {"containers": [{"name": "app", "image": "podinfo:6.0.1"}]}});
        assert_ne!(h, spec_hash(&image, &BTreeMap::new()));
        let falsy = json!({"spec": {"automountServiceAccountToken": false,
                                    "containers": [{"name": "app", "image": "podinfo:6.0.0"}]}});
        assert_ne!(h, spec_hash(&falsy, &BTreeMap::new()));
        let cfg = configs(&[("configmap/podinfo-config", "0123456789abcdef")]);
        assert_ne!(h, spec_hash(&base, &cfg));
        let cfg2 = configs(&[("configmap/podinfo-config", "fedcba9876543210")]);
        assert_ne!(spec_hash(&base, &cfg), spec_hash(&base, &cfg2));
    }

    #[test]
    fn hash_is_versioned_sha256() {
        let h = spec_hash(&json!({}), &BTreeMap::new());
        assert!(h.starts_with(SCHEME));
        assert_eq!(h.len(), SCHEME.len() + 64);
    }

    #[test]
    fn config_checksum_is_16_hex_and_order_independent() {
        let a = config_checksum(&json!({"a": "1", "b": "2"}));
        let b = config_checksum(&json!({"b": "2", "a": "1"}));
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        assert_ne!(a, config_checksum(&json!({"a": "1", "b": "3"})));
    }
}
