//! Helpers for tests against the stack, shared by its own tests and serin's: a client,
//! object creation, podinfo-like workloads, raw HTTP. Test code: a failed step panics with
//! the reason, which is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_http;
pub mod switch;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn client(stack: &crate::Stack) -> kube::Client {
    kube::Client::try_from(kube::Config::new(stack.url().parse().unwrap())).unwrap()
}

/// The API of `obj`'s kind, in its namespace (cluster-wide for CRDs), from its JSON.
fn api_of(client: &kube::Client, obj: &Value) -> Api<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap();
    let plural = match kind {
        "Ingress" => "ingresses".to_string(),
        "Analysis" => "analyses".to_string(),
        k => format!("{}s", k.to_lowercase()),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    if kind == "CustomResourceDefinition" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

/// Creates any object from its JSON (built-in or custom), in its namespace.
pub async fn create(client: &kube::Client, obj: Value) {
    let api = api_of(client, &obj);
    let o: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &o).await.unwrap();
}

/// Replaces an object (read, swap spec/metadata.annotations, write).
pub async fn replace(client: &kube::Client, obj: Value) {
    let api = api_of(client, &obj);
    let name = obj["metadata"]["name"].as_str().unwrap();
    let mut current = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
    for (k, v) in obj.as_object().unwrap() {
        if k == "metadata" {
            for (mk, mv) in v.as_object().unwrap() {
                current["metadata"][mk] = mv.clone();
            }
        } else {
            current[k] = v.clone();
        }
    }
    let o: DynamicObject = serde_json::from_value(current).unwrap();
    api.replace(name, &PostParams::default(), &o).await.unwrap();
}

/// A minimal CRD that accepts any spec (with a status subresource, as the meshes' CRDs have).
pub async fn crd(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) {
    create(
        client,
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            // Approved, for groups under k8s.io (Gateway API) as the API server requires.
            "metadata": {"name": format!("{plural}.{group}"),
                "annotations": {"api-approved.kubernetes.io": "unapproved, test"}},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                "versions": [{"name": version, "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }),
    )
    .await;
}

pub fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}})
}

pub fn service(name: &str, selects: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": selects}, "ports": [{"port": 9898}]}})
}

/// Waits until a Deployment reports `ready` ready replicas.
pub async fn wait_ready(client: &kube::Client, name: &str, ready: i32) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = api.get(name).await.unwrap();
        if d.status.and_then(|s| s.ready_replicas).unwrap_or(0) == ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never got {ready} ready replicas"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The podinfo layout Flagger generates: `podinfo-primary` (stable) and `podinfo` (canary
/// target) Deployments, and the apex, `-primary` and `-canary` Services.
pub async fn podinfo(client: &kube::Client, primary_image: &str, canary_image: &str) {
    create(client, deployment("podinfo-primary", primary_image, 2)).await;
    create(client, deployment("podinfo", canary_image, 1)).await;
    create(client, service("podinfo", "podinfo-primary")).await;
    create(client, service("podinfo-primary", "podinfo-primary")).await;
    create(client, service("podinfo-canary", "podinfo")).await;
    wait_ready(client, "podinfo-primary", 2).await;
    wait_ready(client, "podinfo", 1).await;
}

/// podinfo (`primary_image`, `canary_image`) with the Istio VirtualService kind installed
/// and the apex split 50/50 between `podinfo-primary` and `podinfo-canary`.
pub async fn podinfo_split_by_istio(
    client: &kube::Client,
    primary_image: &str,
    canary_image: &str,
) {
    podinfo(client, primary_image, canary_image).await;
    crd(
        client,
        "networking.istio.io",
        "v1beta1",
        "VirtualService",
        "virtualservices",
    )
    .await;
    create(
        client,
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": "default"},
            "spec": {"hosts": ["podinfo"], "http": [{"route": [
                {"destination": {"host": "podinfo-primary"}, "weight": 50},
                {"destination": {"host": "podinfo-canary"}, "weight": 50}]}]}}),
    )
    .await;
}

/// A minimal HTTP/1.0 client: (status, headers lower-cased, body).
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
