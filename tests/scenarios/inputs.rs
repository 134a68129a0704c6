//! Bad input: a condition and a Warning event that name the problem, a retry when it is
//! fixed, and other Canaries unaffected.

use serde_json::json;
use serin_core::Phase;

use crate::harness::{
    ControlPlane, WorldConfig, canary, deployment, initialized, podinfo_with, ready_condition,
    world, world_without_controller,
};

use serin_testkit::LONG;

async fn a_missing_target_is_reported_and_picked_up_when_it_appears(cp: ControlPlane) {
    let world = world(cp).await;
    // A healthy canary beside the broken one keeps running.
    initialized(&world, "healthy", 2).await;

    world
        .apply(&world.canaries(), canary("podinfo").iterations(2).build())
        .await;
    let ns = world.ns();
    let (reason, message) = world.wait_blocked("podinfo").await;
    assert_eq!(reason, "TargetNotFound");
    assert!(
        message.contains("spec.targetRef") && message.contains(&format!("{ns}/podinfo")),
        "{message}"
    );
    world
        .wait_event(
            "podinfo",
            &format!("spec.targetRef: Deployment {ns}/podinfo not found"),
            LONG,
        )
        .await;

    world.set_image("healthy", "app", "podinfo:6.0.1").await;
    world.wait_phase("healthy", Phase::Succeeded, LONG).await;

    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let fixed = world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    let (status, _, _) = ready_condition(&fixed).unwrap();
    assert_eq!(status, "True");
}

async fn a_missing_metric_template_is_reported_and_retried_when_created(cp: ControlPlane) {
    let world = world(cp).await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["analysis"]["metrics"] = json!([{
        "name": "errors", "templateRef": {"name": "error-rate"},
        "thresholdRange": {"max": 1}, "interval": "1m"
    }]);
    podinfo_with(&world, c).await;
    let (reason, message) = world.wait_blocked("podinfo").await;
    assert_eq!(reason, "MetricTemplateNotFound");
    assert!(
        message.contains("spec.analysis.metrics[0].templateRef")
            && message.contains(&format!("{}/error-rate", world.ns())),
        "{message}"
    );
    assert_ne!(world.phase("podinfo").await, Phase::Initialized);

    let templates: kube::Api<serin::api::MetricTemplate> =
        kube::Api::namespaced(world.client.clone(), world.ns());
    world
        .apply(
            &templates,
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                   "metadata": {"name": "error-rate"},
                   "spec": {"provider": {"type": "prometheus", "address": "http://127.0.0.1:1"},
                            "query": "vector(0)"}}),
        )
        .await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
}

/// The canary Ingress of the `nginx` provider is derived from `spec.ingressRef`: when that
/// Ingress is missing, the Canary says so, naming the field.
async fn a_routing_object_that_cannot_be_rendered_is_reported(cp: ControlPlane) {
    let world = world(cp).await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["provider"] = json!("nginx");
    c["spec"]["ingressRef"] =
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"});
    podinfo_with(&world, c).await;
    let (reason, message) = world.wait_blocked("podinfo").await;
    assert_eq!(reason, "RoutingInvalid");
    assert!(
        message.contains("spec.ingressRef") && message.contains("not found"),
        "{message}"
    );
}

async fn an_invalid_spec_is_reported_with_its_field(cp: ControlPlane) {
    let world = world(cp).await;
    let mut c = canary("podinfo").iterations(2).build();
    // Valid for the CRD schema, rejected by serin's validation: a webhook without a URL scheme.
    c["spec"]["analysis"]["webhooks"] = json!([{"name": "load", "url": "not a url"}]);
    podinfo_with(&world, c).await;
    let (reason, message) = world.wait_blocked("podinfo").await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.analysis.webhooks[0]"), "{message}");
    world
        .wait_event("podinfo", "spec.analysis.webhooks[0]", LONG)
        .await;
}

/// `--no-cross-namespace-refs` (Flagger's multi-tenancy guard): a Canary using another
/// namespace's MetricTemplate is refused with the field named.
async fn a_cross_namespace_reference_is_refused_when_disabled(cp: ControlPlane) {
    let mut world = world_without_controller(cp).await;
    world.start_controller(&["--no-cross-namespace-refs"]);
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["analysis"]["metrics"] = json!([{"name": "errors", "interval": "1m",
        "templateRef": {"name": "errors", "namespace": "shared"}, "thresholdRange": {"max": 1}}]);
    podinfo_with(&world, c).await;
    let (reason, message) = world.wait_blocked("podinfo").await;
    assert_eq!(reason, "CrossNamespaceRef");
    assert!(
        message.contains("spec.analysis.metrics[0].templateRef.namespace")
            && message.contains("`shared`"),
        "{message}"
    );
}

/// A mesh whose CRDs are not installed: no retry fixes that, so it is a condition and a
/// Warning event naming the kind and the fix, not a log line every few seconds.
async fn a_provider_whose_crd_is_not_installed_is_reported(cp: ControlPlane) {
    let world = world(cp).await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["provider"] = json!("istio");
    podinfo_with(&world, c).await;
    let (reason, message) = world.wait_blocked("podinfo").await;
    assert_eq!(reason, "KindNotServed", "{message}");
    assert!(
        message.contains("DestinationRule/podinfo-primary") && message.contains("install its CRD"),
        "{message}"
    );
    world
        .wait_event("podinfo", "the API server does not serve this kind", LONG)
        .await;
}

serin_testkit::on_every_control_plane!(virtual_time:
    a_provider_whose_crd_is_not_installed_is_reported,
    a_cross_namespace_reference_is_refused_when_disabled,
    a_missing_target_is_reported_and_picked_up_when_it_appears,
    a_missing_metric_template_is_reported_and_retried_when_created,
    a_routing_object_that_cannot_be_rendered_is_reported,
    an_invalid_spec_is_reported_with_its_field,
    a_canary_that_does_not_decode_is_reported_and_the_others_go_on,
);

/// A Canary serin cannot decode (stored through a looser schema than serin's, as an object
/// written before a CRD upgrade would be) is reported on itself with the field named, and
/// does not stop the watch: another Canary is initialized and released meanwhile.
async fn a_canary_that_does_not_decode_is_reported_and_the_others_go_on(cp: ControlPlane) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    // Whole-cluster: it replaces the Canary CRD, a cluster-scoped object.
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .whole_cluster()
        .start()
        .await;
    // The looser schema: anything goes under spec.
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(world.client.clone());
    let mut crd = serde_json::to_value(crds.get("canaries.flagger.app").await.unwrap()).unwrap();
    for version in crd["spec"]["versions"].as_array_mut().unwrap() {
        version["schema"]["openAPIV3Schema"]["properties"]["spec"] =
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    }
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    crds.replace("canaries.flagger.app", &Default::default(), &crd)
        .await
        .unwrap();
    let mut broken = canary("broken").iterations(2).build();
    broken["spec"]["service"]["port"] = json!("ninety");
    let broken: kube::api::DynamicObject = serde_json::from_value(broken).unwrap();
    let dynamic = world.dynamic("flagger.app/v1beta1", "Canary");
    crate::harness::wait_until(LONG, "the looser schema served", || async {
        dynamic.create(&Default::default(), &broken).await.is_ok()
    })
    .await;

    world.wait_event("broken", "spec.service.port", LONG).await;
    initialized(&world, "podinfo", 2).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert!(
        world
            .has_event("broken", "serin cannot read this Canary")
            .await
    );
}
