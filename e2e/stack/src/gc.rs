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
    let mut owners: HashMap<String, Owner> = HashMap::new();
    let mut all: Vec<(String, Arc<Value>)> = Vec::new();
    for (key, bucket) in &inner.objects {
        for o in bucket.values() {
            let deleting = o.pointer("/metadata/deletionTimestamp").is_some();
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
    let mut changed = false;
    // Owners (by uid) that still have blocking dependents, and that still have dependents.
    let mut blocked: HashSet<String> = HashSet::new();
    let mut terminating_ns: HashSet<String> = HashSet::new();
    let mut ns_in_use: HashSet<String> = HashSet::new();
    for (key, o) in &all {
        if key == "namespaces" && o.pointer("/metadata/deletionTimestamp").is_some() {
            terminating_ns.insert(ns_name(o).1);
        }
    }
    for (key, o) in &all {
        let (ns, name) = ns_name(o);
        if !ns.is_empty() {
            ns_in_use.insert(ns.clone());
        }
        let Some(rt) = inner.registry.types.get(key).cloned() else {
            continue;
        };
        let deleting = o.pointer("/metadata/deletionTimestamp").is_some();
        if terminating_ns.contains(&ns) && !deleting {
            let _ = crud::delete_locked(inner, &rt, &ns, &name, &DeleteOpts::default());
            changed = true;
            continue;
        }
        let refs = owner_refs(o);
        if refs.is_empty() {
            continue;
        }
        let live: Vec<&Value> = refs
            .iter()
            .filter(|r| {
                r.get("uid")
                    .and_then(Value::as_str)
                    .is_some_and(|u| owners.contains_key(u))
            })
            .collect();
        let orphaned_by: Vec<&Value> = live
            .iter()
            .copied()
            .filter(|r| {
                r.get("uid")
                    .and_then(Value::as_str)
                    .and_then(|u| owners.get(u))
                    .is_some_and(|w| w.orphaning)
            })
            .collect();
        if !orphaned_by.is_empty() || live.len() != refs.len() && !live.is_empty() {
            // Drop references to orphaning or vanished owners; keep the object.
            let keep: Vec<Value> = live
                .iter()
                .filter(|r| !orphaned_by.contains(r))
                .map(|r| (*r).clone())
                .collect();
            let mut new = (**o).clone();
            if keep.is_empty() {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("ownerReferences");
                }
            } else {
                new["metadata"]["ownerReferences"] = json!(keep);
            }
            inner.put(key, new);
            changed = true;
            continue;
        }
        if live.is_empty() {
            if !deleting {
                let _ = crud::delete_locked(inner, &rt, &ns, &name, &DeleteOpts::default());
                changed = true;
            }
            continue;
        }
        let foreground = live.iter().any(|r| {
            r.get("uid")
                .and_then(Value::as_str)
                .and_then(|u| owners.get(u))
                .is_some_and(|w| w.deleting_foreground)
        });
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
    }
    // Release owners whose propagation work is done.
    for (key, o) in &all {
        if o.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let (ns, name) = ns_name(o);
        let Some(current) = inner.get(key, &ns, &name).cloned() else {
            continue;
        };
        let Some(rt) = inner.registry.types.get(key).cloned() else {
            continue;
        };
        if key == "namespaces" {
            if !ns_in_use.contains(&name)
                && !has_finalizer(&current, "orphan")
                && !has_finalizer(&current, "foregroundDeletion")
            {
                crud::finalize(inner, &rt, "", &name);
                changed = true;
            }
            continue;
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
            continue;
        }
        changed = true;
        if fins.is_empty() {
            crud::finalize(inner, &rt, &ns, &name);
        } else {
            let mut new = (*current).clone();
            new["metadata"]["finalizers"] = json!(fins);
            inner.put(key, new);
        }
    }
    changed
}
