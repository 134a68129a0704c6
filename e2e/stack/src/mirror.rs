//! Over the real control plane, the traffic world reads a mirror: the Services, workloads,
//! Ingresses and routing objects of the API server, copied into the stack's in-process store
//! by watches, so routing is decided by the same code on both back-ends. Routing kinds whose
//! CRDs are installed later are picked up when they appear.
//!
//! Here too the stack plays the Gateway API controller: every HTTPRoute gets its parents
//! accepted through the real status subresource (see `traffic::gateway`).

use crate::store::{Store, ns_name};
use crate::traffic::config::Provider;
use crate::traffic::routing::{
    DAEMONSETS, DEPLOYMENTS, HTTP_ROUTES, INGRESSES, SERVICES, TRAFFIC_SPLITS, VIRTUAL_SERVICES,
};
use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A resource the world reads: its store key, group, plural, and for built-ins the version.
struct Mirrored {
    key: &'static str,
    group: &'static str,
    plural: &'static str,
    version: Option<&'static str>,
}

const MIRRORED: &[Mirrored] = &[
    Mirrored {
        key: SERVICES,
        group: "",
        plural: "services",
        version: Some("v1"),
    },
    Mirrored {
        key: DEPLOYMENTS,
        group: "apps",
        plural: "deployments",
        version: Some("v1"),
    },
    Mirrored {
        key: DAEMONSETS,
        group: "apps",
        plural: "daemonsets",
        version: Some("v1"),
    },
    Mirrored {
        key: INGRESSES,
        group: "networking.k8s.io",
        plural: "ingresses",
        version: Some("v1"),
    },
    Mirrored {
        key: VIRTUAL_SERVICES,
        group: "networking.istio.io",
        plural: "virtualservices",
        version: None,
    },
    Mirrored {
        key: HTTP_ROUTES,
        group: "gateway.networking.k8s.io",
        plural: "httproutes",
        version: None,
    },
    Mirrored {
        key: TRAFFIC_SPLITS,
        group: "split.smi-spec.io",
        plural: "trafficsplits",
        version: None,
    },
];

/// The store keys routing under `provider` reads: the workloads and Services always, and the
/// provider's routing kind. Only those are watched (and their CRDs waited for).
fn needed(provider: Provider) -> Vec<&'static Mirrored> {
    let routing = match provider {
        Provider::Kubernetes => None,
        Provider::Istio => Some(VIRTUAL_SERVICES),
        Provider::GatewayApi => Some(HTTP_ROUTES),
        Provider::Smi => Some(TRAFFIC_SPLITS),
        Provider::Nginx => Some(INGRESSES),
    };
    MIRRORED
        .iter()
        .filter(|m| [SERVICES, DEPLOYMENTS, DAEMONSETS].contains(&m.key) || Some(m.key) == routing)
        .collect()
}

/// Mirrors what routing under `provider` reads into `store` until aborted; under Gateway API
/// it also accepts HTTPRoutes as a gateway controller would.
pub async fn run(client: Client, store: Arc<Store>, provider: Provider, namespace: Option<String>) {
    let wanted = needed(provider);
    let mut started: HashSet<&'static str> = HashSet::new();
    loop {
        for m in wanted.iter().copied() {
            if started.contains(m.key) {
                continue;
            }
            if let Some(ar) = resolve(&client, m).await {
                started.insert(m.key);
                let gateway = m.key == HTTP_ROUTES;
                let scope = Scope {
                    client: client.clone(),
                    namespace: namespace.clone(),
                };
                tokio::spawn(watch(scope, store.clone(), ar, m.key, gateway));
            }
        }
        if started.len() == wanted.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The served version of a mirrored resource: fixed for built-ins, the group's preferred
/// one for custom resources once their CRD is established.
async fn resolve(client: &Client, m: &Mirrored) -> Option<ApiResource> {
    if let Some(version) = m.version {
        return Some(ApiResource {
            group: m.group.into(),
            version: version.into(),
            api_version: match m.group {
                "" => version.to_string(),
                g => format!("{g}/{version}"),
            },
            kind: String::new(),
            plural: m.plural.into(),
        });
    }
    let group = kube::discovery::group(client, m.group).await.ok()?;
    let (ar, _) = group
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.plural == m.plural)?;
    Some(ar)
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "services" => "Service",
        "deployments" => "Deployment",
        "daemonsets" => "DaemonSet",
        "ingresses" => "Ingress",
        "virtualservices" => "VirtualService",
        "httproutes" => "HTTPRoute",
        _ => "TrafficSplit",
    }
}

/// What a mirror watches: one namespace, or every one.
struct Scope {
    client: Client,
    namespace: Option<String>,
}

async fn watch(scope: Scope, store: Arc<Store>, ar: ApiResource, key: &'static str, gateway: bool) {
    let client = scope.client;
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let kind = kind_of(&ar.plural);
    let mut listed: HashSet<(String, String)> = HashSet::new();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = match events.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("mirror {key}: {e}");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                let mut value = match serde_json::to_value(&obj) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                // Objects of a list carry no apiVersion and kind; routing reads both.
                value["apiVersion"] = Value::String(ar.api_version.clone());
                value["kind"] = Value::String(kind.into());
                listed.insert(ns_name(&value));
                if gateway && !crate::traffic::gateway::accepted(&value) {
                    accept(client.clone(), ar.clone(), value.clone());
                }
                store.lock().put(key, value);
            }
            watcher::Event::Delete(obj) => {
                let value = serde_json::to_value(&obj).unwrap_or_default();
                let (ns, name) = ns_name(&value);
                store.lock().remove(key, &ns, &name);
            }
            watcher::Event::InitDone => {
                // A re-list: what the server no longer has is gone.
                let mut inner = store.lock();
                let gone: Vec<(String, String)> = inner
                    .objects
                    .get(key)
                    .map(|b| b.keys().filter(|k| !listed.contains(*k)).cloned().collect())
                    .unwrap_or_default();
                for (ns, name) in gone {
                    inner.remove(key, &ns, &name);
                }
            }
        }
    }
}

/// Writes an HTTPRoute's accepted parents through the status subresource.
fn accept(client: Client, ar: ApiResource, route: Value) {
    tokio::spawn(async move {
        let (ns, name) = ns_name(&route);
        let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
        let patch = serde_json::json!({"status": crate::traffic::gateway::status(&route)});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!("gateway: accepting HTTPRoute {ns}/{name}: {e}");
        }
    });
}
