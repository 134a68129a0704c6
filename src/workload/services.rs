//! The Services serin generates for a Deployment or DaemonSet target, as Flagger generates them:
//! `<apex>` (production traffic, selecting the primary), `<apex>-primary` and
//! `<apex>-canary`. Rendered purely; the controller adds owner references, takes over an
//! existing apex Service by its selector only, and applies them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::canary::CanarySpec;
use crate::api::common::CustomMetadata;

/// Annotations that stop Flux from reverting objects serin manages.
pub const FLUX_OPT_OUT: [(&str, &str); 2] = [
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];

/// Which generated Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Apex,
    Primary,
    Canary,
}

/// Whether a Service carries every [`FLUX_OPT_OUT`] annotation (a taken-over apex Service
/// gets them too, as Flagger does: Flux must not put the user's selector back, which would
/// send production traffic to the target serin scaled to zero; they go when it is handed
/// back).
pub fn opts_out_of_gitops(service: &Service) -> bool {
    let annotations = service.metadata.annotations.as_ref();
    FLUX_OPT_OUT.iter().all(|(k, v)| {
        annotations
            .and_then(|a| a.get(*k))
            .is_some_and(|value| value == v)
    })
}

/// With `service.portDiscovery`, the target's other container ports, as Flagger adds them
/// to the generated Services: every container port but the main one (`targetPort`, or
/// `port`), of every container but the mesh's sidecars, named after the container port or
/// `tcp-<container>-<index>`.
pub fn discovered_ports(spec: &CanarySpec, pod: Option<&PodSpec>) -> Vec<ServicePort> {
    let service = &spec.service;
    if service.port_discovery != Some(true) {
        return Vec::new();
    }
    let main = service.target_port();
    let is_main = |p: &ContainerPort| match &main {
        IntOrString::Int(n) => p.container_port == *n,
        IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
    };
    let mut ports: Vec<ServicePort> = Vec::new();
    for container in pod.map(|p| p.containers.as_slice()).unwrap_or_default() {
        if matches!(container.name.as_str(), "istio-proxy" | "envoy") {
            continue;
        }
        for (i, p) in container.ports.iter().flatten().enumerate() {
            if is_main(p) || ports.iter().any(|q| q.port == p.container_port) {
                continue;
            }
            ports.push(ServicePort {
                name: Some(
                    p.name
                        .clone()
                        .unwrap_or_else(|| format!("tcp-{}-{i}", container.name)),
                ),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                port: p.container_port,
                target_port: Some(IntOrString::Int(p.container_port)),
                ..ServicePort::default()
            });
        }
    }
    ports
}

