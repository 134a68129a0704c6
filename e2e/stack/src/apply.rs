//! Server-side apply: merge the applied configuration, track what each manager owns,
//! detect conflicts, and remove fields an applier stopped sending.

use crate::fields::{self, Entry, FieldSet, Shape, get_at, leaves, list_keys};
use serde_json::{Map, Value};

/// A field another manager owns with a different value.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
}

pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub shape: Shape<'a>,
    pub now: &'a str,
}

/// Returns the merged object (with updated managedFields), or the conflicts.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    req: &ApplyRequest<'_>,
) -> Result<Value, Vec<Conflict>> {
    let status_only = req.subresource == "status";
    let mut entries = live.map(fields::read_entries).unwrap_or_default();
    let new_set = leaves(applied, req.shape, status_only);
    let (conflicts, lost) = conflicts(&entries, live, applied, &new_set, req);
    if !conflicts.is_empty() && !req.force {
        return Err(conflicts);
    }
    // Forced: the other managers lose the fields in conflict.
    for (i, p) in lost {
        entries[i].set.remove(&p);
    }
    let mut merged = match live {
        Some(l) => l.clone(),
        None => Value::Object(Map::new()),
    };
    merge(&mut merged, applied, req.shape, "");
    remove_no_longer_applied(&mut merged, &entries, &new_set, req);
    match entries.iter_mut().find(|e| is_mine(e, req)) {
        Some(e) => {
            e.set = new_set;
            e.time = req.now.to_string();
            e.api_version = req.api_version.to_string();
        }
        None => entries.push(Entry {
            manager: req.manager.to_string(),
            operation: "Apply".into(),
            api_version: req.api_version.to_string(),
            time: req.now.to_string(),
            subresource: req.subresource.to_string(),
            set: new_set,
        }),
    }
    fields::write_entries(&mut merged, &entries);
    Ok(merged)
}

/// Whether `e` is this applier's own entry.
fn is_mine(e: &Entry, req: &ApplyRequest<'_>) -> bool {
    e.manager == req.manager && e.operation == "Apply" && e.subresource == req.subresource
}

/// The fields (not list items) of `new_set` that another manager of the same subresource
/// owns with a different value than applied; with each, the index of that manager's entry.
fn conflicts(
    entries: &[Entry],
    live: Option<&Value>,
    applied: &Value,
    new_set: &FieldSet,
    req: &ApplyRequest<'_>,
) -> (Vec<Conflict>, Vec<(usize, Vec<String>)>) {
    let mut conflicts = Vec::new();
    let mut lost: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if is_mine(e, req) || e.subresource != req.subresource {
            continue;
        }
        for p in e.set.intersection(new_set) {
            let is_item = p.last().is_some_and(|s| s.starts_with("k:"));
            if is_item {
                continue;
            }
            if get_at(applied, p) != live.and_then(|l| get_at(l, p)) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: fields::display(p),
                });
                lost.push((i, p.clone()));
            }
        }
    }
    (conflicts, lost)
}

/// Removes from `merged` the fields this applier applied before and no longer sends, unless
/// another manager owns them too.
fn remove_no_longer_applied(
    merged: &mut Value,
    entries: &[Entry],
    new_set: &FieldSet,
    req: &ApplyRequest<'_>,
) {
    let previous: FieldSet = entries
        .iter()
        .find(|e| is_mine(e, req))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !is_mine(e, req))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    // Longest first, so list items go after their fields.
    let mut dropped: Vec<&Vec<String>> = previous.difference(new_set).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        let shared = others.iter().any(|o| o.starts_with(p));
        if !shared {
            fields::remove_at(merged, p);
            remove_emptied_parents(merged, p, new_set, &others);
        }
    }
}

