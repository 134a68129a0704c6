//! `serin-stack demo`: a ready cluster to run serin against: a podinfo-like Deployment and
//! its Service under load in namespace `test`, serin's CRDs (from the repository's
//! `crds/crds.yaml`), MetricTemplates for the Prometheus, Datadog and New Relic endpoints
//! the stack runs, and a Canary manifest to apply.

use crate::Stack;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub const NAMESPACE: &str = "test";
pub const IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";

/// A file of the repository (`crds/crds.yaml`, ...): in the working directory, else where
/// this crate was built from.
fn find(path: &str) -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    [PathBuf::from(path), repo]
        .into_iter()
        .find(|p| p.is_file())
}

/// serin's CRDs.
pub fn find_crds() -> Option<PathBuf> {
    find("crds/crds.yaml")
}

fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).context("parsing YAML")?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// A CRD accepting any spec, with a status subresource: the stand-in for a mesh's CRDs.
fn open_crd(group: &str, kind: &str, plural: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"name": v, "served": true, "storage": i == 0, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
        })
        .collect();
    // Gateway API's group is under k8s.io: the API server wants the approval annotation.
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"),
            "annotations": {"api-approved.kubernetes.io": "unapproved, serin-stack demo"}},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
            "versions": versions}})
}

/// What the provider's routing needs in the cluster: its CRDs, or the user's Ingress.
fn mesh_objects(provider: &str) -> Vec<Value> {
    match provider {
        "istio" => vec![
            open_crd(
                "networking.istio.io",
                "VirtualService",
                "virtualservices",
                &["v1beta1", "v1alpha3", "v1"],
            ),
            open_crd(
                "networking.istio.io",
                "DestinationRule",
                "destinationrules",
                &["v1beta1", "v1alpha3", "v1"],
            ),
        ],
        p if p.starts_with("gatewayapi") => vec![open_crd(
            "gateway.networking.k8s.io",
            "HTTPRoute",
            "httproutes",
            &["v1", "v1beta1"],
        )],
        p if p == "linkerd" || p == "osm" || p.starts_with("smi") => vec![open_crd(
            "split.smi-spec.io",
            "TrafficSplit",
            "trafficsplits",
            &["v1alpha2", "v1alpha1", "v1alpha3"],
        )],
        "nginx" => vec![
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "podinfo", "namespace": NAMESPACE},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}),
        ],
        _ => Vec::new(),
    }
}

/// Creates the demo's objects for a provider. Returns notes for the user (what was skipped
/// and why).
pub fn populate(stack: &Stack, provider: &str) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    stack.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )?;
    stack.create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": NAMESPACE, "labels": {"app": "podinfo"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {"metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfod", "image": IMAGE,
                    "ports": [{"name": "http", "containerPort": 9898}]}]}}}}))?;
    stack.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898}]}}))?;
    // The routing CRDs the project keeps for the local stack, else open stand-ins.
    let routing_crds = match find("e2e/crds/routing.yaml") {
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            yaml_documents(&text)?
        }
        None => Vec::new(),
    };
    let have_crds = !routing_crds.is_empty();
    for crd in routing_crds {
        stack.create(crd).context("creating the routing CRDs")?;
    }
    for o in mesh_objects(provider) {
        if have_crds && o["kind"] == "CustomResourceDefinition" {
            continue;
        }
        stack.create(o)?;
    }
    let Some(crds) = find_crds() else {
        notes.push("crds/crds.yaml not found: no CRDs or MetricTemplates created (run from the repository)".into());
        return Ok(notes);
    };
    let text =
        std::fs::read_to_string(&crds).with_context(|| format!("reading {}", crds.display()))?;
    for crd in yaml_documents(&text)? {
        stack
            .create(crd)
            .with_context(|| format!("creating CRDs from {}", crds.display()))?;
    }
    for template in templates(stack) {
        stack.create(template)?;
    }
    Ok(notes)
}