/// Renders the generated Service `role` of a canary whose target's selector label is
/// `key: value`; `discovered`: the ports of [`discovered_ports`].
// Long on purpose: the Service's metadata, ports and selector, as Flagger builds them.
pub fn render(
    spec: &CanarySpec,
    namespace: &str,
    key: &str,
    value: &str,
    role: Role,
    discovered: &[ServicePort],
) -> Service {
    let apex = spec.service_name();
    let (name, selector_value, custom) = match role {
        Role::Apex => (
            apex.to_string(),
            format!("{value}-primary"),
            &spec.service.apex,
        ),
        Role::Primary => (
            format!("{apex}-primary"),
            format!("{value}-primary"),
            &spec.service.primary,
        ),
        Role::Canary => (
            format!("{apex}-canary"),
            value.to_string(),
            &spec.service.canary,
        ),
    };
    let (mut labels, mut annotations) = custom_metadata(custom);
    labels.insert(key.to_string(), name.clone());
    for (k, v) in FLUX_OPT_OUT {
        annotations.insert(k.to_string(), v.to_string());
    }
    // `unmanagedMetadata`: keys other controllers own; serin never sends them, so server-side
    // apply leaves their values alone (as it does every key serin does not send).
    if let Some(unmanaged) = &spec.service.unmanaged_metadata {
        for k in unmanaged.labels.iter().flatten() {
            labels.remove(k);
        }
        for k in unmanaged.annotations.iter().flatten() {
            annotations.remove(k);
        }
    }
    let service = &spec.service;
    let port = ServicePort {
        name: Some(service.port_name().to_string()),
        protocol: Some("TCP".into()),
        port: service.port,
        target_port: Some(service.target_port()),
        app_protocol: service.app_protocol.clone(),
        ..ServicePort::default()
    };
    let traffic_distribution = service.traffic_distribution.and_then(|t| {
        serde_json::to_value(t)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    });
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: service
                .headless
                .unwrap_or(false)
                .then(|| "None".to_string()),
            selector: Some(BTreeMap::from([(key.to_string(), selector_value)])),
            ports: Some(
                std::iter::once(port)
                    .chain(discovered.iter().cloned())
                    .collect(),
            ),
            traffic_distribution,
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn custom_metadata(
    custom: &Option<CustomMetadata>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let labels = custom
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let annotations = custom
        .as_ref()
        .and_then(|c| c.annotations.clone())
        .unwrap_or_default();
    (labels, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> CanarySpec {
        serde_json::from_value(json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80, "targetPort": "http", "headless": false,
                        "trafficDistribution": "PreferClose",
                        "canary": {"labels": {"tier": "canary"}}},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10}
        }))
        .unwrap()
    }

    #[test]
    fn three_services_select_the_right_pods() {
        let spec = spec();
        let render_json = |role| {
            serde_json::to_value(render(&spec, "test", "app", "podinfo", role, &[])).unwrap()
        };
        let apex = render_json(Role::Apex);
        assert_eq!(apex["metadata"]["name"], "podinfo");
        assert_eq!(apex["spec"]["selector"], json!({"app": "podinfo-primary"}));
        assert_eq!(
            apex["spec"]["ports"][0],
            json!({"name": "http", "protocol": "TCP",
            "port": 80, "targetPort": "http"})
        );
        assert_eq!(apex["spec"]["trafficDistribution"], "PreferClose");
        assert_eq!(
            apex["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"],
            "disabled"
        );
        let primary = render_json(Role::Primary);
        assert_eq!(primary["metadata"]["name"], "podinfo-primary");
        assert_eq!(
            primary["spec"]["selector"],
            json!({"app": "podinfo-primary"})
        );
        let canary = render_json(Role::Canary);
        assert_eq!(canary["metadata"]["name"], "podinfo-canary");
        assert_eq!(canary["spec"]["selector"], json!({"app": "podinfo"}));
        assert_eq!(
            canary["metadata"]["labels"],
            json!({"tier": "canary", "app": "podinfo-canary"})
        );
        assert!(canary["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn headless_and_custom_apex_name() {
        let mut spec = spec();
        spec.service.headless = Some(true);
        spec.service.name = Some("frontend".into());
        let svc = render(&spec, "test", "app", "podinfo", Role::Canary, &[]);
        assert_eq!(svc.metadata.name.as_deref(), Some("frontend-canary"));
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    }

    #[test]
    fn port_discovery_adds_the_targets_other_container_ports() {
        let mut spec = spec();
        spec.service.port = 9898;
        spec.service.port_discovery = Some(true);
        let pod: PodSpec = serde_json::from_value(json!({"containers": [
            {"name": "podinfo", "ports": [
                {"name": "http", "containerPort": 9898},
                {"name": "http-metrics", "containerPort": 8080},
                {"containerPort": 8888}]},
            {"name": "istio-proxy", "ports": [{"containerPort": 15090}]}]}))
        .unwrap();
        let ports = discovered_ports(&spec, Some(&pod));
        let svc = serde_json::to_value(render(
            &spec,
            "test",
            "app",
            "podinfo",
            Role::Canary,
            &ports,
        ))
        .unwrap();
        let listed: Vec<(String, i64)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["port"].as_i64().unwrap(),
                )
            })
            .collect();
        // Flagger's own scheduler test expects exactly these ports.
        assert_eq!(
            listed,
            [
                ("http".to_string(), 9898),
                ("http-metrics".to_string(), 8080),
                ("tcp-podinfo-2".to_string(), 8888)
            ]
        );
        spec.service.port_discovery = None;
        assert!(discovered_ports(&spec, Some(&pod)).is_empty());
    }

    #[test]
    fn unmanaged_keys_are_never_sent() {
        let mut spec = spec();
        spec.service.unmanaged_metadata = serde_json::from_value(json!({
            "labels": ["tier"], "annotations": ["kustomize.toolkit.fluxcd.io/reconcile"]}))
        .unwrap();
        let svc = render(&spec, "test", "app", "podinfo", Role::Canary, &[]);
        let labels = svc.metadata.labels.unwrap();
        assert!(!labels.contains_key("tier"), "{labels:?}");
        assert_eq!(labels["app"], "podinfo-canary");
        let annotations = svc.metadata.annotations.unwrap();
        assert!(!annotations.contains_key("kustomize.toolkit.fluxcd.io/reconcile"));
        assert!(annotations.contains_key("helm.toolkit.fluxcd.io/driftDetection"));
    }
}
