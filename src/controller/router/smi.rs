//! SMI TrafficSplit `<apex>`: the `linkerd` (v1alpha1), `osm` (v1alpha2) and
//! `smi:v1alpha1|2|3` providers. The mesh splits traffic sent to `spec.service` between the
//! backends by weight; there is no header routing or mirroring in a TrafficSplit.

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use serin_core::Routes;

use super::capability::{self, WEIGHTS_ONLY};
use super::live;
use super::routing_object::{self, Metadata};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

/// The SMI TrafficSplit API versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// Weights are Kubernetes quantities (strings).
    V1alpha1,
    V1alpha2,
    V1alpha3,
}

impl Version {
    fn as_str(self) -> &'static str {
        match self {
            Version::V1alpha1 => "v1alpha1",
            Version::V1alpha2 => "v1alpha2",
            Version::V1alpha3 => "v1alpha3",
        }
    }
}

pub struct Smi {
    provider: Provider,
    version: Version,
}

impl Smi {
    /// The TrafficSplit router for an SMI provider; `None` for any other provider.
    pub fn new(provider: Provider) -> Option<Smi> {
        let version = match provider {
            Provider::Linkerd | Provider::SmiV1alpha1 => Version::V1alpha1,
            Provider::Osm | Provider::SmiV1alpha2 => Version::V1alpha2,
            Provider::SmiV1alpha3 => Version::V1alpha3,
            _ => return None,
        };
        Some(Smi { provider, version })
    }

    fn resource(&self) -> ApiResource {
        routing_object::resource(
            "split.smi-spec.io",
            self.version.as_str(),
            "TrafficSplit",
            "trafficsplits",
        )
    }

    fn weight(&self, weight: u32) -> Value {
        match self.version {
            Version::V1alpha1 => json!(weight.to_string()),
            Version::V1alpha2 | Version::V1alpha3 => json!(weight),
        }
    }
}

impl Router for Smi {
    fn provider(&self) -> Provider {
        self.provider
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        vec![routing_object::key(self.resource(), input, input.apex)]
    }

    fn render(&self, input: &Input<'_>, _live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(self.provider, WEIGHTS_ONLY, input)?;
        // The root service clients address: the first host when set (Flagger's choice), else
        // the apex Service.
        let service = input
            .canary
            .spec
            .service
            .hosts
            .as_ref()
            .and_then(|h| h.first())
            .map_or(input.apex, String::as_str);
        let spec = json!({
            "service": service,
            "backends": [
                {"service": input.canary_service, "weight": self.weight(input.routes.canary)},
                {"service": input.primary_service, "weight": self.weight(input.routes.primary)},
            ],
        });
        Ok(vec![routing_object::object(
            &routing_object::key(self.resource(), input, input.apex),
            input,
            Metadata::Apex,
            spec,
        )])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let Some(split) = live.get(&format!("TrafficSplit/{}", input.apex)) else {
            return Ok(None);
        };
        let backends = split
            .data
            .pointer("/spec/backends")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("TrafficSplit {} has no spec.backends", input.apex))?;
        let weight_of = |service: &str| -> Result<f64, String> {
            let Some(backend) = backends.iter().find(|b| b["service"] == service) else {
                return Ok(0.0);
            };
            live::number(&backend["weight"]).ok_or_else(|| {
                format!(
                    "TrafficSplit {}: backend {service} has no readable weight",
                    input.apex
                )
            })
        };
        let primary = weight_of(&input.primary_service)?;
        let canary = weight_of(&input.canary_service)?;
        live::split_in(&format!("TrafficSplit {}", input.apex), primary, canary)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{
        any_split, canary, input, live, read_back, render_error,
    };

    fn render(provider: Provider, routes: Routes) -> Vec<DynamicObject> {
        let canary = canary(json!({}));
        let options = Options::default();
        let router = Smi::new(provider).unwrap();
        router
            .render(&input(&canary, routes, &options), &Live::new())
            .unwrap()
    }

    #[test]
    fn linkerd_writes_v1alpha1_quantities() {
        insta::assert_yaml_snapshot!(render(Provider::Linkerd, Routes::canary(30)));
    }

    #[test]
    fn osm_writes_v1alpha2_integers() {
        insta::assert_yaml_snapshot!(render(Provider::Osm, Routes::canary(30)));
    }

    #[test]
    fn smi_v1alpha3_names_the_first_host_as_root_service() {
        let canary = canary(json!({"service": {"hosts": ["podinfo.example.com"]}}));
        let options = Options::default();
        let router = Smi::new(Provider::SmiV1alpha3).unwrap();
        let objects = router
            .render(&input(&canary, Routes::canary(70), &options), &Live::new())
            .unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn every_smi_provider_has_a_version() {
        for p in [
            Provider::Linkerd,
            Provider::Osm,
            Provider::SmiV1alpha1,
            Provider::SmiV1alpha2,
            Provider::SmiV1alpha3,
        ] {
            assert_eq!(Smi::new(p).unwrap().provider(), p);
        }
        assert!(Smi::new(Provider::Istio).is_none());
    }

    #[test]
    fn reads_hand_edited_relative_weights() {
        let canary = canary(json!({}));
        let options = Options::default();
        let router = Smi::new(Provider::Linkerd).unwrap();
        let mut objects = router
            .render(&input(&canary, Routes::PRIMARY, &options), &Live::new())
            .unwrap();
        objects[0].data["spec"]["backends"] = json!([
            {"service": "podinfo-canary", "weight": "250m"},
            {"service": "podinfo-primary", "weight": "750m"},
        ]);
        let read = router
            .read(&input(&canary, Routes::PRIMARY, &options), &live(objects))
            .unwrap();
        assert_eq!(read, Some(Routes::canary(25)));
    }

    #[test]
    fn errors_name_the_field() {
        let options = Options::default();
        let router = Smi::new(Provider::Linkerd).unwrap();
        let table = [
            (
                json!({"analysis": {"mirror": true}}),
                "spec.analysis.mirror",
            ),
            (
                json!({"analysis": {"stepWeight": null, "iterations": 5,
                        "match": [{"headers": {"x": {"exact": "y"}}}]}}),
                "spec.analysis.match",
            ),
            (
                json!({"analysis": {"sessionAffinity": {"cookieName": "c"}}}),
                "spec.analysis.sessionAffinity",
            ),
        ];
        for (spec, field) in table {
            let canary = canary(spec);
            let err = render_error(&router, &canary, Routes::PRIMARY, &Live::new());
            assert!(err.starts_with(field), "{err}");
            assert!(err.contains("linkerd"), "{err}");
        }
        let canary = canary(json!({}));
        let none = router
            .read(&input(&canary, Routes::PRIMARY, &options), &Live::new())
            .unwrap();
        assert_eq!(none, None);
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split(), v in 0usize..5) {
            let provider = [
                Provider::Linkerd, Provider::Osm, Provider::SmiV1alpha1,
                Provider::SmiV1alpha2, Provider::SmiV1alpha3,
            ][v];
            let router = Smi::new(provider).unwrap();
            let canary = canary(json!({}));
            prop_assert_eq!(read_back(&router, &canary, routes, &Live::new()), Some(routes));
        }
    }
}
