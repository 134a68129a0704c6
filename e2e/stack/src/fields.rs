//! Field paths and ownership (`metadata.managedFields`, `FieldsV1`), shared by updates and
//! server-side apply. Ownership is tracked per leaf field; items of associative lists (keyed
//! by e.g. `name`) are tracked too, so an applier can own a whole list item.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// A path of FieldsV1 segments: `f:spec`, `k:{"name":"app"}`, `v:"x"`, `i:0`.
pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// What decides list keys while walking: built-in types use the strategic-merge keys,
/// custom resources their schema's `x-kubernetes-list-type: map`.
#[derive(Clone, Copy)]
pub struct Shape<'a> {
    pub builtin: bool,
    pub schema: Option<&'a Value>,
    /// With a status subresource, `status` is owned through `/status` only.
    pub status_subresource: bool,
}

impl<'a> Shape<'a> {
    pub fn child(self, field: &str) -> Shape<'a> {
        let schema = self.schema.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(field))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        });
        Shape {
            builtin: self.builtin,
            schema,
            status_subresource: self.status_subresource,
        }
    }

    pub fn items(self) -> Shape<'a> {
        Shape {
            builtin: self.builtin,
            schema: self.schema.and_then(|s| s.get("items")),
            status_subresource: self.status_subresource,
        }
    }
}

/// The keys that identify items of the list held in `field`, if it is an associative list.
pub fn list_keys(shape: Shape<'_>, field: &str, items: &[Value]) -> Option<Vec<String>> {
    let keys: Vec<String> = if shape.builtin {
        let k = match field {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "env"
            | "volumes"
            | "imagePullSecrets" => "name",
            "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
            "ports" => "port",
            "volumeMounts" => "mountPath",
            "conditions" => "type",
            "ownerReferences" => "uid",
            "hostAliases" => "ip",
            _ => return None,
        };
        vec![k.to_string()]
    } else {
        let s = shape.schema?;
        if s.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
            return None;
        }
        s.get("x-kubernetes-list-map-keys")?
            .as_array()?
            .iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect()
    };
    let all_keyed = items
        .iter()
        .all(|i| keys.iter().all(|k| i.get(k).is_some_and(|v| !v.is_null())));
    (all_keyed && !keys.is_empty()).then_some(keys)
}

fn item_segment(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k).cloned().unwrap_or(Value::Null));
    }
    format!("k:{}", Value::Object(m))
}

/// Metadata fields the server owns; they are never part of anyone's field set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Leaf paths (and associative-list item paths) set in `obj`. With `status_only`, only the
/// status; otherwise everything but the status if the type has a status subresource.
pub fn leaves(obj: &Value, shape: Shape<'_>, status_only: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let skip = if status_only {
            k != "status"
        } else {
            k == "status" && shape.status_subresource
        };
        if k == "apiVersion" || k == "kind" || skip {
            continue;
        }
        let path = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Some(meta) = v.as_object() {
                for (mk, mv) in meta {
                    if !SERVER_METADATA.contains(&mk.as_str()) {
                        let p = vec![path[0].clone(), format!("f:{mk}")];
                        walk(
                            mv,
                            p,
                            mk,
                            Shape {
                                builtin: true,
                                schema: None,
                                status_subresource: true,
                            },
                            &mut out,
                        );
                    }
                }
            }
            continue;
        }
        walk(v, path, k, shape.child(k), &mut out);
    }
    out
}

fn walk(v: &Value, path: Path, field: &str, shape: Shape<'_>, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(child, p, k, shape.child(k), out);
            }
        }
        Value::Array(items) if !items.is_empty() => match list_keys(shape, field, items) {
            Some(keys) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(item_segment(item, &keys));
                    out.insert(p.clone());
                    if let Some(m) = item.as_object() {
                        for (k, child) in m {
                            let mut cp = p.clone();
                            cp.push(format!("f:{k}"));
                            walk(child, cp, k, shape.items().child(k), out);
                        }
                    }
                }
            }
            None => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// The value at a path, if present.
pub fn get_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    item_index(items, seg).map(|i| &items[i])
}