fn templates(stack: &Stack) -> Vec<Value> {
    let meta = |name: &str| json!({"name": name, "namespace": NAMESPACE});
    let mut out = Vec::new();
    if let Some(url) = stack.prometheus_url() {
        let sel = r#"kubernetes_namespace="{{ namespace }}", kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#;
        out.push(json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate", "metadata": meta("error-rate"),
            "spec": {"provider": {"type": "prometheus", "address": url},
                "query": format!("100 - sum(rate(http_request_duration_seconds_count{{{sel}, status!~\"5.*\"}}[{{{{ interval }}}}])) \
                    / sum(rate(http_request_duration_seconds_count{{{sel}}}[{{{{ interval }}}}])) * 100")}}));
    }
    if let Some(url) = stack.datadog_url() {
        out.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("datadog"),
            "stringData": {"datadog_api_key": "serin-dd-api-key", "datadog_application_key": "serin-dd-application-key"}}));
        out.push(json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate", "metadata": meta("dd-error-rate"),
            "spec": {"provider": {"type": "datadog", "address": url, "secretRef": {"name": "datadog"}},
                "query": "sum:trace.http.request.errors{service:{{ target }},kube_namespace:{{ namespace }}}.as_count() / sum:trace.http.request.hits{service:{{ target }},kube_namespace:{{ namespace }}}.as_count() * 100"}}));
    }
    if let Some(url) = stack.newrelic_url() {
        out.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("newrelic"),
            "stringData": {"newrelic_account_id": "1234567", "newrelic_query_key": "serin-nr-query-key"}}));
        out.push(json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate", "metadata": meta("nr-error-rate"),
            "spec": {"provider": {"type": "newrelic", "address": url, "secretRef": {"name": "newrelic"}},
                "query": "SELECT filter(count(*), WHERE httpResponseCode >= 500) / count(*) * 100 FROM Transaction WHERE appName = '{{ target }}' AND k8s.namespaceName = '{{ namespace }}'"}}));
    }
    out
}

/// A Canary for podinfo (blue/green with plain Services, weighted otherwise) that uses the
/// builtin metrics and the templates created.
pub fn canary_yaml(stack: &Stack, provider: &str) -> String {
    // The builtins hold (serin's `noDataPolicy` extension) while the new version's first
    // requests reach Prometheus, instead of counting a failed check as Flagger would.
    let mut metrics = String::from(
        "      - name: request-success-rate\n        thresholdRange: {min: 99}\n        interval: 30s\n        \
         noDataPolicy: hold\n      \
         - name: request-duration\n        thresholdRange: {max: 500}\n        interval: 30s\n        \
         noDataPolicy: hold\n",
    );
    for (present, name, template) in [
        (stack.prometheus_url().is_some(), "error-rate", "error-rate"),
        (
            stack.datadog_url().is_some(),
            "datadog-error-rate",
            "dd-error-rate",
        ),
        (
            stack.newrelic_url().is_some(),
            "newrelic-error-rate",
            "nr-error-rate",
        ),
    ] {
        if present && find_crds().is_some() {
            metrics.push_str(&format!(
                "      - name: {name}\n        templateRef: {{name: {template}}}\n        thresholdRange: {{max: 1}}\n        interval: 30s\n        noDataPolicy: hold\n"
            ));
        }
    }
    // Plain Services can only do blue/green; the others shift weights step by step.
    let (routing, analysis) = match provider {
        "kubernetes" => (String::new(), "    iterations: 5\n".to_string()),
        "nginx" => (
            "  ingressRef:\n    apiVersion: networking.k8s.io/v1\n    kind: Ingress\n    name: podinfo\n".to_string(),
            "    stepWeight: 20\n    maxWeight: 60\n".to_string(),
        ),
        _ => (String::new(), "    stepWeight: 20\n    maxWeight: 60\n".to_string()),
    };
    let gateway = if provider.starts_with("gatewayapi") {
        "    gatewayRefs:\n      - name: gateway\n        namespace: istio-ingress\n"
    } else {
        ""
    };
    format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: {NAMESPACE}\nspec:\n  \
         provider: {provider}\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n{routing}  \
         progressDeadlineSeconds: 60\n  service:\n    port: 9898\n{gateway}  analysis:\n    interval: 10s\n    threshold: 2\n\
         {analysis}    metrics:\n{metrics}"
    )
}
