//! Kuma: a cluster-scoped TrafficRoute `<apex>` in the mesh named by the Canary's
//! `kuma.io/mesh` annotation (default `default`), splitting traffic for the apex service
//! between the primary and canary services by weight. Kuma names a Kubernetes service
//! `<name>_<namespace>_svc_<port>`.

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use serin_core::Routes;

use super::capability::{self, WEIGHTS_ONLY};
use super::live;
use super::routing_object::{self, Metadata};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

pub struct Kuma;

/// The Canary annotation naming the Kuma mesh.
pub const MESH_ANNOTATION: &str = "kuma.io/mesh";

fn resource() -> ApiResource {
    routing_object::resource("kuma.io", "v1alpha1", "TrafficRoute", "trafficroutes")
}

/// The cluster-scoped TrafficRoute `<apex>` (Flagger's name, so a swap of controllers takes
/// over the same object).
fn key(input: &Input<'_>) -> ObjectKey {
    ObjectKey {
        resource: resource(),
        namespace: None,
        name: input.apex.to_string(),
    }
}

fn kuma_service(input: &Input<'_>, name: &str) -> String {
    format!(
        "{name}_{}_svc_{}",
        input.namespace, input.canary.spec.service.port
    )
}

impl Router for Kuma {
    fn provider(&self) -> Provider {
        Provider::Kuma
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        vec![key(input)]
    }

    fn render(&self, input: &Input<'_>, _live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Kuma, WEIGHTS_ONLY, input)?;
        let mesh = input
            .canary
            .annotations()
            .get(MESH_ANNOTATION)
            .map_or("default", String::as_str);
        let split = |name: &str, weight: u32| json!({"weight": weight, "destination": {"kuma.io/service": kuma_service(input, name)}});
        let spec = json!({
            "sources": [{"match": {"kuma.io/service": "*"}}],
            "destinations": [{"match": {"kuma.io/service": kuma_service(input, input.apex)}}],
            "conf": {"split": [
                split(&input.primary_service, input.routes.primary),
                split(&input.canary_service, input.routes.canary),
            ]},
        });
        let mut route = routing_object::object(&key(input), input, Metadata::Apex, spec);
        // Kuma keeps the mesh at the top level, beside `spec`.
        route.data["mesh"] = json!(mesh);
        Ok(vec![route])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let Some(route) = live.get(&format!("TrafficRoute/{}", input.apex)) else {
            return Ok(None);
        };
        let split = route
            .data
            .pointer("/spec/conf/split")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("TrafficRoute {} has no spec.conf.split", input.apex))?;
        let weight_of = |name: &str| {
            let service = kuma_service(input, name);
            split
                .iter()
                .find(|s| s.pointer("/destination/kuma.io~1service") == Some(&json!(service)))
                .and_then(|s| live::number(&s["weight"]))
                .unwrap_or(0.0)
        };
        live::routes_read(input, &format!("TrafficRoute {}", input.apex), weight_of)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{any_split, canary, input, read_back, render_error};

    #[test]
    fn cluster_scoped_traffic_route_in_the_annotated_mesh() {
        let mut canary = canary(json!({}));
        canary
            .annotations_mut()
            .insert(MESH_ANNOTATION.into(), "payments".into());
        let options = Options::default();
        let input = input(&canary, Routes::canary(35), &options);
        assert_eq!(Kuma.objects(&input)[0].namespace, None);
        insta::assert_yaml_snapshot!(Kuma.render(&input, &Live::new()).unwrap());
    }

    #[test]
    fn errors_name_the_field() {
        let canary = canary(json!({"analysis": {"sessionAffinity": {"cookieName": "c"}}}));
        let err = render_error(&Kuma, &canary, Routes::PRIMARY, &Live::new());
        assert!(
            err.starts_with("spec.analysis.sessionAffinity: provider kuma"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split()) {
            let canary = canary(json!({}));
            prop_assert_eq!(read_back(&Kuma, &canary, routes, &Live::new()), Some(routes));
        }
    }
}
