//! A stand-in for the scheduler and the kubelets of a real control plane: registers Nodes,
//! binds pending Pods to them, and reports the Pods Running and then Ready after the image's
//! ready delay (the scenario's `workloads` rules: an image containing `broken` never becomes
//! ready). No container runs. The real controllers then compute Deployment, ReplicaSet and
//! DaemonSet status from these Pods, and the EndpointSlice controller their endpoints.

use crate::scenario::Workloads;
use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The labels every stand-in node carries; a nodeSelector on anything else matches none.
fn node_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("kubernetes.io/hostname".to_string(), name.to_string()),
    ])
}

pub fn node_name(i: u32) -> String {
    format!("node-{}", i + 1)
}

struct Kubelet {
    client: Client,
    cfg: Workloads,
    nodes: Vec<String>,
    /// Pods (by uid) whose start has been scheduled, so a re-list does not start them twice.
    started: Mutex<HashSet<String>>,
    next_ip: AtomicU32,
    next_node: AtomicU32,
}

/// Registers the nodes, then runs until the task is aborted, serving the Pods of `namespace`
/// (`None`: of every namespace).
pub async fn run(client: Client, cfg: Workloads, namespace: Option<String>) -> Result<()> {
    let nodes = register_nodes(&client, cfg.nodes).await?;
    let kubelet = Arc::new(Kubelet {
        client: client.clone(),
        cfg,
        nodes,
        started: Mutex::new(HashSet::new()),
        next_ip: AtomicU32::new(2),
        next_node: AtomicU32::new(0),
    });
    let pods: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                kubelet.clone().handle(pod)
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            // A failed watch (an API server under load, an expired resource version) is
            // re-established by the watcher after its backoff; ending here would leave every
            // later Pod unready.
            Err(e) => tracing::warn!("kubelet: pod watch: {e}"),
        }
    }
}

async fn register_nodes(client: &Client, count: u32) -> Result<Vec<String>> {
    let api: Api<Node> = Api::all(client.clone());
    let mut names = Vec::new();
    for i in 0..count {
        let name = node_name(i);
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": node_labels(&name)},
        }))?;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
        }
        let status = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "serin-stack kubelet stand-in", "lastHeartbeatTime": crate::crud::now(),
                "lastTransitionTime": crate::crud::now()}],
            "addresses": [{"type": "InternalIP", "address": format!("10.1.0.{}", i + 1)},
                {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "nodeInfo": {"kubeletVersion": "v1.37.2-serin-stack", "operatingSystem": "linux",
                "architecture": "amd64", "containerRuntimeVersion": "none://0",
                "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
                "machineID": "", "systemUUID": "", "bootID": ""},
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("reporting node {name} ready"))?;
        names.push(name);
    }
    Ok(names)
}

impl Kubelet {
    fn handle(self: Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            // A bound pod is deleted gracefully: the API server waits for its kubelet to
            // confirm that the containers stopped, which is at once here.
            if spec.node_name.is_some() {
                tokio::spawn(async move { self.finish_deletion(&pod, uid).await });
            }
            return;
        }
        match spec.node_name {
            None => {
                if let Some(node) = self.choose_node(&pod) {
                    tokio::spawn(async move { self.bind(&pod, &node).await });
                }
            }
            Some(node) => {
                if !self.lock().insert(uid) {
                    return;
                }
                tokio::spawn(async move { self.start(pod, node).await });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A DaemonSet pod names its node through a required node affinity on `metadata.name`;
    /// other pods go round-robin to the nodes their nodeSelector matches.
    fn choose_node(&self, pod: &Pod) -> Option<String> {
        let spec = pod.spec.as_ref()?;
        let pinned = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .and_then(|r| {
                r.node_selector_terms.iter().find_map(|t| {
                    t.match_fields.as_ref()?.iter().find_map(|f| {
                        (f.key == "metadata.name").then(|| f.values.clone()?.first().cloned())?
                    })
                })
            });
        if let Some(node) = pinned {
            return self.nodes.contains(&node).then_some(node);
        }
        let selector = spec.node_selector.clone().unwrap_or_default();
        let fits: Vec<&String> = self
            .nodes
            .iter()
            .filter(|n| {
                let labels = node_labels(n);
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        if fits.is_empty() {
            return None;
        }
        let i = self.next_node.fetch_add(1, Ordering::Relaxed) as usize;
        Some(fits[i % fits.len()].clone())
    }

    async fn bind(&self, pod: &Pod, node: &str) {
        let (ns, name) = ns_name(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        // A pod deleted or bound meanwhile answers an error: nothing to do.
        if let Err(e) = api
            .create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
            .await
        {
            tracing::debug!("kubelet: binding {ns}/{name} to {node}: {e}");
        }
    }

    /// Reports the pod Running at once and Ready after its image's delay (never for images
    /// that never become ready).
    async fn start(&self, pod: Pod, node: String) {
        let (ns, name) = ns_name(&pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let ip = format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2);
        let images: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter_map(|c| c.image.clone())
            .collect();
        let delay = images
            .iter()
            .map(|i| self.cfg.ready_after(i))
            .try_fold(std::time::Duration::ZERO, |acc, d| d.map(|d| acc.max(d)));
        let started_at = crate::crud::now();
        let host_ip = self
            .nodes
            .iter()
            .position(|n| *n == node)
            .map(|i| format!("10.1.0.{}", i + 1))
            .unwrap_or_default();
        let report = |ready: bool| status(&pod, ready, &ip, &host_ip, &started_at);
        let patch = PatchParams::default();
        if let Err(e) = api
            .patch_status(&name, &patch, &Patch::Merge(&report(false)))
            .await
        {
            tracing::debug!("kubelet: pod {ns}/{name} running: {e}");
            return;
        }
        let Some(delay) = delay else { return };
        tokio::time::sleep(delay).await;
        if let Err(e) = api
            .patch_status(&name, &patch, &Patch::Merge(&report(true)))
            .await
        {
            tracing::debug!("kubelet: pod {ns}/{name} ready: {e}");
        }
    }

    async fn finish_deletion(&self, pod: &Pod, uid: String) {
        let (ns, name) = ns_name(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&name, &params).await {
            tracing::debug!("kubelet: deleting pod {ns}/{name}: {e}");
        }
        self.lock().remove(&uid);
    }
}

fn ns_name(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// The pod status a kubelet reports for a running pod, its containers ready or not.
fn status(pod: &Pod, ready: bool, ip: &str, host_ip: &str, started_at: &str) -> Value {
    let now = crate::crud::now();
    let flag = if ready { "True" } else { "False" };
    let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({"name": c.name, "image": image, "imageID": format!("serin-stack://{image}"),
                "containerID": format!("serin-stack://{}-{}", pod.metadata.name.as_deref().unwrap_or_default(), c.name),
                "ready": ready, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": started_at}}})
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": started_at,
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", flag),
            condition("Ready", flag),
        ],
        "containerStatuses": containers,
    }})
}
