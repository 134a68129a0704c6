//! The StatefulSet controller and its pods' kubelet, emulated. Unlike Deployments (whose pods
//! the simulator only counts), a StatefulSet's pods are objects here: a release in place
//! deletes pods of a revision for the controller to recreate on another, so they must exist
//! to be listed and deleted.
//!
//! Rules, as Kubernetes' controller applies them: pod `<name>-<i>` for each ordinal below
//! `spec.replicas`; a missing pod is created on the update revision when its ordinal is at or
//! above the rolling update's partition, else on the current revision; with every pod ready,
//! the highest ordinal at or above the partition still on another revision is deleted (to be
//! recreated on the update revision), one at a time; once every pod runs the update revision
//! and is ready, it becomes the current revision. A revision is named `<name>-<hash of the
//! pod template>` and carried by each pod as `controller-revision-hash`. Pods become ready
//! after their images' ready delay (never, for an image that never becomes ready). Pods are
//! owned by their StatefulSet, so the garbage collector removes them with it. Pods are
//! created in parallel, whatever `podManagementPolicy` says.

use crate::crud::{DeleteOpts, WriteOpts};
use crate::registry::ResourceType;
use crate::scenario::Workloads;
use crate::store::{Event, EventType, Store, ns_name};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;

const STATEFUL_SETS: &str = "statefulsets.apps";
const PODS: &str = "pods";
const MANAGER: &str = "kube-controller-manager";
const KUBELET: &str = "kubelet";
const REVISION_LABEL: &str = "controller-revision-hash";

/// The pod templates of each StatefulSet's revisions, by StatefulSet uid then revision name:
/// a pod recreated on the current revision gets that revision's template.
type Revisions = HashMap<String, BTreeMap<String, Value>>;

struct Controller {
    store: Arc<Store>,
    cfg: Workloads,
    revisions: Mutex<Revisions>,
}

pub async fn run(store: Arc<Store>, cfg: Workloads) {
    let mut rx = store.subscribe();
    let controller = Arc::new(Controller {
        store,
        cfg,
        revisions: Mutex::new(HashMap::new()),
    });
    controller.rescan();
    loop {
        match rx.recv().await {
            Ok(e) => controller.on_event(&e),
            Err(RecvError::Lagged(_)) => controller.rescan(),
            Err(RecvError::Closed) => return,
        }
    }
}

fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn int(o: &Value, pointer: &str, default: i64) -> i64 {
    o.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// `<name>-<hash of the template>`, as the StatefulSet controller names a revision.
fn revision_name(sts: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&sts.pointer("/spec/template"))
        .unwrap_or_default()
        .hash(&mut h);
    format!(
        "{}-{:08x}",
        str_at(sts, "/metadata/name"),
        h.finish() & 0xffff_ffff
    )
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The ordinal of pod `<sts>-<i>`.
fn ordinal(sts_name: &str, pod: &Value) -> Option<i64> {
    str_at(pod, "/metadata/name")
        .strip_prefix(sts_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

impl Controller {
    fn rt(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.store.lock().registry.types.get(key).cloned()
    }

    fn rescan(self: &Arc<Self>) {
        let all: Vec<Arc<Value>> = self
            .store
            .lock()
            .iter_ns(STATEFUL_SETS, None)
            .cloned()
            .collect();
        for sts in all {
            self.reconcile(&sts);
        }
    }

    fn on_event(self: &Arc<Self>, e: &Event) {
        match e.key.as_str() {
            STATEFUL_SETS if e.kind == EventType::Deleted => {
                self.lock_revisions()
                    .remove(str_at(&e.object, "/metadata/uid"));
            }
            STATEFUL_SETS => self.reconcile(&e.object),
            PODS => {
                let Some(owner) = e.object.pointer("/metadata/ownerReferences/0") else {
                    return;
                };
                if owner["kind"] != "StatefulSet" {
                    return;
                }
                let (ns, _) = ns_name(&e.object);
                let sts = self
                    .store
                    .lock()
                    .get(STATEFUL_SETS, &ns, str_at(owner, "/name"))
                    .cloned();
                if let Some(sts) = sts {
                    self.reconcile(&sts);
                }
            }
            _ => {}
        }
    }

    fn lock_revisions(&self) -> std::sync::MutexGuard<'_, Revisions> {
        self.revisions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass of the controller over `sts`: a pod created or deleted at most per ordinal,
    /// then the status.
    fn reconcile(self: &Arc<Self>, sts: &Value) {
        if sts.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let (ns, name) = ns_name(sts);
        let uid = str_at(sts, "/metadata/uid").to_string();
        let update = revision_name(sts);
        let current = match str_at(sts, "/status/currentRevision") {
            "" => update.clone(),
            c => c.to_string(),
        };
        let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let current_template = {
            let mut revisions = self.lock_revisions();
            let known = revisions.entry(uid.clone()).or_default();
            known.insert(update.clone(), template.clone());
            known.get(&current).cloned().unwrap_or(template)
        };
        let replicas = int(sts, "/spec/replicas", 1).max(0);
        let partition = int(sts, "/spec/updateStrategy/rollingUpdate/partition", 0).max(0);
        let pods: BTreeMap<i64, Arc<Value>> = self
            .store
            .lock()
            .iter_ns(PODS, Some(&ns))
            .filter(|p| str_at(p, "/metadata/ownerReferences/0/uid") == uid)
            .filter_map(|p| Some((ordinal(&name, p)?, p.clone())))
            .collect();

        for i in 0..replicas {
            if !pods.contains_key(&i) {
                let (revision, template) = match i >= partition {
                    true => (&update, sts.pointer("/spec/template").cloned()),
                    false => (&current, Some(current_template.clone())),
                };
                self.create_pod(sts, i, revision, template.unwrap_or(json!({})));
            }
        }
        for pod in pods.range(replicas..).map(|(_, p)| p) {
            self.delete_pod(&ns, pod);
        }
        // One pod at a time, the highest ordinal first, and only with every pod ready.
        let all_ready = pods.len() as i64 == replicas && pods.values().all(|p| is_ready(p));
        if all_ready
            && let Some((_, stale)) = pods
                .range(partition.min(replicas)..replicas)
                .rev()
                .find(|(_, p)| str_at(p, &format!("/metadata/labels/{REVISION_LABEL}")) != update)
        {
            self.delete_pod(&ns, stale);
        }
        self.write_status(sts, &pods, replicas, &current, &update);
    }

    fn create_pod(self: &Arc<Self>, sts: &Value, i: i64, revision: &str, template: Value) {
        let Some(rt) = self.rt(PODS) else { return };
        let (ns, name) = ns_name(sts);
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        labels[REVISION_LABEL] = json!(revision);
        labels["statefulset.kubernetes.io/pod-name"] = json!(format!("{name}-{i}"));
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{name}-{i}"), "namespace": ns, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": name, "uid": str_at(sts, "/metadata/uid"),
                    "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": template.get("spec").cloned().unwrap_or(json!({})),
            "status": {"phase": "Pending"}
        });
        let opts = WriteOpts {
            manager: MANAGER.into(),
            ..Default::default()
        };
        let Ok(created) = self.store.create(&rt, "v1", &ns, pod, &opts) else {
            return;
        };
        let images: Vec<String> = template
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["image"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let delays: Option<Vec<std::time::Duration>> =
            images.iter().map(|i| self.cfg.ready_after(i)).collect();
        // An image that never becomes ready leaves its pod Pending.
        let Some(delays) = delays else { return };
        let delay = delays.into_iter().max().unwrap_or(self.cfg.ready_delay);
        let this = self.clone();
        let uid = str_at(&created, "/metadata/uid").to_string();
        let pod_name = format!("{name}-{i}");
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            this.mark_ready(&ns, &pod_name, &uid);
        });
    }

    fn mark_ready(&self, ns: &str, name: &str, uid: &str) {
        let Some(rt) = self.rt(PODS) else { return };
        let Ok(pod) = self.store.get(&rt, ns, name) else {
            return;
        };
        if str_at(&pod, "/metadata/uid") != uid {
            return;
        }
        let now = crate::crud::now();
        let status = json!({"phase": "Running", "startTime": now, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]});
        let _ = self.store.write_status(&rt, ns, name, status, KUBELET);
    }

    fn delete_pod(&self, ns: &str, pod: &Value) {
        let Some(rt) = self.rt(PODS) else { return };
        let opts = DeleteOpts {
            precondition_uid: Some(str_at(pod, "/metadata/uid").to_string()),
            ..Default::default()
        };
        let _ = self
            .store
            .delete(&rt, ns, str_at(pod, "/metadata/name"), &opts);
    }

    fn write_status(
        &self,
        sts: &Value,
        pods: &BTreeMap<i64, Arc<Value>>,
        replicas: i64,
        current: &str,
        update: &str,
    ) {
        let Some(rt) = self.rt(STATEFUL_SETS) else {
            return;
        };
        let on = |revision: &str| {
            pods.values()
                .filter(|p| str_at(p, &format!("/metadata/labels/{REVISION_LABEL}")) == revision)
                .count() as i64
        };
        let ready = pods.values().filter(|p| is_ready(p)).count() as i64;
        let updated = on(update);
        // The update is complete: its revision becomes the current one.
        let complete = updated == replicas && ready == replicas;
        let current = if complete { update } else { current };
        let mut status = serde_json::Map::new();
        status.insert(
            "observedGeneration".into(),
            json!(int(sts, "/metadata/generation", 1)),
        );
        status.insert("replicas".into(), json!(pods.len()));
        status.insert("currentRevision".into(), json!(current));
        status.insert("updateRevision".into(), json!(update));
        status.insert("collisionCount".into(), json!(0));
        // Zero counts are omitted, as the API server's omitempty does.
        for (k, v) in [
            ("readyReplicas", ready),
            ("availableReplicas", ready),
            ("currentReplicas", on(current)),
            ("updatedReplicas", updated),
        ] {
            if v != 0 {
                status.insert(k.into(), json!(v));
            }
        }
        let status = Value::Object(status);
        if sts.get("status") == Some(&status) {
            return;
        }
        let (ns, name) = ns_name(sts);
        // A conflict or a deleted object just means a newer event will come.
        let _ = self.store.write_status(&rt, &ns, &name, status, MANAGER);
    }
}
