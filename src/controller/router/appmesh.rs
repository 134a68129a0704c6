//! AWS App Mesh: `appmesh:v1beta2` (the App Mesh controller's current API) and `appmesh`
//! (the legacy v1beta1 API).
//!
//! v1beta2: VirtualNodes `<apex>-primary` and `<apex>-canary` (selecting the pods the
//! generated Services select), VirtualRouters `<apex>` (the split) and `<apex>-canary` (all
//! to the canary, for load testers and checks), and VirtualServices `<apex>` and
//! `<apex>-canary` that point at them. v1beta1 has no VirtualRouter objects: the routes live
//! on the VirtualServices, and the mesh is named on every object.
//!
//! A/B testing: one route per `analysis.match` entry (header conditions) carrying the split,
//! then a route that keeps every other request on the primary.

use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Map, Value, json};
use serin_core::Routes;

use super::capability::{self, Features};
use super::live;
use super::routing_object::{self, Metadata};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;
use crate::api::canary::{HttpMatchRequest, StringMatch};

const FEATURES: Features = Features {
    ab_testing: true,
    mirroring: false,
    session_affinity: false,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1beta1,
    V1beta2,
}

pub struct AppMesh {
    version: Version,
}

impl AppMesh {
    pub fn v1beta1() -> AppMesh {
        AppMesh {
            version: Version::V1beta1,
        }
    }

    pub fn v1beta2() -> AppMesh {
        AppMesh {
            version: Version::V1beta2,
        }
    }

    fn resource(&self, kind: &str, plural: &str) -> ApiResource {
        let version = match self.version {
            Version::V1beta1 => "v1beta1",
            Version::V1beta2 => "v1beta2",
        };
        routing_object::resource("appmesh.k8s.aws", version, kind, plural)
    }

    fn virtual_node(&self) -> ApiResource {
        self.resource("VirtualNode", "virtualnodes")
    }

    fn virtual_router(&self) -> ApiResource {
        self.resource("VirtualRouter", "virtualrouters")
    }

    fn virtual_service(&self) -> ApiResource {
        self.resource("VirtualService", "virtualservices")
    }

    /// The object holding the split: VirtualRouter `<apex>` (v1beta2) or VirtualService
    /// `<apex>.<namespace>` (v1beta1).
    fn split_object(&self, input: &Input<'_>) -> String {
        match self.version {
            Version::V1beta2 => format!("VirtualRouter/{}", input.apex),
            Version::V1beta1 => {
                format!("VirtualService/{}", virtual_service_name(input, input.apex))
            }
        }
    }

    /// A weighted target of a route.
    fn target(&self, node: &str, weight: u32) -> Value {
        match self.version {
            Version::V1beta2 => json!({"virtualNodeRef": {"name": node}, "weight": weight}),
            Version::V1beta1 => json!({"virtualNodeName": node, "weight": weight}),
        }
    }

    /// The key of a route's HTTP part.
    fn http_key(&self) -> &'static str {
        match self.version {
            Version::V1beta2 => "httpRoute",
            Version::V1beta1 => "http",
        }
    }

    fn route(
        &self,
        input: &Input<'_>,
        name: String,
        headers: Option<Vec<Value>>,
        routes: Routes,
        policy: &Policy,
    ) -> Value {
        let mut http = json!({
            "match": {"prefix": routing_object::path_prefix(input)},
            "action": {"weightedTargets": [
                self.target(&input.primary_service, routes.primary),
                self.target(&input.canary_service, routes.canary),
            ]},
        });
        if let Some(headers) = headers {
            http["match"]["headers"] = json!(headers);
        }
        // v1beta1 has no timeouts or retries on routes.
        if self.version == Version::V1beta2 {
            if let Some(ms) = policy.timeout_ms {
                http["timeout"] = json!({"perRequest": {"unit": "ms", "value": ms}});
            }
            if let Some(retry) = &policy.retry {
                http["retryPolicy"] = retry.clone();
            }
        }
        json!({"name": name, self.http_key(): http})
    }

    /// The routes of the split: A/B routes then the primary, or one weighted route.
    fn routes(&self, input: &Input<'_>, policy: &Policy) -> Result<Vec<Value>, String> {
        let Some(matches) = input.ab_matches() else {
            return Ok(vec![self.route(
                input,
                input.apex.to_string(),
                None,
                input.routes,
                policy,
            )]);
        };
        let mut routes = Vec::new();
        for (i, m) in matches.iter().enumerate() {
            let headers = header_matches(&format!("spec.analysis.match[{i}]"), m)?;
            let name = match i {
                0 => format!("{}-a", input.apex),
                _ => format!("{}-a{i}", input.apex),
            };
            let mut route = self.route(input, name, Some(headers), input.routes, policy);
            if self.version == Version::V1beta2 {
                // Lower numbers are tried first: the match routes before the catch-all.
                route["priority"] = json!(i);
            }
            routes.push(route);
        }
        let mut rest = self.route(
            input,
            format!("{}-b", input.apex),
            None,
            Routes::PRIMARY,
            policy,
        );
        if self.version == Version::V1beta2 {
            rest["priority"] = json!(matches.len());
        }
        routes.push(rest);
        Ok(routes)
    }
}

