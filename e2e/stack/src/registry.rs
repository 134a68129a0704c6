//! The resource types the emulator serves: the built-in set plus those registered by CRDs.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a scale subresource reads and writes replicas (dotted paths, as in a CRD).
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One column of `kubectl get` table output.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i64,
}

/// Per-version facts: CRD versions may differ in schema and columns.
#[derive(Debug, Clone, Default)]
pub struct VersionInfo {
    pub name: String,
    pub served: bool,
    pub schema: Option<Value>,
    pub columns: Vec<PrinterColumn>,
}

/// A served resource (group + plural); objects are stored once per resource, whatever the
/// version they are read through (no conversion: versions share one shape, as with the
/// `None` conversion strategy of CRDs).
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub versions: Vec<VersionInfo>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// Built-in types accept strategic merge patch; custom resources answer 415.
    pub builtin: bool,
    /// Whether the server maintains metadata.generation for this type.
    pub generation: bool,
    /// Served read-only and always empty (pods: the simulator is Pod-less).
    pub always_empty: bool,
    /// Storage shared with another type (see `key`).
    pub storage: Option<String>,
}

impl ResourceType {
    /// The identity in the registry: `plural.group`, or `plural` for the core group.
    pub fn id(&self) -> String {
        resource_key(&self.group, &self.plural)
    }

    /// Where objects are stored: the identity, except for types that share storage with
    /// another (events.k8s.io/v1 Events are core/v1 Events, as in the API server).
    pub fn key(&self) -> String {
        self.storage.clone().unwrap_or_else(|| self.id())
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v.name == version && v.served)
    }

    pub fn version(&self, version: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.name == version)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The version new discovery clients should prefer: the first served one.
    pub fn preferred_version(&self) -> &str {
        self.versions
            .iter()
            .find(|v| v.served)
            .map(|v| v.name.as_str())
            .unwrap_or("v1")
    }
}

