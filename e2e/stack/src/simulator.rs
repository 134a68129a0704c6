//! The workload simulator: plays the Deployment and DaemonSet controllers and the kubelet.
//!
//! It reacts to watch events (never polls), and for each new generation writes status
//! through the status subresource in two steps: at once (observedGeneration, replica
//! counts, Progressing `ReplicaSetUpdated`), then after the image's ready delay (all pods
//! ready, Progressing `NewReplicaSetAvailable`). Images that never become ready leave the
//! rollout stuck until `spec.progressDeadlineSeconds`, then Progressing turns False with
//! `ProgressDeadlineExceeded`. A Deployment template change models a surge rollout: pods
//! of the old template stay ready (and counted in `replicas`) until the new ones are ready.
//! A DaemonSet template change shows the first step of a node-by-node rollout (one node
//! updated and unavailable) until the new pods are ready. No Pod objects are created.

use crate::registry::ResourceType;
use crate::scenario::Workloads;
use crate::store::{Event, EventType, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const DEPLOYMENTS: &str = "deployments.apps";
const DAEMONSETS: &str = "daemonsets.apps";
const MANAGER: &str = "kube-controller-manager";

#[derive(Debug, Clone, Default)]
struct Track {
    generation: i64,
    template: u64,
    /// Ready pods of the current template, and of older templates still running.
    ready: i64,
    old_ready: i64,
    /// Bumped on every change; delayed steps only apply if it is unchanged.
    token: u64,
}

struct Sim {
    store: Arc<Store>,
    cfg: Workloads,
    tracks: Mutex<HashMap<String, Track>>,
}

pub async fn run(store: Arc<Store>, cfg: Workloads) {
    let mut rx = store.subscribe();
    let sim = Arc::new(Sim {
        store,
        cfg,
        tracks: Mutex::new(HashMap::new()),
    });
    sim.rescan();
    loop {
        match rx.recv().await {
            Ok(e) => sim.on_event(&e),
            Err(RecvError::Lagged(_)) => sim.rescan(),
            Err(RecvError::Closed) => return,
        }
    }
}

fn uid(o: &Value) -> String {
    o.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn int(o: &Value, pointer: &str, default: i64) -> i64 {
    o.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

fn template_hash(o: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&o.pointer("/spec/template"))
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

impl Sim {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Track>> {
        self.tracks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rt(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.store.lock().registry.types.get(key).cloned()
    }

    fn rescan(self: &Arc<Self>) {
        let objects: Vec<Arc<Value>> = {
            let inner = self.store.lock();
            [DEPLOYMENTS, DAEMONSETS]
                .iter()
                .flat_map(|k| inner.iter_ns(k, None).cloned().collect::<Vec<_>>())
                .collect()
        };
        for o in objects {
            self.changed(&o);
        }
    }

    fn on_event(self: &Arc<Self>, e: &Event) {
        if e.key != DEPLOYMENTS && e.key != DAEMONSETS {
            return;
        }
        if e.kind == EventType::Deleted {
            self.lock().remove(&uid(&e.object));
            return;
        }
        self.changed(&e.object);
    }

    fn changed(self: &Arc<Self>, o: &Value) {
        let generation = int(o, "/metadata/generation", 1);
        if o.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let is_ds = o.get("kind").and_then(Value::as_str) == Some("DaemonSet");
        let desired = if is_ds {
            self.daemonset_desired(o)
        } else {
            int(o, "/spec/replicas", 1).max(0)
        };
        let hash = template_hash(o);
        let track = {
            let mut tracks = self.lock();
            let t = tracks.entry(uid(o)).or_default();
            if t.generation == generation {
                return;
            }
            let first = t.generation == 0;
            t.generation = generation;
            t.token += 1;
            if first || t.template != hash {
                // Everything ready so far belongs to the old template now.
                t.old_ready = if first { 0 } else { t.ready + t.old_ready };
                t.ready = 0;
                t.template = hash;
            } else {
                t.ready = t.ready.min(desired);
            }
            t.clone()
        };
        self.write(o, is_ds, desired, &track, false);
        let images: Vec<String> = o
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("image").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let delays: Option<Vec<Duration>> =
            images.iter().map(|i| self.cfg.ready_after(i)).collect();
        let (ns, name) = crate::store::ns_name(o);
        let key = if is_ds { DAEMONSETS } else { DEPLOYMENTS };
        let sim = self.clone();
        let uid = uid(o);
        match delays {
            Some(d) => {
                let delay = d.into_iter().max().unwrap_or(self.cfg.ready_delay);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    sim.step(key, &ns, &name, &uid, track.token, false);
                });
            }
            None if !is_ds => {
                let deadline = int(o, "/spec/progressDeadlineSeconds", 600).max(0) as u64;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(deadline)).await;
                    sim.step(key, &ns, &name, &uid, track.token, true);
                });
            }
            None => {}
        }
    }

    /// A delayed step: pods became ready, or the progress deadline passed.
    fn step(&self, key: &str, ns: &str, name: &str, uid_: &str, token: u64, deadline: bool) {
        let Some(rt) = self.rt(key) else { return };
        let Ok(o) = self.store.get(&rt, ns, name) else {
            return;
        };
        if uid(&o) != uid_ {
            return;
        }
        let is_ds = key == DAEMONSETS;
        let desired = if is_ds {
            self.daemonset_desired(&o)
        } else {
            int(&o, "/spec/replicas", 1).max(0)
        };
        let track = {
            let mut tracks = self.lock();
            let Some(t) = tracks.get_mut(uid_) else {
                return;
            };
            if t.token != token {
                return;
            }
            if !deadline {
                t.ready = desired;
                t.old_ready = 0;
            }
            t.clone()
        };
        self.write(&o, is_ds, desired, &track, deadline);
    }

    fn daemonset_desired(&self, o: &Value) -> i64 {
        let selector = o
            .pointer("/spec/template/spec/nodeSelector")
            .and_then(Value::as_object);
        let matching = (1..=self.cfg.nodes).filter(|n| {
            selector.is_none_or(|sel| {
                sel.iter().all(|(k, v)| {
                    let have = match k.as_str() {
                        "kubernetes.io/os" => "linux".to_string(),
                        "kubernetes.io/arch" => "amd64".to_string(),
                        "kubernetes.io/hostname" => format!("node-{n}"),
                        _ => return false,
                    };
                    v.as_str() == Some(have.as_str())
                })
            })
        });
        matching.count() as i64
    }

    fn write(&self, o: &Value, is_ds: bool, desired: i64, t: &Track, deadline_passed: bool) {
        let key = if is_ds { DAEMONSETS } else { DEPLOYMENTS };
        let Some(rt) = self.rt(key) else { return };
        let (ns, name) = crate::store::ns_name(o);
        let old = o.get("status").cloned().unwrap_or(json!({}));
        let status = if is_ds {
            daemonset_status(t, desired)
        } else {
            deployment_status(o, &old, t, desired, deadline_passed)
        };
        // A conflict or a deleted object just means a newer event will come.
        let _ = self.store.write_status(&rt, &ns, &name, status, MANAGER);
    }
}

