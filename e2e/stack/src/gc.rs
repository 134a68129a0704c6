//! Garbage collection: ownerReferences, propagation finalizers (`foregroundDeletion`,
//! `orphan`) and namespace termination. Like the real collector it runs asynchronously,
//! after deletions, until nothing more changes.

use crate::crud::{self, DeleteOpts};
use crate::store::{Inner, Store, ns_name};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub async fn run(store: Arc<Store>) {
    loop {
        tokio::select! {
            _ = store.gc_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let mut inner = store.lock();
        if !inner.wants_gc {
            continue;
        }
        inner.wants_gc = false;
        // Each pass may enable the next (a dependent going away releases its owner).
        for _ in 0..100 {
            if !pass(&mut inner) {
                break;
            }
        }
    }
}

struct Owner {
    deleting_foreground: bool,
    orphaning: bool,
}

fn uid(o: &Value) -> &str {
    o.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}

fn owner_refs(o: &Value) -> Vec<Value> {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// One sweep; returns whether it changed anything.
fn pass(inner: &mut Inner) -> bool {
    let Snapshot { owners, all } = snapshot(inner);
    let terminating_ns: HashSet<String> = all
        .iter()
        .filter(|(key, o)| key == "namespaces" && is_deleting(o))
        .map(|(_, o)| ns_name(o).1)
        .collect();
    let ns_in_use: HashSet<String> = all
        .iter()
        .map(|(_, o)| ns_name(o).0)
        .filter(|ns| !ns.is_empty())
        .collect();
    let mut changed = false;
    // Owners (by uid) that still have blocking dependents.
    let mut blocked: HashSet<String> = HashSet::new();
    for (key, o) in &all {
        changed |= collect(inner, key, o, &owners, &terminating_ns, &mut blocked);
    }
    // Release owners whose propagation work is done.
    for (key, o) in &all {
        changed |= release(inner, key, o, &ns_in_use, &blocked);
    }
    changed
}

fn is_deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

/// The objects as a pass starts.
struct Snapshot {
    /// What each object, as an owner, asks of its dependents, by uid.
    owners: HashMap<String, Owner>,
    /// Every object, with its type's key.
    all: Vec<(String, Arc<Value>)>,
}

fn snapshot(inner: &Inner) -> Snapshot {
    let mut owners: HashMap<String, Owner> = HashMap::new();
    let mut all: Vec<(String, Arc<Value>)> = Vec::new();
    for (key, bucket) in &inner.objects {
        for o in bucket.values() {
            let deleting = is_deleting(o);
            owners.insert(
                uid(o).to_string(),
                Owner {
                    deleting_foreground: deleting && has_finalizer(o, "foregroundDeletion"),
                    orphaning: deleting && has_finalizer(o, "orphan"),
                },
            );
            all.push((key.clone(), o.clone()));
        }
    }
    Snapshot { owners, all }
}

/// What the collector does to one object as a dependent: deletes it when its namespace
/// terminates or its owners are all gone; drops its references to vanished or orphaning
/// owners; deletes it in the foreground when an owner is. Records the owners it blocks.
/// Returns whether it changed anything.
fn collect(
    inner: &mut Inner,
    key: &str,
    o: &Value,
    owners: &HashMap<String, Owner>,
    terminating_ns: &HashSet<String>,
    blocked: &mut HashSet<String>,
) -> bool {
    let Some(rt) = inner.registry.types.get(key).cloned() else {
        return false;
    };
    let (ns, name) = ns_name(o);
    let deleting = is_deleting(o);
    if terminating_ns.contains(&ns) && !deleting {
        let _ = crud::delete_locked(inner, &rt, &ns, &name, &DeleteOpts::default());
        return true;
    }
    let refs = owner_refs(o);
    if refs.is_empty() {
        return false;
    }
    let owner = |r: &Value| {
        r.get("uid")
            .and_then(Value::as_str)
            .and_then(|u| owners.get(u))
    };
    let live: Vec<&Value> = refs.iter().filter(|r| owner(r).is_some()).collect();
    let orphaned_by: Vec<&Value> = live
        .iter()
        .copied()
        .filter(|r| owner(r).is_some_and(|w| w.orphaning))
        .collect();
    if !orphaned_by.is_empty() || live.len() != refs.len() && !live.is_empty() {
        // Drop references to orphaning or vanished owners; keep the object.
        let keep: Vec<Value> = live
            .iter()
            .filter(|r| !orphaned_by.contains(r))
            .map(|r| (*r).clone())
            .collect();
        set_owner_refs(inner, key, o, keep);
        return true;
    }
    if live.is_empty() {
        if !deleting {
            let _ = crud::delete_locked(inner, &rt, &ns, &name, &DeleteOpts::default());
        }
        return !deleting;
    }
    let mut changed = false;
    let foreground = live
        .iter()
        .any(|r| owner(r).is_some_and(|w| w.deleting_foreground));
    if foreground && !deleting {
        let opts = DeleteOpts {
            propagation: Some("Foreground".into()),
            ..Default::default()
        };
        let _ = crud::delete_locked(inner, &rt, &ns, &name, &opts);
        changed = true;
    }
    for r in &live {
        if r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
            && let Some(u) = r.get("uid").and_then(Value::as_str)
        {
            blocked.insert(u.to_string());
        }
    }
    changed
}

/// Stores `o` with these owner references (none: without the field).
fn set_owner_refs(inner: &mut Inner, key: &str, o: &Value, keep: Vec<Value>) {
    let mut new = o.clone();
    if keep.is_empty() {
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("ownerReferences");
        }
    } else {
        new["metadata"]["ownerReferences"] = json!(keep);
    }
    inner.put(key, new);
}

/// Lets an owner being deleted go once its propagation work is done: a namespace once
/// empty, another object once its dependents are orphaned or, in the foreground, gone
/// (`blocked`: owners with blocking dependents left). Returns whether it changed anything.
fn release(
    inner: &mut Inner,
    key: &str,
    o: &Value,
    ns_in_use: &HashSet<String>,
    blocked: &HashSet<String>,
) -> bool {
    if !is_deleting(o) {
        return false;
    }
    let (ns, name) = ns_name(o);
    let Some(current) = inner.get(key, &ns, &name).cloned() else {
        return false;
    };
    let Some(rt) = inner.registry.types.get(key).cloned() else {
        return false;
    };
    if key == "namespaces" {
        if !ns_in_use.contains(&name)
            && !has_finalizer(&current, "orphan")
            && !has_finalizer(&current, "foregroundDeletion")
        {
            crud::finalize(inner, &rt, "", &name);
            return true;
        }
        return false;
    }
    let mut fins: Vec<Value> = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let before = fins.len();
    fins.retain(|f| {
        !(f == "orphan" || (f == "foregroundDeletion" && !blocked.contains(uid(&current))))
    });
    if fins.len() == before {
        return false;
    }
    if fins.is_empty() {
        crud::finalize(inner, &rt, &ns, &name);
    } else {
        let mut new = (*current).clone();
        new["metadata"]["finalizers"] = json!(fins);
        inner.put(key, new);
    }
    true
}