fn item_index(items: &[Value], seg: &str) -> Option<usize> {
    if let Some(k) = seg.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .position(|i| keys.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return items.iter().position(|i| *i == want);
    }
    let idx: usize = seg.strip_prefix("i:")?.parse().ok()?;
    (idx < items.len()).then_some(idx)
}

/// Removes the field or list item a path names; missing paths are ignored.
pub fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            match cur.as_array_mut() {
                Some(items) => match item_index(items, seg) {
                    Some(i) => items.get_mut(i),
                    None => None,
                },
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut()
        && let Some(i) = item_index(items, last)
    {
        items.remove(i);
    }
}

/// `.spec.containers[name="app"].image`, as the API server names fields in conflicts.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else {
            s.push_str(&format!("[{seg}]"));
        }
    }
    s
}

/// Renders a set as a FieldsV1 tree (`{"f:spec":{"f:replicas":{}}}`).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        insert_path(&mut root, path);
    }
    for path in set {
        if let Some(node) = get_node_mut(&mut root, path)
            && let Some(m) = node.as_object_mut()
            && !m.is_empty()
            && !m.contains_key(".")
        {
            m.insert(".".into(), json!({}));
        }
    }
    root
}

fn insert_path(node: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(m) = node.as_object_mut() {
        insert_path(m.entry(first.clone()).or_insert_with(|| json!({})), rest);
    }
}

fn get_node_mut<'a>(root: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = root;
    for seg in path {
        cur = cur.get_mut(seg)?;
    }
    Some(cur)
}

pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    parse_node(v, &mut Vec::new(), &mut out);
    out
}

fn parse_node(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(k.clone());
        if child.as_object().is_none_or(Map::is_empty) {
            out.insert(path.clone());
        } else {
            parse_node(child, path, out);
        }
        path.pop();
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(arr) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    arr.iter()
        .filter_map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let manager = s("manager");
            if manager.is_empty() && s("operation").is_empty() {
                return None;
            }
            Some(Entry {
                manager,
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                set: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            })
        })
        .collect()
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut m = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                m["subresource"] = json!(e.subresource);
            }
            m
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// Records a non-apply write: `manager` takes the fields whose value it changed, and nobody
/// keeps fields that were removed. Managed fields the client sent replace the stored ones.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    shape: Shape<'_>,
    now: &str,
) {
    let status_only = subresource == "status";
    // Clients may set managedFields explicitly (kubectl does when it migrates client-side
    // apply ownership); otherwise ownership continues from the stored object.
    let sent = new.pointer("/metadata/managedFields");
    let stored = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let explicit =
        sent.is_some_and(|m| m.as_array().is_some_and(|a| !a.is_empty())) && sent != stored;
    let mut entries = if explicit {
        read_entries(new)
    } else {
        old.map(read_entries).unwrap_or_default()
    };
    let new_leaves = leaves(new, shape, status_only);
    let old_leaves = old
        .map(|o| leaves(o, shape, status_only))
        .unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get_at(o, p)) != get_at(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_leaves.difference(&new_leaves).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, &entries);
        return;
    }
    let mine =
        |e: &Entry| e.manager == manager && e.operation == "Update" && e.subresource == subresource;
    for e in entries.iter_mut().filter(|e| !mine(e)) {
        e.set
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => {
            e.set.retain(|p| !removed.contains(p));
            e.set.extend(changed);
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.to_string(),
            set: changed,
        }),
    }
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({"metadata": {"name": "x", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "i"}]}}}});
        let set = leaves(
            &obj,
            Shape {
                builtin: true,
                schema: None,
                status_subresource: true,
            },
            false,
        );
        assert!(set.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        assert!(set.contains(&vec![
            "f:metadata".to_string(),
            "f:labels".to_string(),
            "f:a".to_string()
        ]));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
        let path: Path = vec![
            "f:spec".into(),
            "f:template".into(),
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"app\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(get_at(&obj, &path), Some(&json!("i")));
        assert_eq!(
            display(&path),
            ".spec.template.spec.containers[name=\"app\"].image"
        );
    }
}