fn max_unavailable(o: &Value, desired: i64) -> i64 {
    match o.pointer("/spec/strategy/rollingUpdate/maxUnavailable") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            desired * pct / 100
        }
        _ => desired * 25 / 100,
    }
}

fn condition(
    old: &Value,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &str,
) -> Value {
    let previous = old
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        });
    let transition = match previous {
        Some(p) if p.get("status").and_then(Value::as_str) == Some(status) => {
            p.get("lastTransitionTime").cloned().unwrap_or(json!(now))
        }
        _ => json!(now),
    };
    json!({"type": type_, "status": status, "lastUpdateTime": now, "lastTransitionTime": transition,
        "reason": reason, "message": message})
}

fn deployment_status(
    o: &Value,
    old: &Value,
    t: &Track,
    desired: i64,
    deadline_passed: bool,
) -> Value {
    let now = crate::crud::now();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let rs = format!("{name}-{:010x}", t.template & 0xff_ffff_ffff);
    let available = (t.ready + t.old_ready).min(desired + t.old_ready);
    let complete = t.ready >= desired && t.old_ready == 0;
    let min_available = desired - max_unavailable(o, desired);
    let (status, reason, message) = if available >= min_available {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let available_cond = condition(old, "Available", status, reason, message.into(), &now);
    let (status, reason, message) = if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            "has successfully progressed",
        )
    } else if deadline_passed {
        (
            "False",
            "ProgressDeadlineExceeded",
            "has timed out progressing",
        )
    } else {
        ("True", "ReplicaSetUpdated", "is progressing")
    };
    let message = format!("ReplicaSet \"{rs}\" {message}.");
    let progressing = condition(old, "Progressing", status, reason, message, &now);
    let mut status = serde_json::Map::new();
    status.insert("observedGeneration".into(), json!(t.generation));
    // Zero counts are omitted, as the API server's omitempty does.
    for (k, v) in [
        ("replicas", desired + t.old_ready),
        ("updatedReplicas", desired),
        ("readyReplicas", available),
        ("availableReplicas", available),
        (
            "unavailableReplicas",
            (desired - available.min(desired)).max(0),
        ),
    ] {
        if v != 0 {
            status.insert(k.into(), json!(v));
        }
    }
    status.insert("conditions".into(), json!([available_cond, progressing]));
    Value::Object(status)
}

fn daemonset_status(t: &Track, desired: i64) -> Value {
    let (updated, ready) = if t.old_ready > 0 && t.ready < desired {
        // A rolling update goes node by node (maxUnavailable 1): the first node's old pod is
        // gone and its new one is not ready yet.
        let updated = desired.min(1);
        (updated, (t.old_ready.min(desired) - updated).max(0))
    } else {
        (desired, t.ready.min(desired))
    };
    let mut status = json!({
        "observedGeneration": t.generation,
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": desired,
        "numberMisscheduled": 0,
        "numberReady": ready,
    });
    for (k, v) in [
        ("updatedNumberScheduled", updated),
        ("numberAvailable", ready),
        ("numberUnavailable", desired - ready),
    ] {
        if v != 0 {
            status[k] = json!(v);
        }
    }
    status
}
