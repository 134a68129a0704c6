//! The `istio` provider, as Flagger renders it: a VirtualService `<apex>` whose main route splits
//! between `<apex>-primary` and `<apex>-canary`, and a DestinationRule for each of them
//! carrying `service.trafficPolicy`.
//!
//! serin applies these with server-side apply, so a VirtualService someone else wrote is
//! taken over field by field: serin owns `hosts`, `gateways` and `http` (or `tcp`), whatever
//! else is there stays.

mod http;
#[cfg(test)]
mod tests;

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use serin_core::Routes;

use super::routing_object::{Metadata, is_service_host, key, object, resource, weight};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

pub struct Istio;

const GROUP: &str = "networking.istio.io";
const VERSION: &str = "v1beta1";
/// The gateway standing for every sidecar of the mesh.
const MESH_GATEWAY: &str = "mesh";

fn virtual_service() -> ApiResource {
    resource(GROUP, VERSION, "VirtualService", "virtualservices")
}

fn destination_rule() -> ApiResource {
    resource(GROUP, VERSION, "DestinationRule", "destinationrules")
}

/// `appProtocol: tcp` makes a TCP route: Istio cannot split opaque TCP by request, only by
/// connection, and has no mirroring for it.
fn is_tcp(input: &Input<'_>) -> bool {
    input
        .canary
        .spec
        .service
        .app_protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("tcp"))
}

impl Router for Istio {
    fn provider(&self) -> Provider {
        Provider::Istio
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        vec![
            key(destination_rule(), input, &input.primary_service),
            key(destination_rule(), input, &input.canary_service),
            key(virtual_service(), input, input.apex),
        ]
    }

    fn render(&self, input: &Input<'_>, _live: &Live) -> Result<Vec<DynamicObject>, String> {
        let service = &input.canary.spec.service;
        let mut objects = Vec::with_capacity(3);
        // The DestinationRules come first: the VirtualService's destinations rely on them for
        // the traffic policy as soon as it routes there.
        for name in [&input.primary_service, &input.canary_service] {
            let mut spec = json!({ "host": name });
            if let Some(policy) = &service.traffic_policy {
                spec["trafficPolicy"] = serde_json::to_value(policy).unwrap_or_default();
            }
            let key = key(destination_rule(), input, name);
            objects.push(object(&key, input, Metadata::Plain, spec));
        }
        let key = key(virtual_service(), input, input.apex);
        objects.push(object(
            &key,
            input,
            Metadata::Apex,
            virtual_service_spec(input)?,
        ));
        Ok(objects)
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let Some(vs) = live.get(&key(virtual_service(), input, input.apex).id()) else {
            return Ok(None);
        };
        let list = if is_tcp(input) { "tcp" } else { "http" };
        let routes = vs
            .data
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let to = |dest: &Value, name: &str| {
            dest.pointer("/destination/host")
                .and_then(Value::as_str)
                .is_some_and(|h| is_service_host(h, name, input.namespace))
        };
        // The last route to the canary is the weighted one: sticky routes (session affinity)
        // come before it, and A/B's default route after it never goes to the canary.
        let Some((index, main)) = routes.iter().enumerate().rev().find(|(_, r)| {
            r.get("route")
                .and_then(Value::as_array)
                .is_some_and(|ds| ds.iter().any(|d| to(d, &input.canary_service)))
        }) else {
            return Err(no_routes(input));
        };
        let destinations = main
            .get("route")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Istio gives a lone destination without a weight all the traffic.
        let default = if destinations.len() == 1 { 100 } else { 0 };
        let (mut primary, mut canary) = (0, 0);
        for (i, dest) in destinations.iter().enumerate() {
            let at = || {
                format!(
                    "VirtualService {} spec.{list}[{index}].route[{i}]",
                    input.apex
                )
            };
            if to(dest, &input.primary_service) {
                primary = weight(dest.get("weight"), default, &at())?;
            } else if to(dest, &input.canary_service) {
                canary = weight(dest.get("weight"), default, &at())?;
            }
        }
        if primary == 0 && canary == 0 {
            return Err(no_routes(input));
        }
        let mirrored = main
            .pointer("/mirror/host")
            .and_then(Value::as_str)
            .is_some_and(|h| is_service_host(h, &input.canary_service, input.namespace));
        Ok(Some(Routes {
            primary,
            canary,
            mirrored,
        }))
    }
}

fn no_routes(input: &Input<'_>) -> String {
    format!(
        "VirtualService {} has no weighted route to {} and {}",
        input.apex, input.primary_service, input.canary_service
    )
}

fn virtual_service_spec(input: &Input<'_>) -> Result<Value, String> {
    let service = &input.canary.spec.service;
    let hosts = service.hosts.clone().unwrap_or_default();
    let gateways = service.gateways.clone().unwrap_or_default();
    let (hosts, gateways) = if service.delegation == Some(true) {
        // A delegate is included by another VirtualService, which owns hosts and gateways;
        // Istio ignores a delegate that sets them, so a Canary asking for both is a mistake.
        if !hosts.is_empty() || !gateways.is_empty() {
            return Err(
                "spec.service.delegation: a delegate VirtualService cannot have hosts or \
                 gateways; remove spec.service.hosts and spec.service.gateways"
                    .into(),
            );
        }
        (Vec::new(), Vec::new())
    } else {
        let mut hosts = hosts;
        // The apex name keeps in-mesh calls to `<apex>` routed by this VirtualService.
        if !hosts.iter().any(|h| h == input.apex || h == "*") {
            hosts.push(input.apex.to_string());
        }
        let gateways = if gateways.is_empty() {
            vec![MESH_GATEWAY.to_string()]
        } else {
            gateways
        };
        (hosts, gateways)
    };
    let mut spec = json!({ "hosts": hosts, "gateways": gateways });
    if is_tcp(input) {
        if input.routes.mirrored {
            // Mirroring copies requests; an opaque TCP stream has none to copy.
            return Err("spec.analysis.mirror: Istio cannot mirror TCP traffic \
                        (spec.service.appProtocol is tcp); unset mirror"
                .into());
        }
        spec["tcp"] = json!([tcp_route(input)]);
    } else {
        spec["http"] = Value::Array(http::routes(input)?);
    }
    Ok(spec)
}

/// The TCP route: L4 matches can only say which port, so only `service.match[].port` carries
/// over.
fn tcp_route(input: &Input<'_>) -> Value {
    let ports: Vec<Value> = input
        .canary
        .spec
        .service
        .r#match
        .iter()
        .flatten()
        .filter_map(|m| m.port)
        .map(|port| json!({ "port": port }))
        .collect();
    let mut route = json!({
        "route": [
            destination(input, &input.primary_service, input.routes.primary),
            destination(input, &input.canary_service, input.routes.canary),
        ]
    });
    if !ports.is_empty() {
        route["match"] = Value::Array(ports);
    }
    route
}

/// A weighted destination. With `portDiscovery` the Services have several ports, and behind a
/// gateway (or as a delegate) Istio cannot infer which one: name `service.port`.
fn destination(input: &Input<'_>, host: &str, weight: u32) -> Value {
    json!({ "destination": host_of(input, host), "weight": weight })
}

fn host_of(input: &Input<'_>, host: &str) -> Value {
    let service = &input.canary.spec.service;
    let behind_gateway = service
        .gateways
        .as_ref()
        .and_then(|g| g.first())
        .is_some_and(|g| g != MESH_GATEWAY);
    let mut destination = json!({ "host": host });
    if service.port_discovery == Some(true) && (behind_gateway || service.delegation == Some(true))
    {
        destination["port"] = json!({ "number": service.port });
    }
    destination
}
