//! ConfigMaps and Secrets a pod template uses (tracked as Flagger tracks them): found by walking the pod spec,
//! checksummed so that a change of their data starts an analysis like a change of the template,
//! and copied to `-primary` on promotion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Map, Value, json};
use serin_core::hash::config_checksum;

/// Annotation on a ConfigMap or Secret that opts it out of tracking (any value starting with
/// `disable`, as Flagger reads it).
pub const TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";

/// Secret types worth tracking; registry credentials and service-account tokens change under
/// the cluster's control, not the release's.
const TRACKED_SECRET_TYPES: [&str; 4] = [
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The key prefix in `status.trackedConfigs`.
    pub fn prefix(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }
}

/// One reference from the pod spec.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
    /// `optional: true`: a missing object is skipped, not an error.
    pub optional: bool,
}

/// Calls `f` with the name of every ConfigMap and Secret reference in a pod spec (JSON):
/// volumes, projected sources, env and envFrom of containers and init containers.
pub fn for_each_ref(pod: &mut Value, f: &mut dyn FnMut(ConfigKind, &mut String)) {
    walk(pod, &mut |kind, obj, key| {
        if let Some(Value::String(name)) = obj.get_mut(key) {
            f(kind, name);
        }
    });
}

/// Every reference of a pod spec, deduplicated (a name referenced as required anywhere is
/// required).
pub fn refs(pod: &Value) -> Vec<ConfigRef> {
    let mut found: BTreeMap<(ConfigKind, String), bool> = BTreeMap::new();
    let mut pod = pod.clone();
    walk(&mut pod, &mut |kind, obj, key| {
        if let Some(Value::String(name)) = obj.get(key) {
            let optional = obj
                .get("optional")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let entry = found.entry((kind, name.clone())).or_insert(true);
            *entry = *entry && optional;
        }
    });
    found
        .into_iter()
        .map(|((kind, name), optional)| ConfigRef {
            kind,
            name,
            optional,
        })
        .collect()
}

/// What tracking found for one pod template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    /// `configmap/<name>` / `secret/<name>` → checksum of the data.
    pub checksums: BTreeMap<String, String>,
    pub configmaps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// Required references whose object does not exist: the pods cannot start.
    pub missing: Vec<String>,
}

/// Resolves the references of `pod` with the given lookups and checksums what is tracked.
pub fn track(
    pod: &Value,
    configmap: impl Fn(&str) -> Option<Arc<ConfigMap>>,
    secret: impl Fn(&str) -> Option<Arc<Secret>>,
) -> Tracked {
    track_refs(refs(pod), configmap, secret)
}

/// [`track`] for references already found with [`refs`].
pub fn track_refs(
    refs: Vec<ConfigRef>,
    configmap: impl Fn(&str) -> Option<Arc<ConfigMap>>,
    secret: impl Fn(&str) -> Option<Arc<Secret>>,
) -> Tracked {
    let mut tracked = Tracked::default();
    for r in refs {
        let key = format!("{}/{}", r.kind.prefix(), r.name);
        let data = match r.kind {
            ConfigKind::ConfigMap => configmap(&r.name).map(|cm| {
                let disabled = opted_out(cm.metadata.annotations.as_ref());
                let data = json!({"data": cm.data, "binaryData": cm.binary_data});
                (disabled, data)
            }),
            ConfigKind::Secret => secret(&r.name).map(|s| {
                let kind = s.type_.as_deref().unwrap_or("Opaque");
                let disabled = opted_out(s.metadata.annotations.as_ref())
                    || !TRACKED_SECRET_TYPES.contains(&kind);
                let data = serde_json::to_value(&s.data).unwrap_or(Value::Null);
                (disabled, json!({"data": data}))
            }),
        };
        match data {
            None if r.optional => {}
            None => tracked.missing.push(key),
            Some((true, _)) => {}
            Some((false, data)) => {
                tracked.checksums.insert(key, config_checksum(&data));
                match r.kind {
                    ConfigKind::ConfigMap => tracked.configmaps.insert(r.name),
                    ConfigKind::Secret => tracked.secrets.insert(r.name),
                };
            }
        }
    }
    tracked
}

fn opted_out(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(TRACKING_ANNOTATION))
        .is_some_and(|v| v.starts_with("disable"))
}

/// Called with each reference object and the key that holds its name.
type Visitor<'a> = dyn FnMut(ConfigKind, &mut Map<String, Value>, &str) + 'a;