/// Timeouts and retries of `spec.service`, in App Mesh's form.
struct Policy {
    timeout_ms: Option<u64>,
    retry: Option<Value>,
}

impl Policy {
    fn of(input: &Input<'_>) -> Result<Policy, String> {
        let service = &input.canary.spec.service;
        let timeout_ms = service
            .timeout
            .as_deref()
            .map(|t| millis(t).ok_or_else(|| invalid_duration("spec.service.timeout", t)))
            .transpose()?;
        // App Mesh needs both a retry count and a per-retry timeout.
        let retry = match &service.retries {
            Some(r) => match (r.attempts, r.per_try_timeout.as_deref()) {
                (Some(attempts), Some(per_try)) => {
                    let ms = millis(per_try).ok_or_else(|| {
                        invalid_duration("spec.service.retries.perTryTimeout", per_try)
                    })?;
                    let events: Vec<&str> = r
                        .retry_on
                        .as_deref()
                        .unwrap_or("server-error,gateway-error")
                        .split(',')
                        .map(str::trim)
                        .filter(|e| {
                            [
                                "server-error",
                                "gateway-error",
                                "client-error",
                                "stream-error",
                            ]
                            .contains(e)
                        })
                        .collect();
                    Some(json!({
                        "maxRetries": attempts,
                        "perRetryTimeout": {"unit": "ms", "value": ms},
                        "httpRetryEvents": events,
                    }))
                }
                _ => None,
            },
            None => None,
        };
        Ok(Policy { timeout_ms, retry })
    }
}

fn invalid_duration(field: &str, value: &str) -> String {
    format!("{field}: `{value}` is not a duration App Mesh takes (e.g. 500ms, 15s, 1m, 1h)")
}

/// Whole milliseconds of a duration such as `500ms`, `15s`, `1m` or `1h`.
fn millis(value: &str) -> Option<u64> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit = match unit {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return None,
    };
    u64::try_from(unit.as_millis()).ok()?.checked_mul(n)
}

/// App Mesh header matches for one `analysis.match` entry.
fn header_matches(at: &str, m: &HttpMatchRequest) -> Result<Vec<Value>, String> {
    routing_object::headers_only(at, m, "appmesh")?;
    let mut out = Vec::new();
    for (name, cond) in m.headers.iter().flatten() {
        let StringMatch {
            exact,
            prefix,
            suffix,
            regex,
        } = cond;
        let mut kinds = Map::new();
        for (k, v) in [
            ("exact", exact),
            ("prefix", prefix),
            ("suffix", suffix),
            ("regex", regex),
        ] {
            if let Some(v) = v {
                kinds.insert(k.into(), json!(v));
            }
        }
        if kinds.len() != 1 {
            return Err(format!(
                "{at}.headers.{name}: set exactly one of exact, prefix, suffix, regex"
            ));
        }
        out.push(json!({"name": name, "match": kinds}));
    }
    if out.is_empty() {
        return Err(format!(
            "{at}: A/B testing on appmesh needs a header condition"
        ));
    }
    Ok(out)
}

/// v1beta1 VirtualServices are named after the DNS name clients use.
fn virtual_service_name(input: &Input<'_>, service: &str) -> String {
    format!("{service}.{}", input.namespace)
}

/// The core `v1` Service (read only: the generated Services' selectors).
fn service_resource() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&())
}

impl Router for AppMesh {
    fn provider(&self) -> Provider {
        match self.version {
            Version::V1beta1 => Provider::AppMesh,
            Version::V1beta2 => Provider::AppMeshV1beta2,
        }
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        for node in [&input.primary_service, &input.canary_service] {
            // v1beta2 nodes select the pods the generated Service selects: read only.
            if self.version == Version::V1beta2 {
                keys.push(routing_object::key(service_resource(), input, node));
            }
            keys.push(routing_object::key(self.virtual_node(), input, node));
        }
        let apex_canary = input.canary_service.as_str();
        for service in [input.apex, apex_canary] {
            match self.version {
                Version::V1beta2 => {
                    keys.push(routing_object::key(self.virtual_router(), input, service));
                    keys.push(routing_object::key(self.virtual_service(), input, service));
                }
                Version::V1beta1 => keys.push(routing_object::key(
                    self.virtual_service(),
                    input,
                    &virtual_service_name(input, service),
                )),
            }
        }
        keys
    }

