//! Helpers for tests against the stack, shared by its own tests and serin's: a client,
//! object creation, podinfo-like workloads, raw HTTP, the one poll of the stack's tests
//! ([`poll`]). Test code: a failed step panics with the reason, which is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_http;
pub mod poll;
pub mod switch;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::time::Duration;
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
    poll::Poll::new(
        format!("{name} to get {ready} ready replicas"),
        Duration::from_secs(10),
    )
    .until(|| async {
        let d = api.get(name).await.unwrap();
        d.status.and_then(|s| s.ready_replicas).unwrap_or(0) == ready
    })
    .await;
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

/// Installs Istio's VirtualService kind.
pub async fn virtual_service_crd(client: &kube::Client) {
    crd(
        client,
        "networking.istio.io",
        "v1beta1",
        "VirtualService",
        "virtualservices",
    )
    .await;
}

/// podinfo (`primary_image`, `canary_image`) with the Istio VirtualService kind installed
/// and the apex split 50/50 between `podinfo-primary` and `podinfo-canary`.
pub async fn podinfo_split_by_istio(
    client: &kube::Client,
    primary_image: &str,
    canary_image: &str,
) {
    podinfo(client, primary_image, canary_image).await;
    virtual_service_crd(client).await;
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

/// The SMI TrafficSplit kind installed and the apex `podinfo` split between
/// `podinfo-canary` and `podinfo-primary` by their weights: quantities (`"400m"`), as Flagger
/// writes them for Linkerd.
pub async fn podinfo_split_by_smi(client: &kube::Client, canary: &str, primary: &str) {
    crd(
        client,
        "split.smi-spec.io",
        "v1alpha1",
        "TrafficSplit",
        "trafficsplits",
    )
    .await;
    create(
        client,
        json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "podinfo", "namespace": "default"},
            "spec": {"service": "podinfo", "backends": [
                {"service": "podinfo-canary", "weight": canary},
                {"service": "podinfo-primary", "weight": primary}]}}),
    )
    .await;
}

/// An NGINX Ingress `name` of host `app.example.com`, path `/`, to `service`, with
/// `annotations`.
pub fn ingress(name: &str, service: &str, annotations: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [{"path": "/",
            "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 9898}}}}]}}]}})
}

/// The canary Ingress `podinfo-canary` (to the Service of that name) that ingress-nginx reads:
/// `nginx.ingress.kubernetes.io/canary: "true"` and `annotations` (names without that
/// prefix: `("canary-weight", "40")`).
pub fn canary_ingress(annotations: &[(&str, &str)]) -> Value {
    let prefixed = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    let mut all = serde_json::Map::new();
    all.insert(prefixed("canary"), json!("true"));
    for (name, value) in annotations {
        all.insert(prefixed(name), json!(value));
    }
    ingress("podinfo-canary", "podinfo-canary", Value::Object(all))
}

/// Runs the traffic world's manual clock `seconds` one-second steps.
pub fn step_traffic(stack: &crate::Stack, seconds: u32) {
    for _ in 0..seconds {
        stack.traffic().step(Duration::from_secs(1));
    }
}

/// A stack (`config`, with the traffic world's manual clock and pods ready at once) with
/// the [`podinfo`] layout, `podinfo:6.0.1-faulty` as the canary: `podinfo-primary` healthy
/// behind the apex and `podinfo` failing 30 % behind `podinfo-canary`, 20 requests/s each.
/// Its world has run 10 s.
pub async fn podinfo_world(config: crate::StackConfig) -> crate::Stack {
    let stack = crate::Stack::start(crate::StackConfig {
        scenario: crate::Scenario::parse("workloads:\n  readyDelay: 0s\n").unwrap(),
        manual_traffic_clock: true,
        ..config
    })
    .await
    .unwrap();
    podinfo(&client(&stack), "podinfo:6.0.0", "podinfo:6.0.1-faulty").await;
    stack.traffic().reroute();
    step_traffic(&stack, 10);
    stack
}

/// Asserts that `got` is within 5 % of `want`.
pub fn assert_near(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= want.abs() * 0.05 + 1e-9,
        "{what}: got {got}, want {want} ± 5 %"
    );
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

/// The TEST-ONLY service-account key the Stackdriver emulator's token endpoint accepts
/// (`tests/fixtures/`; its public key is the emulator's default), as a Secret's
/// `serviceAccountKey` holds it, with `token_uri` set (the emulator's `<url>/token`).
pub fn stackdriver_key(token_uri: &str) -> String {
    with_token_uri(
        include_str!("../../../../tests/fixtures/stackdriver-TEST-ONLY-service-account-key.json"),
        token_uri,
    )
}

/// A TEST-ONLY key of the same account that the emulator does not know (its JWTs fail the
/// signature check).
pub fn stackdriver_unknown_key(token_uri: &str) -> String {
    with_token_uri(
        include_str!(
            "../../../../tests/fixtures/stackdriver-TEST-ONLY-unknown-service-account-key.json"
        ),
        token_uri,
    )
}

fn with_token_uri(key: &str, token_uri: &str) -> String {
    let mut key: Value = serde_json::from_str(key).unwrap();
    key["token_uri"] = json!(token_uri);
    key.to_string()
}

/// The TEST-ONLY key's public half (PEM, `RSA PUBLIC KEY`), which the Stackdriver emulator
/// checks JWTs with.
pub fn stackdriver_public_key() -> &'static str {
    crate::stackdriver::TEST_PUBLIC_KEY
}

/// The headers of a `GetMetricData` request to the CloudWatch emulator at `url` with `body`,
/// signed with `secret` for the emulator's default key and region by the emulator's own SigV4
/// algorithm (for tests of the emulator's answers; serin's signer is tested against the
/// emulator's check instead).
pub fn cloudwatch_signed(url: &str, body: &str, secret: &str) -> Vec<(String, String)> {
    let config = crate::CloudWatchConfig::default();
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let now = chrono::Utc::now();
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-amz-json-1.0".to_string(),
        ),
        ("host".to_string(), host.to_string()),
        (
            "x-amz-date".to_string(),
            now.format("%Y%m%dT%H%M%SZ").to_string(),
        ),
        (
            "x-amz-target".to_string(),
            "GraniteServiceVersion20100801.GetMetricData".to_string(),
        ),
    ];
    let signed = crate::cloudwatch::sigv4::Signed {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: body.as_bytes(),
        now,
    };
    let keys = crate::cloudwatch::sigv4::Keys {
        access_key_id: &config.access_key_id,
        secret_access_key: secret,
        session_token: None,
        region: &config.region,
        service: "monitoring",
    };
    let authorization = crate::cloudwatch::sigv4::authorization(&signed, &keys);
    headers.push(("authorization".to_string(), authorization));
    headers
}