/// Visits each reference object of a pod spec.
fn walk(pod: &mut Value, f: &mut Visitor<'_>) {
    let mut visit = |v: Option<&mut Value>, kind: ConfigKind, key: &str| {
        if let Some(Value::Object(obj)) = v {
            f(kind, obj, key);
        }
    };
    if let Some(Value::Array(volumes)) = pod.get_mut("volumes") {
        for volume in volumes {
            visit(volume.get_mut("configMap"), ConfigKind::ConfigMap, "name");
            visit(volume.get_mut("secret"), ConfigKind::Secret, "secretName");
            if let Some(Value::Array(sources)) = volume.pointer_mut("/projected/sources") {
                for source in sources {
                    visit(source.get_mut("configMap"), ConfigKind::ConfigMap, "name");
                    visit(source.get_mut("secret"), ConfigKind::Secret, "name");
                }
            }
        }
    }
    for list in ["containers", "initContainers"] {
        let Some(Value::Array(containers)) = pod.get_mut(list) else {
            continue;
        };
        for container in containers {
            if let Some(Value::Array(env)) = container.get_mut("env") {
                for var in env {
                    let cm = var.pointer_mut("/valueFrom/configMapKeyRef");
                    visit(cm, ConfigKind::ConfigMap, "name");
                    let secret = var.pointer_mut("/valueFrom/secretKeyRef");
                    visit(secret, ConfigKind::Secret, "name");
                }
            }
            if let Some(Value::Array(env_from)) = container.get_mut("envFrom") {
                for source in env_from {
                    visit(
                        source.get_mut("configMapRef"),
                        ConfigKind::ConfigMap,
                        "name",
                    );
                    visit(source.get_mut("secretRef"), ConfigKind::Secret, "name");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "containers": [{"name": "app",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "b", "optional": true}}}],
                "envFrom": [{"secretRef": {"name": "creds"}}]}],
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "init-cfg"}}]}],
            "volumes": [{"name": "v", "configMap": {"name": "cfg", "optional": true}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "tls"}}]}},
                        {"name": "s", "secret": {"secretName": "pull"}}]
        })
    }

    fn configmap(name: &str, data: &str, annotation: Option<&str>) -> Arc<ConfigMap> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": annotation.map(|a| json!({TRACKING_ANNOTATION: a}))},
                "data": {"k": data}
            }))
            .unwrap(),
        )
    }

    fn secret(name: &str, kind: &str) -> Arc<Secret> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name}, "type": kind, "data": {"k": "dg=="}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn finds_every_reference_once_required_wins_over_optional() {
        let found = refs(&pod());
        let names: Vec<_> = found
            .iter()
            .map(|r| (r.kind.prefix(), r.name.as_str(), r.optional))
            .collect();
        assert_eq!(
            names,
            [
                ("configmap", "cfg", false),
                ("configmap", "init-cfg", false),
                ("secret", "creds", false),
                ("secret", "maybe", true),
                ("secret", "pull", false),
                ("secret", "tls", false),
            ]
        );
    }

    #[test]
    fn checksums_tracked_objects_and_skips_opted_out_types_and_optional_missing() {
        let lookup_cm = |n: &str| match n {
            "cfg" => Some(configmap("cfg", "1", None)),
            "init-cfg" => Some(configmap("init-cfg", "1", Some("disabled"))),
            _ => None,
        };
        let lookup_secret = |n: &str| match n {
            "creds" => Some(secret("creds", "Opaque")),
            "tls" => Some(secret("tls", "kubernetes.io/tls")),
            "pull" => Some(secret("pull", "kubernetes.io/dockerconfigjson")),
            _ => None,
        };
        let tracked = track(&pod(), lookup_cm, lookup_secret);
        let keys: Vec<_> = tracked.checksums.keys().cloned().collect();
        assert_eq!(keys, ["configmap/cfg", "secret/creds", "secret/tls"]);
        assert!(tracked.missing.is_empty(), "{:?}", tracked.missing);
        assert_eq!(tracked.configmaps, BTreeSet::from(["cfg".to_string()]));

        let changed = track(
            &pod(),
            |n: &str| (n == "cfg").then(|| configmap("cfg", "2", None)),
            lookup_secret,
        );
        assert_ne!(
            changed.checksums["configmap/cfg"],
            tracked.checksums["configmap/cfg"]
        );
        assert_eq!(changed.missing, ["configmap/init-cfg"]);
    }

    #[test]
    fn renaming_reaches_every_reference() {
        let mut p = pod();
        for_each_ref(&mut p, &mut |_, name| name.push_str("-x"));
        let after = refs(&p);
        assert!(after.iter().all(|r| r.name.ends_with("-x")), "{after:?}");
        assert_eq!(after.len(), 6);
    }
}