    // Long on purpose: the whole set of App Mesh objects (virtual nodes, router, route,
    // service) field by field as the CRDs nest them; each part is already a helper.
    fn render(&self, input: &Input<'_>, live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(self.provider(), FEATURES, input)?;
        let service = &input.canary.spec.service;
        let mesh = service.mesh_name.as_deref().filter(|m| !m.is_empty());
        if self.version == Version::V1beta1 && mesh.is_none() {
            return Err(
                "spec.service.meshName: provider appmesh (v1beta1) names the mesh on every \
                 object; set meshName"
                    .into(),
            );
        }
        let policy = Policy::of(input)?;
        // A named target port is resolved by the pods, not here: listen on the Service port.
        let port = match service.target_port() {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => p,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => service.port,
        };
        let protocol = if service.port_name().contains("grpc") {
            "grpc"
        } else {
            "http"
        };
        let backends: Vec<Value> = service
            .backends
            .iter()
            .flatten()
            .map(|b| match self.version {
                Version::V1beta2 if b.starts_with("arn:") => {
                    json!({"virtualService": {"virtualServiceARN": b}})
                }
                Version::V1beta2 => json!({"virtualService": {"virtualServiceRef": {"name": b}}}),
                Version::V1beta1 => json!({"virtualService": {"virtualServiceName": b}}),
            })
            .collect();
        let owned = |resource: &ApiResource, name: &str, spec: Value| {
            routing_object::object(
                &routing_object::key(resource.clone(), input, name),
                input,
                Metadata::Apex,
                spec,
            )
        };
        let mut objects = Vec::new();
        for node in [&input.primary_service, &input.canary_service] {
            let hostname = format!("{node}.{}.svc.cluster.local", input.namespace);
            let mut listener = json!({"portMapping": {"port": port, "protocol": protocol}});
            let mut spec = match self.version {
                Version::V1beta2 => {
                    let selector = live
                        .get(&format!("Service/{node}"))
                        .and_then(|s| s.data.pointer("/spec/selector"))
                        .cloned()
                        .ok_or_else(|| {
                            format!(
                                "Service {node} not found or without a selector: the \
                                 VirtualNode selects the pods it selects"
                            )
                        })?;
                    if let Some(ms) = policy.timeout_ms {
                        listener["timeout"] =
                            json!({protocol: {"perRequest": {"unit": "ms", "value": ms}}});
                    }
                    json!({
                        "podSelector": {"matchLabels": selector},
                        "listeners": [listener],
                        "serviceDiscovery": {"dns": {"hostname": hostname}},
                    })
                }
                Version::V1beta1 => json!({
                    "meshName": mesh,
                    "listeners": [listener],
                    "serviceDiscovery": {"dns": {"hostName": hostname}},
                }),
            };
            if !backends.is_empty() {
                spec["backends"] = json!(backends);
            }
            objects.push(owned(&self.virtual_node(), node, spec));
        }
        let split = self.routes(input, &policy)?;
        let direct = vec![self.route(
            input,
            input.canary_service.clone(),
            None,
            Routes::CANARY,
            &policy,
        )];
        for (service, routes) in [(input.apex, split), (input.canary_service.as_str(), direct)] {
            match self.version {
                Version::V1beta2 => {
                    let listener = json!({"portMapping": {"port": port, "protocol": "http"}});
                    objects.push(owned(
                        &self.virtual_router(),
                        service,
                        json!({"listeners": [listener], "routes": routes}),
                    ));
                    let mut vs = owned(
                        &self.virtual_service(),
                        service,
                        json!({
                            "awsName": virtual_service_name(input, service),
                            "provider": {"virtualRouter": {"virtualRouterRef": {"name": service}}},
                        }),
                    );
                    if service == input.apex
                        && let Some(hosts) = service_hosts(input)
                    {
                        // Exposes the apex through an App Mesh gateway on these hosts.
                        vs.metadata.annotations.get_or_insert_default().extend([
                            (
                                "gateway.appmesh.k8s.aws/expose".to_string(),
                                "true".to_string(),
                            ),
                            ("gateway.appmesh.k8s.aws/domain".to_string(), hosts),
                        ]);
                    }
                    objects.push(vs);
                }
                Version::V1beta1 => objects.push(owned(
                    &self.virtual_service(),
                    &virtual_service_name(input, service),
                    json!({
                        "meshName": mesh,
                        "virtualRouter": {"name": format!("{service}-router")},
                        "routes": routes,
                    }),
                )),
            }
        }
        Ok(objects)
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let id = self.split_object(input);
        let Some(object) = live.get(&id) else {
            return Ok(None);
        };
        // The first route carries the split (the match route when A/B testing).
        let targets = object
            .data
            .pointer(&format!(
                "/spec/routes/0/{}/action/weightedTargets",
                self.http_key()
            ))
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{id} has no weighted targets in its first route"))?;
        let weight_of = |node: &str| {
            targets
                .iter()
                .find(|t| {
                    t.pointer("/virtualNodeRef/name")
                        .or_else(|| t.get("virtualNodeName"))
                        == Some(&json!(node))
                })
                .and_then(|t| live::number(&t["weight"]))
                .unwrap_or(0.0)
        };
        live::routes_read(input, &id.to_string(), weight_of)
    }
}