/// After `dropped` is removed: its parent maps left empty go too, up to the first one still
/// holding something, still applied or owned by another manager. The API server tracks
/// ownership of map entries, not only of leaves: an applier that stops sending a map entry
/// removes the entry, not just what was in it.
fn remove_emptied_parents(
    merged: &mut Value,
    dropped: &[String],
    applied: &FieldSet,
    others: &FieldSet,
) {
    for len in (1..dropped.len()).rev() {
        let parent = &dropped[..len];
        let empty_map = get_at(merged, parent)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        let kept = |set: &FieldSet| set.iter().any(|f| f.starts_with(parent));
        if !empty_map || !parent.last().is_some_and(|s| s.starts_with("f:")) {
            return;
        }
        if kept(applied) || kept(others) {
            return;
        }
        fields::remove_at(merged, parent);
    }
}

/// Structural merge: maps recursively, associative lists by key, everything else replaced.
fn merge(target: &mut Value, applied: &Value, shape: Shape<'_>, field: &str) {
    match (target.as_object_mut(), applied.as_object()) {
        (Some(tm), Some(am)) => {
            for (k, av) in am {
                if k == "managedFields" {
                    continue;
                }
                match tm.get_mut(k) {
                    Some(tv) => merge(tv, av, shape.child(k), k),
                    None => {
                        tm.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        _ => match (target.as_array_mut(), applied.as_array()) {
            (Some(items), Some(new_items)) => {
                let Some(keys) = list_keys(shape, field, new_items)
                    .filter(|_| list_keys(shape, field, items).is_some())
                else {
                    *target = applied.clone();
                    return;
                };
                let same = |a: &Value, b: &Value| keys.iter().all(|k| a.get(k) == b.get(k));
                for ni in new_items {
                    match items.iter().position(|i| same(i, ni)) {
                        Some(i) => merge(&mut items[i], ni, shape.items(), ""),
                        None => items.push(ni.clone()),
                    }
                }
            }
            _ => *target = applied.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req<'a>(manager: &'a str, force: bool) -> ApplyRequest<'a> {
        ApplyRequest {
            manager,
            force,
            api_version: "v1",
            subresource: "",
            shape: Shape {
                builtin: true,
                schema: None,
                status_subresource: true,
            },
            now: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn conflicts_force_and_removal() {
        let a = json!({"metadata": {"name": "x"}, "data": {"k": "1", "gone": "x"}});
        let live = apply(None, &a, &req("alice", false)).unwrap();
        let b = json!({"metadata": {"name": "x"}, "data": {"k": "2"}});
        let conflicts = apply(Some(&live), &b, &req("bob", false)).unwrap_err();
        assert_eq!(conflicts[0].field, ".data.k");
        assert_eq!(conflicts[0].manager, "alice");
        let forced = apply(Some(&live), &b, &req("bob", true)).unwrap();
        assert_eq!(forced["data"]["k"], "2");
        // alice drops `gone`; nobody else owns it, so it is removed.
        let a2 = json!({"metadata": {"name": "x"}, "data": {}});
        let after = apply(Some(&forced), &a2, &req("alice", false)).unwrap();
        assert_eq!(after["data"], json!({"k": "2"}));
    }

    #[test]
    fn an_entry_no_longer_applied_goes_with_its_fields() {
        let a = json!({"metadata": {"name": "x"},
            "data": {"keep": {"v": "1"}, "old": {"events": ["e"], "alerts": ["a"]}}});
        let live = apply(None, &a, &req("alice", false)).unwrap();
        let a2 = json!({"metadata": {"name": "x"}, "data": {"keep": {"v": "1"}}});
        let after = apply(Some(&live), &a2, &req("alice", false)).unwrap();
        assert_eq!(after["data"], json!({"keep": {"v": "1"}}));
        // A map another manager also writes into stays, emptied or not.
        let b = json!({"metadata": {"name": "x"}, "data": {"keep": {"w": "2"}}});
        let shared = apply(Some(&after), &b, &req("bob", false)).unwrap();
        let a3 = json!({"metadata": {"name": "x"}, "data": {}});
        let after = apply(Some(&shared), &a3, &req("alice", false)).unwrap();
        assert_eq!(after["data"], json!({"keep": {"w": "2"}}));
    }
}
