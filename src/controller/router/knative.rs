//! Knative: the weights live on the target Knative Service itself, in `spec.traffic`: the
//! latest revision (the new version) gets the canary's percent, the primary revision (the
//! `flagger.app/primary-revision` annotation, as Flagger keeps it) the rest.
//!
//! The Knative Service is the user's workload, not a routing object serin owns, so the render
//! carries only `spec.traffic` and that annotation, and *not* Flux's opt-out annotations:
//! those would stop Flux from deploying new versions of the very workload being released.

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use serin_core::Routes;

use super::capability::{self, WEIGHTS_ONLY};
use super::live;
use super::routing_object;
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;

pub struct Knative;

use crate::workload::knative::{self, PRIMARY_REVISION};

fn resource() -> ApiResource {
    knative::service_resource()
}

fn target<'a>(input: &Input<'a>) -> &'a str {
    &input.canary.spec.target_ref.name
}

impl Router for Knative {
    fn provider(&self) -> Provider {
        Provider::Knative
    }

    /// The Service's template belongs to the user (a revert must not roll the image back):
    /// only the traffic split is serin's to restore.
    fn restorable(&self) -> &'static str {
        "/spec/traffic"
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        vec![routing_object::key(resource(), input, target(input))]
    }

    fn render(&self, input: &Input<'_>, live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Knative, WEIGHTS_ONLY, input)?;
        if !input.canary.spec.is_knative_target() {
            return Err(
                "spec.targetRef: provider knative routes a Knative Service; set kind: Service \
                 and apiVersion: serving.knative.dev/v1"
                    .into(),
            );
        }
        let name = target(input);
        let service = live.get(&format!("Service/{name}")).ok_or_else(|| {
            format!(
                "spec.targetRef: Knative Service {}/{name} not found",
                input.namespace
            )
        })?;
        // Until a primary revision is recorded, the revision Knative last created is the
        // version in production: record it, as Flagger does on initialization.
        let primary = knative::primary_revision(service)
            .or_else(|| knative::latest_created(service))
            .ok_or_else(|| {
                format!(
                    "Knative Service {name} has no {PRIMARY_REVISION} annotation and no \
                     status.latestCreatedRevisionName yet; wait for Knative to create a revision"
                )
            })?
            .to_string();
        let mut object = DynamicObject::new(name, &resource()).data(json!({"spec": {"traffic": [
            {"latestRevision": true, "percent": input.routes.canary},
            {"latestRevision": false, "revisionName": primary, "percent": input.routes.primary},
        ]}}));
        object.metadata.namespace = Some(input.namespace.to_string());
        object
            .annotations_mut()
            .insert(PRIMARY_REVISION.into(), primary);
        Ok(vec![object])
    }

    /// Reads `spec.traffic`, the split serin asked for; `status.traffic` lags behind it while
    /// Knative programs the routes, and reading it would report serin's own change as drift.
    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let name = target(input);
        let Some(service) = live.get(&format!("Service/{name}")) else {
            return Ok(None);
        };
        let Some(traffic) = service
            .data
            .pointer("/spec/traffic")
            .and_then(Value::as_array)
        else {
            // Knative's default: all traffic to the latest revision. Not a split serin set.
            return Ok(None);
        };
        let (mut primary, mut canary) = (0.0, 0.0);
        for target in traffic {
            let percent = live::number(&target["percent"]).unwrap_or(0.0);
            if target["latestRevision"] == true {
                canary += percent;
            } else {
                primary += percent;
            }
        }
        live::split_in(&format!("Knative Service {name}"), primary, canary)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::api::Canary;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{
        any_split, canary, input, live, object, read_back, render_error,
    };

    fn knative_canary() -> Canary {
        canary(json!({"targetRef": {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"
        }, "provider": "knative"}))
    }

    fn service(annotated: bool) -> DynamicObject {
        let mut s = object(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"template": {"spec": {"containers": [{"image": "podinfo:6.1"}]}}},
            "status": {"latestCreatedRevisionName": "podinfo-00002"}
        }));
        if annotated {
            s.annotations_mut()
                .insert(PRIMARY_REVISION.into(), "podinfo-00001".into());
        }
        s
    }

    #[test]
    fn traffic_on_the_knative_service() {
        let canary = knative_canary();
        let options = Options::default();
        let objects = Knative
            .render(
                &input(&canary, Routes::canary(10), &options),
                &live([service(true)]),
            )
            .unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn first_render_records_the_latest_revision_as_primary() {
        let canary = knative_canary();
        let options = Options::default();
        let objects = Knative
            .render(
                &input(&canary, Routes::PRIMARY, &options),
                &live([service(false)]),
            )
            .unwrap();
        assert_eq!(objects[0].annotations()[PRIMARY_REVISION], "podinfo-00002");
    }

    #[test]
    fn errors_name_the_field() {
        let table = [
            (
                canary(json!({})),
                live([service(true)]),
                "spec.targetRef: provider knative",
            ),
            (
                knative_canary(),
                Live::new(),
                "spec.targetRef: Knative Service test/podinfo",
            ),
        ];
        for (canary, live, expected) in table {
            let err = render_error(&Knative, &canary, Routes::PRIMARY, &live);
            assert!(err.starts_with(expected), "{err}");
        }
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split()) {
            let canary = knative_canary();
            prop_assert_eq!(read_back(&Knative, &canary, routes, &live([service(true)])), Some(routes));
        }
    }
}