/// `service.hosts` as the gateway's comma-separated domains.
fn service_hosts(input: &Input<'_>) -> Option<String> {
    let hosts = input.canary.spec.service.hosts.as_ref()?;
    (!hosts.is_empty()).then(|| hosts.join(","))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{
        ab_spec, any_split, canary, input, live, object, read_back, render_error,
    };

    fn services() -> Live {
        live(["podinfo-primary", "podinfo-canary"].map(|name| {
            // The canary Service selects the target's pods, the primary Service the primary's.
            let app = name.trim_end_matches("-canary");
            object(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "test"},
                "spec": {"selector": {"app": app}, "ports": [{"port": 9898}]}
            }))
        }))
    }

    fn mesh_canary(extra: serde_json::Value) -> crate::api::Canary {
        let mut c = canary(extra);
        c.spec.service.mesh_name = Some("global".into());
        c.spec.service.backends = Some(vec![
            "backend.test".into(),
            "arn:aws:appmesh:us-west-2:123:mesh/global/virtualService/x".into(),
        ]);
        c
    }

    #[test]
    fn v1beta2_nodes_routers_and_services() {
        let canary = mesh_canary(json!({"service": {
            "timeout": "15s", "hosts": ["app.example.com"],
            "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "gateway-error"}
        }}));
        let options = Options::default();
        let objects = AppMesh::v1beta2()
            .render(&input(&canary, Routes::canary(20), &options), &services())
            .unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn v1beta2_ab_testing_routes() {
        let canary = mesh_canary(ab_spec());
        let options = Options::default();
        let objects = AppMesh::v1beta2()
            .render(&input(&canary, Routes::CANARY, &options), &services())
            .unwrap();
        let router = objects
            .iter()
            .find(|o| o.types.as_ref().unwrap().kind == "VirtualRouter")
            .unwrap();
        insta::assert_yaml_snapshot!(router);
    }

    #[test]
    fn v1beta1_routes_on_virtual_services() {
        let canary = mesh_canary(json!({}));
        let options = Options::default();
        let objects = AppMesh::v1beta1()
            .render(&input(&canary, Routes::canary(50), &options), &Live::new())
            .unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn errors_name_the_field() {
        let no_mesh = canary(json!({}));
        let err = render_error(&AppMesh::v1beta1(), &no_mesh, Routes::PRIMARY, &Live::new());
        assert!(err.starts_with("spec.service.meshName"), "{err}");
        let bad_timeout = mesh_canary(json!({"service": {"timeout": "1.5s"}}));
        let err = render_error(
            &AppMesh::v1beta2(),
            &bad_timeout,
            Routes::PRIMARY,
            &services(),
        );
        assert!(err.starts_with("spec.service.timeout"), "{err}");
        let mirror = mesh_canary(json!({"analysis": {"mirror": true}}));
        let err = render_error(&AppMesh::v1beta2(), &mirror, Routes::PRIMARY, &services());
        assert!(
            err.starts_with("spec.analysis.mirror: provider appmesh:v1beta2"),
            "{err}"
        );
        let no_services = mesh_canary(json!({}));
        let err = render_error(
            &AppMesh::v1beta2(),
            &no_services,
            Routes::PRIMARY,
            &Live::new(),
        );
        assert!(
            err.starts_with("Service podinfo-primary not found"),
            "{err}"
        );
    }

    #[test]
    fn millis_of_durations() {
        assert_eq!(millis("500ms"), Some(500));
        assert_eq!(millis("15s"), Some(15_000));
        assert_eq!(millis("2m"), Some(120_000));
        assert_eq!(millis("1h"), Some(3_600_000));
        assert_eq!(millis("1.5s"), None);
        assert_eq!(millis("s"), None);
        assert_eq!(millis("10"), None);
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split(), ab in any::<bool>(), v1beta2 in any::<bool>()) {
            let router = if v1beta2 { AppMesh::v1beta2() } else { AppMesh::v1beta1() };
            let canary = mesh_canary(if ab { ab_spec() } else { json!({}) });
            prop_assert_eq!(read_back(&router, &canary, routes, &services()), Some(routes));
        }
    }
}