pub fn resource_key(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// All types, by storage key.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub types: BTreeMap<String, Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut reg = Registry::default();
        for t in builtins() {
            reg.types.insert(t.id(), Arc::new(t));
        }
        reg
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceType>> {
        self.types
            .get(&resource_key(group, plural))
            .filter(|t| t.serves(version))
    }

    /// Groups with their served versions, core first then alphabetical (stable discovery).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let entry = out.entry(t.group.clone()).or_default();
            for v in t.versions.iter().filter(|v| v.served) {
                if !entry.contains(&v.name) {
                    entry.push(v.name.clone());
                }
            }
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

struct B {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    generation: bool,
}

/// The core API's Events: a row of [`builtins`], and the model of events.k8s.io's.
const CORE_EVENTS: B = B {
    group: "",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    short: &["ev"],
    status: false,
    generation: false,
};

/// The built-in types, one row each.
// Long on purpose: a table of the built-in kinds, one row each, read top to bottom.
fn builtins() -> Vec<ResourceType> {
    let table = [
        B {
            group: "",
            version: "v1",
            plural: "namespaces",
            kind: "Namespace",
            namespaced: false,
            short: &["ns"],
            status: true,
            generation: false,
        },
        B {
            group: "",
            version: "v1",
            plural: "services",
            kind: "Service",
            namespaced: true,
            short: &["svc"],
            status: true,
            generation: false,
        },
        B {
            group: "",
            version: "v1",
            plural: "configmaps",
            kind: "ConfigMap",
            namespaced: true,
            short: &["cm"],
            status: false,
            generation: false,
        },
        B {
            group: "",
            version: "v1",
            plural: "secrets",
            kind: "Secret",
            namespaced: true,
            short: &[],
            status: false,
            generation: false,
        },
        CORE_EVENTS,
        B {
            group: "",
            version: "v1",
            plural: "pods",
            kind: "Pod",
            namespaced: true,
            short: &["po"],
            status: true,
            generation: false,
        },
        B {
            group: "",
            version: "v1",
            plural: "serviceaccounts",
            kind: "ServiceAccount",
            namespaced: true,
            short: &["sa"],
            status: false,
            generation: false,
        },
        B {
            group: "apps",
            version: "v1",
            plural: "deployments",
            kind: "Deployment",
            namespaced: true,
            short: &["deploy"],
            status: true,
            generation: true,
        },
        B {
            group: "apps",
            version: "v1",
            plural: "daemonsets",
            kind: "DaemonSet",
            namespaced: true,
            short: &["ds"],
            status: true,
            generation: true,
        },
        B {
            group: "apps",
            version: "v1",
            plural: "statefulsets",
            kind: "StatefulSet",
            namespaced: true,
            short: &["sts"],
            status: true,
            generation: true,
        },
        // Served and always empty: the simulator runs no ReplicaSets.
        B {
            group: "apps",
            version: "v1",
            plural: "replicasets",
            kind: "ReplicaSet",
            namespaced: true,
            short: &["rs"],
            status: true,
            generation: true,
        },
        B {
            group: "autoscaling",
            version: "v2",
            plural: "horizontalpodautoscalers",
            kind: "HorizontalPodAutoscaler",
            namespaced: true,
            short: &["hpa"],
            status: true,
            generation: true,
        },
        B {
            group: "networking.k8s.io",
            version: "v1",
            plural: "ingresses",
            kind: "Ingress",
            namespaced: true,
            short: &["ing"],
            status: true,
            generation: true,
        },
        B {
            group: "coordination.k8s.io",
            version: "v1",
            plural: "leases",
            kind: "Lease",
            namespaced: true,
            short: &[],
            status: false,
            generation: false,
        },
        // The same events, served again by the events.k8s.io API (stored once: `storage`).
        B {
            group: "events.k8s.io",
            ..CORE_EVENTS
        },
        B {
            group: "apiextensions.k8s.io",
            version: "v1",
            plural: "customresourcedefinitions",
            kind: "CustomResourceDefinition",
            namespaced: false,
            short: &["crd", "crds"],
            status: true,
            generation: true,
        },
    ];
    table
        .into_iter()
        .map(|b| {
            let scale = (b.plural == "deployments").then(|| ScalePaths {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: None,
            });
            ResourceType {
                group: b.group.into(),
                versions: vec![VersionInfo {
                    name: b.version.into(),
                    served: true,
                    schema: None,
                    columns: Vec::new(),
                }],
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                kind: b.kind.into(),
                namespaced: b.namespaced,
                short_names: b.short.iter().map(|s| s.to_string()).collect(),
                categories: if matches!(
                    b.plural,
                    "services"
                        | "deployments"
                        | "daemonsets"
                        | "statefulsets"
                        | "pods"
                        | "horizontalpodautoscalers"
                ) {
                    vec!["all".into()]
                } else {
                    Vec::new()
                },
                status: b.status,
                scale,
                builtin: true,
                generation: b.generation,
                always_empty: b.plural == "replicasets",
                storage: (b.group == "events.k8s.io").then(|| "events".to_string()),
            }
        })
        .collect()
}

/// Builds the served type from a CustomResourceDefinition object.
pub fn from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = crd.get("spec").ok_or("spec is required")?;
    let group = str_at(spec, "group").ok_or("spec.group is required")?;
    let names = spec.get("names").ok_or("spec.names is required")?;
    let plural = str_at(names, "plural").ok_or("spec.names.plural is required")?;
    let kind = str_at(names, "kind").ok_or("spec.names.kind is required")?;
    let singular = str_at(names, "singular").unwrap_or_else(|| kind.to_lowercase());
    let namespaced = match str_at(spec, "scope").as_deref() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope must be Namespaced or Cluster".into()),
    };
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions_json = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions is required")?;
    if versions_json.is_empty() {
        return Err("spec.versions must have at least one version".into());
    }
    let mut versions = Vec::new();
    let mut status = false;
    let mut scale = None;
    for v in versions_json {
        versions.push(version_info(v)?);
        // Subresources are per version in v1 CRDs; the emulator serves the union.
        if let Some(sub) = v.get("subresources") {
            status |= sub.get("status").is_some();
            if let Some(s) = sub.get("scale") {
                scale = Some(scale_paths(s));
            }
        }
    }
    Ok(ResourceType {
        group,
        versions,
        plural,
        singular,
        kind,
        namespaced,
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        status,
        scale,
        builtin: false,
        generation: true,
        always_empty: false,
        storage: None,
    })
}

/// One of `spec.versions`: its name, whether it is served, its schema and printer columns.
fn version_info(v: &Value) -> Result<VersionInfo, String> {
    let name = str_at(v, "name").ok_or("spec.versions[].name is required")?;
    let columns = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| cols.iter().filter_map(printer_column).collect())
        .unwrap_or_default();
    Ok(VersionInfo {
        name,
        served: v.get("served").and_then(Value::as_bool).unwrap_or(true),
        schema: v.pointer("/schema/openAPIV3Schema").cloned(),
        columns,
    })
}

/// An `additionalPrinterColumns` entry; none without a name or a JSONPath.
fn printer_column(c: &Value) -> Option<PrinterColumn> {
    Some(PrinterColumn {
        name: str_at(c, "name")?,
        type_: str_at(c, "type").unwrap_or_else(|| "string".into()),
        json_path: str_at(c, "jsonPath")?,
        description: str_at(c, "description").unwrap_or_default(),
        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
    })
}

/// A version's `subresources.scale`, with the API server's default paths.
fn scale_paths(s: &Value) -> ScalePaths {
    ScalePaths {
        spec_replicas: str_at(s, "specReplicasPath").unwrap_or_else(|| ".spec.replicas".into()),
        status_replicas: str_at(s, "statusReplicasPath")
            .unwrap_or_else(|| ".status.replicas".into()),
        label_selector: str_at(s, "labelSelectorPath"),
    }
}

fn str_at(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(String::from)
}
