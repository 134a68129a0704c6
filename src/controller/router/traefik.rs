//! Traefik: a TraefikService `<apex>` of kind weighted round robin over `<apex>-primary` and
//! `<apex>-canary`, which the user references from an IngressRoute. Traefik weights are
//! relative; serin writes percentages. The canary is listed only while it gets traffic, so a
//! Traefik that rejects a zero weight never sees one.

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use serin_core::Routes;

use super::capability::{self, WEIGHTS_ONLY};
use super::live;
use super::routing_object::{self, Metadata};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

pub struct Traefik;

fn resource() -> ApiResource {
    routing_object::resource(
        "traefik.io",
        "v1alpha1",
        "TraefikService",
        "traefikservices",
    )
}

impl Router for Traefik {
    fn provider(&self) -> Provider {
        Provider::Traefik
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        vec![routing_object::key(resource(), input, input.apex)]
    }

    fn render(&self, input: &Input<'_>, _live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Traefik, WEIGHTS_ONLY, input)?;
        let port = input.canary.spec.service.port;
        let backend = |name: &str, weight: u32| json!({"name": name, "namespace": input.namespace, "port": port, "weight": weight});
        let mut services = vec![backend(&input.primary_service, input.routes.primary)];
        if input.routes.canary > 0 {
            services.push(backend(&input.canary_service, input.routes.canary));
        }
        Ok(vec![routing_object::object(
            &routing_object::key(resource(), input, input.apex),
            input,
            Metadata::Apex,
            json!({"weighted": {"services": services}}),
        )])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let Some(service) = live.get(&format!("TraefikService/{}", input.apex)) else {
            return Ok(None);
        };
        let services = service
            .data
            .pointer("/spec/weighted/services")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                format!(
                    "TraefikService {} has no spec.weighted.services",
                    input.apex
                )
            })?;
        // An entry without a weight counts 1 in Traefik.
        let weight_of = |name: &str| {
            services
                .iter()
                .find(|s| s["name"] == name)
                .map_or(0.0, |s| live::number(&s["weight"]).unwrap_or(1.0))
        };
        live::routes_read(input, &format!("TraefikService {}", input.apex), weight_of)
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
    fn weighted_services() {
        let canary = canary(json!({}));
        let options = Options::default();
        let render = |routes| {
            Traefik
                .render(&input(&canary, routes, &options), &Live::new())
                .unwrap()
        };
        insta::assert_yaml_snapshot!("traefik_canary_at_25", render(Routes::canary(25)));
        insta::assert_yaml_snapshot!("traefik_primary_only", render(Routes::PRIMARY));
    }

    #[test]
    fn errors_name_the_field() {
        let canary = canary(json!({"analysis": {"mirror": true}}));
        let err = render_error(&Traefik, &canary, Routes::PRIMARY, &Live::new());
        assert!(
            err.starts_with("spec.analysis.mirror: provider traefik"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split()) {
            let canary = canary(json!({}));
            prop_assert_eq!(read_back(&Traefik, &canary, routes, &Live::new()), Some(routes));
        }
    }
}
