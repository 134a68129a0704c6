//! What is released besides a Deployment's image: ConfigMap data, DaemonSets; and what
//! deleting a Canary leaves behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use serin_core::Phase;

use crate::harness::{
    ControlPlane, World, WorldConfig, canary, deployment, initialized, wait_until, world,
};
use serin_testkit::Poll;

use serin_testkit::LONG;

async fn a_configmap_change_starts_an_analysis_and_is_promoted_as_a_primary_copy(cp: ControlPlane) {
    let world = world(cp).await;
    world
        .apply(
            &world.configmaps(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "podinfo-config"},
                   "data": {"color": "blue"}}),
        )
        .await;
    let mut d = deployment("podinfo", "podinfo:6.0.0", 1);
    d["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "podinfo-config"}}]);
    world.apply(&world.deployments(), d).await;
    world
        .apply(&world.canaries(), canary("podinfo").iterations(2).build())
        .await;
    let init = world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    let tracked = init.status.unwrap().tracked_configs.unwrap();
    assert!(
        tracked.contains_key("configmap/podinfo-config"),
        "{tracked:?}"
    );

    // The primary reads the -primary copy.
    let primary = world.deployments().get("podinfo-primary").await.unwrap();
    let env_from = primary.spec.unwrap().template.spec.unwrap().containers[0]
        .env_from
        .clone()
        .unwrap();
    let name = env_from[0].config_map_ref.as_ref().unwrap().name.clone();
    assert_eq!(name, "podinfo-config-primary");
    let copy = world
        .configmaps()
        .get("podinfo-config-primary")
        .await
        .unwrap();
    assert_eq!(copy.data.unwrap()["color"], "blue");

    // Changing only the data is a new revision.
    world
        .merge(
            &world.configmaps(),
            "podinfo-config",
            json!({"data": {"color": "green"}}),
        )
        .await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    let done = world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    let copy = world
        .configmaps()
        .get("podinfo-config-primary")
        .await
        .unwrap();
    assert_eq!(copy.data.unwrap()["color"], "green", "copied on promotion");
    assert_ne!(
        done.status.unwrap().tracked_configs.unwrap()["configmap/podinfo-config"],
        tracked["configmap/podinfo-config"]
    );
}

fn daemon_set(image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

async fn a_daemon_set_is_released_through_its_primary(cp: ControlPlane) {
    let world = world(cp).await;
    world
        .apply(&world.daemon_sets(), daemon_set("agent:1.0.0"))
        .await;
    let mut c = canary("agent").iterations(2).build();
    c["spec"]["targetRef"] = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent"});
    world.apply(&world.canaries(), c).await;
    world.wait_phase("agent", Phase::Initialized, LONG).await;

    let image = |ds: k8s_openapi::api::apps::v1::DaemonSet| {
        ds.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    let primary = world.daemon_sets().get("agent-primary").await.unwrap();
    assert_eq!(image(primary), "agent:1.0.0");
    // "Scaled to zero": a nodeSelector no node matches.
    let target = world.daemon_sets().get("agent").await.unwrap();
    let selector = target
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .node_selector
        .unwrap();
    assert_eq!(selector["flagger.app/scale-to-zero"], "true");

    world
        .merge(
            &world.daemon_sets(),
            "agent",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "agent:1.1.0"}]}}}}),
        )
        .await;
    world.wait_phase("agent", Phase::Progressing, LONG).await;
    world.wait_phase("agent", Phase::Succeeded, LONG).await;
    let primary = world.daemon_sets().get("agent-primary").await.unwrap();
    assert_eq!(image(primary), "agent:1.1.0");
    let target = world.daemon_sets().get("agent").await.unwrap();
    let selector = target.spec.unwrap().template.spec.unwrap().node_selector;
    assert_eq!(
        selector
            .unwrap_or_default()
            .get("flagger.app/scale-to-zero")
            .map(String::as_str),
        Some("true"),
        "target scaled back to zero after promotion"
    );
}

/// Deleting a Canary never leaves the application at zero replicas: the target is scaled
/// back up and the apex Service handed back to it before serin lets go, with or without
/// `revertOnDeletion`.
async fn deletion_hands_the_application_back(cp: ControlPlane, revert_on_deletion: bool) {
    let world = world(cp).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["revertOnDeletion"] = json!(revert_on_deletion);
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    assert_eq!(world.replicas("podinfo").await, 0);

    let serving = watch_serving(&world, "podinfo");
    world.delete_canary("podinfo").await;
    let canaries = world.canaries();
    wait_until(LONG, "Canary deleted", || async {
        canaries.get_opt("podinfo").await.unwrap().is_none()
    })
    .await;
    assert_eq!(world.replicas("podinfo").await, 2, "target scaled back up");
    assert_eq!(
        world.ready_replicas("podinfo").await,
        2,
        "and ready before serin let go"
    );
    let apex = world.services().get("podinfo").await.unwrap();
    assert_eq!(apex.spec.unwrap().selector.unwrap()["app"], "podinfo");
    assert!(
        apex.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "the apex Service no longer belongs to the Canary"
    );
    // The Canary's own objects are garbage collected.
    let deployments = world.deployments();
    wait_until(LONG, "primary garbage collected", || async {
        deployments
            .get_opt("podinfo-primary")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let gaps = serving.stop();
    assert!(
        gaps.is_empty(),
        "the apex moved before the target was ready: {gaps:?}"
    );
}

async fn deleting_a_canary_without_revert_on_deletion_keeps_the_application_serving(
    cp: ControlPlane,
) {
    deletion_hands_the_application_back(cp, false).await;
}

async fn deleting_a_canary_with_revert_on_deletion_restores_the_target(cp: ControlPlane) {
    deletion_hands_the_application_back(cp, true).await;
}

/// A Canary deleted mid-release whose new version never becomes ready (the outage of issue
/// 25): serin does not hand the apex Service to the unready target, and the primary it keeps
/// serving is no longer owned by the Canary, so the garbage collector, which does take the
/// Canary's other objects, leaves it. The user is told what to delete later.
async fn deleting_a_canary_whose_new_version_never_becomes_ready_keeps_the_primary_serving(
    cp: ControlPlane,
) {
    let world = world(cp).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    let mut c = canary("podinfo").iterations(3).build();
    c["spec"]["progressDeadlineSeconds"] = json!(6);
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world
        .set_image("podinfo", "app", "podinfo:6.0.1-broken")
        .await;
    world
        .wait_event(
            "podinfo",
            &format!("New revision detected! Scaling up podinfo.{}", world.ns()),
            LONG,
        )
        .await;

    let serving = watch_serving(&world, "podinfo");
    world.delete_canary("podinfo").await;
    let canaries = world.canaries();
    wait_until(LONG, "Canary deleted", || async {
        canaries.get_opt("podinfo").await.unwrap().is_none()
    })
    .await;
    world
        .wait_event(
            "podinfo",
            &format!(
                "kept podinfo-primary.{} serving and routing on it",
                world.ns()
            ),
            LONG,
        )
        .await;
    // The garbage collector has acted on what the Canary still owned...
    let services = world.services();
    wait_until(LONG, "podinfo-canary garbage collected", || async {
        services.get_opt("podinfo-canary").await.unwrap().is_none()
    })
    .await;
    // ...and left what serves: the primary, ready, and the apex selecting its pods.
    let primary = world.deployments().get("podinfo-primary").await.unwrap();
    assert!(
        primary
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .is_empty(),
        "the primary no longer belongs to the Canary"
    );
    assert_eq!(world.ready_replicas("podinfo-primary").await, 2);
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.0");
    let apex = world.services().get("podinfo").await.unwrap();
    assert!(
        apex.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "the apex Service no longer belongs to the Canary"
    );
    let selector = apex.spec.unwrap().selector.unwrap();
    let labels = primary
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the apex {selector:?} selects the primary's pods {labels:?}"
    );
    // The broken version never served. (The target may have ready pods of the old version:
    // a Deployment scaled up before its controller has made the new ReplicaSet scales the
    // old one, as Kubernetes' proportional scaling does.)
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(world.client.clone(), world.ns());
    let broken_ready: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            let spec = p.spec.as_ref();
            spec.is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.image.as_deref() == Some("podinfo:6.0.1-broken"))
            })
        })
        .filter(|p| {
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        broken_ready.is_empty(),
        "the broken version served: {broken_ready:?}"
    );
    let gaps = serving.stop();
    assert!(
        gaps.is_empty(),
        "the apex had nothing ready behind it: {gaps:?}"
    );
}

/// Looks, every 50 ms until stopped, at what the apex Service selects: some Deployment's
/// pods, with at least one ready. [`Serving::stop`] returns the looks that found none.
fn watch_serving(world: &World, apex: &str) -> Serving {
    let gaps = Arc::new(Mutex::new(Vec::new()));
    let services = world.services();
    let deployments = world.deployments();
    let (apex, seen) = (apex.to_string(), gaps.clone());
    let task = tokio::spawn(async move {
        // No deadline: the scenario stops the looks.
        let poll = Poll::new(Duration::MAX).every(Duration::from_millis(50));
        loop {
            if let Some(gap) = serving_gap(&services, &deployments, &apex).await {
                seen.lock().unwrap().push(gap);
            }
            poll.next().await;
        }
    });
    Serving { task, gaps }
}

struct Serving {
    task: tokio::task::JoinHandle<()>,
    gaps: Arc<Mutex<Vec<String>>>,
}

impl Serving {
    fn stop(self) -> Vec<String> {
        self.task.abort();
        self.gaps.lock().unwrap().clone()
    }
}

/// Why the apex has nothing ready behind it, if so (`None` also when a read fails: only
/// what was seen counts).
async fn serving_gap(
    services: &kube::Api<k8s_openapi::api::core::v1::Service>,
    deployments: &kube::Api<k8s_openapi::api::apps::v1::Deployment>,
    apex: &str,
) -> Option<String> {
    let service = services.get_opt(apex).await.ok()?;
    let Some(service) = service else {
        return Some(format!("Service {apex} missing"));
    };
    let selector = service.spec?.selector.unwrap_or_default();
    let list = deployments.list(&Default::default()).await.ok()?;
    let selected: Vec<_> = list
        .items
        .iter()
        .filter(|d| {
            let labels = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    let ready: i32 = selected
        .iter()
        .map(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })
        .sum();
    // What each selected Deployment said, for a failure to show why nothing was ready.
    let said: Vec<String> = selected
        .iter()
        .map(|d| {
            let s = d.status.clone().unwrap_or_default();
            format!(
                "{} generation {:?} observed {:?} replicas {:?}/{:?} updated {:?} ready {:?} \
                 available {:?}",
                d.metadata.name.as_deref().unwrap_or_default(),
                d.metadata.generation,
                s.observed_generation,
                d.spec.as_ref().and_then(|s| s.replicas),
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.available_replicas,
            )
        })
        .collect();
    (ready == 0).then(|| format!("{apex} selects {selector:?}: no ready pods ({said:?})"))
}

async fn skip_analysis_promotes_without_checks(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, "podinfo", 10).await;
    world
        .merge(
            &world.canaries(),
            "podinfo",
            json!({"spec": {"skipAnalysis": true}}),
        )
        .await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    // The transition's events go out right after its status is written: waited for, not
    // expected at the instant the phase reads Succeeded.
    world
        .wait_event(
            "podinfo",
            &format!(
                "Promotion completed! Canary analysis was skipped for podinfo.{}",
                world.ns()
            ),
            LONG,
        )
        .await;
    assert!(!world.has_event("podinfo", "canary iteration").await);
}

async fn an_existing_apex_service_is_taken_over_by_its_selector_only(cp: ControlPlane) {
    let world = world(cp).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    world
        .apply(
            &world.services(),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "podinfo", "labels": {"team": "web"},
                                "annotations": {"team.example.com/owner": "web"}},
                   "spec": {"selector": {"app": "podinfo"},
                            "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}}),
        )
        .await;
    let before = world.services().get("podinfo").await.unwrap();
    world
        .apply(&world.canaries(), canary("podinfo").iterations(2).build())
        .await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;

    let after = world.services().get("podinfo").await.unwrap();
    assert_eq!(
        after.metadata.uid, before.metadata.uid,
        "same Service, never recreated"
    );
    assert_eq!(
        after.spec.as_ref().unwrap().cluster_ip,
        before.spec.as_ref().unwrap().cluster_ip
    );
    assert_eq!(
        after.spec.unwrap().selector.unwrap()["app"],
        "podinfo-primary"
    );
    assert_eq!(
        after.metadata.labels.unwrap()["team"],
        "web",
        "its owner's labels stay"
    );
    // GitOps tools must not put the user's selector back (production traffic would go to
    // the target serin scaled to zero): the opt-outs Flux honours, as Flagger sets them.
    let annotations = after.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("kustomize.toolkit.fluxcd.io/reconcile")
            .map(String::as_str),
        Some("disabled"),
        "{annotations:?}"
    );
    assert_eq!(
        annotations
            .get("helm.toolkit.fluxcd.io/driftDetection")
            .map(String::as_str),
        Some("disabled"),
        "{annotations:?}"
    );
    assert_eq!(
        annotations
            .get("team.example.com/owner")
            .map(String::as_str),
        Some("web"),
        "its owner's annotations stay"
    );
    assert!(
        after
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Handed back when the Canary goes: the target's selector, and GitOps in charge again.
    world.delete_canary("podinfo").await;
    let canaries = world.canaries();
    wait_until(LONG, "Canary deleted", || async {
        canaries.get_opt("podinfo").await.unwrap().is_none()
    })
    .await;
    let handed_back = world.services().get("podinfo").await.unwrap();
    assert_eq!(
        handed_back.spec.unwrap().selector.unwrap()["app"],
        "podinfo"
    );
    let annotations = handed_back.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("kustomize.toolkit.fluxcd.io/reconcile")
            && !annotations.contains_key("helm.toolkit.fluxcd.io/driftDetection")
            && annotations
                .get("team.example.com/owner")
                .map(String::as_str)
                == Some("web"),
        "{annotations:?}"
    );
}

async fn the_primary_gets_a_copy_of_the_targets_autoscaler(cp: ControlPlane) {
    let world = world(cp).await;
    let hpas: kube::Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        kube::Api::namespaced(world.client.clone(), world.ns());
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    world
        .apply(
            &hpas,
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": "podinfo"},
                   "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                            "minReplicas": 2, "maxReplicas": 4}}),
        )
        .await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["autoscalerRef"] = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "name": "podinfo", "primaryScalerReplicas": {"minReplicas": 3, "maxReplicas": 6}});
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    let copy = hpas.get("podinfo-primary").await.unwrap().spec.unwrap();
    assert_eq!(copy.scale_target_ref.name, "podinfo-primary");
    assert_eq!((copy.min_replicas, copy.max_replicas), (Some(3), 6));
}

/// A KEDA ScaledObject: the primary gets its own (scaling the primary, with
/// `primaryScalerQueries`), and the target's is paused at zero while serin holds the target
/// at zero, then resumed for a release.
async fn a_keda_scaled_object_is_copied_and_the_targets_paused(cp: ControlPlane) {
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .routing_crds()
        .start()
        .await;
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    );
    let scaled: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(world.client.clone(), world.ns(), &resource);
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    world
        .apply(
            &scaled,
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "podinfo"},
                "spec": {"scaleTargetRef": {"name": "podinfo"}, "minReplicaCount": 2, "maxReplicaCount": 4,
                    "triggers": [{"type": "prometheus", "name": "rps",
                        "metadata": {"query": "sum(rate(x{app=\"podinfo\"}[1m]))"}}]}}),
        )
        .await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["autoscalerRef"] = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "name": "podinfo", "primaryScalerQueries": {"rps": "sum(rate(x{app=\"podinfo-primary\"}[1m]))"}});
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    let copy = scaled.get("podinfo-primary").await.unwrap();
    assert_eq!(
        copy.data["spec"]["scaleTargetRef"]["name"],
        "podinfo-primary"
    );
    assert_eq!(
        copy.data["spec"]["triggers"][0]["metadata"]["query"],
        "sum(rate(x{app=\"podinfo-primary\"}[1m]))"
    );
    let paused = |o: &kube::api::DynamicObject| {
        o.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("autoscaling.keda.sh/paused-replicas").cloned())
    };
    assert_eq!(
        paused(&scaled.get("podinfo").await.unwrap()).as_deref(),
        Some("0")
    );

    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Progressing, LONG).await;
    assert_eq!(
        paused(&scaled.get("podinfo").await.unwrap()),
        None,
        "resumed for the release"
    );
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(
        paused(&scaled.get("podinfo").await.unwrap()).as_deref(),
        Some("0")
    );
}

async fn a_service_target_is_released_as_a_primary_copy(cp: ControlPlane) {
    let world = world(cp).await;
    world
        .apply(
            &world.services(),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "backend"},
                   "spec": {"type": "ExternalName", "externalName": "backend-v1.example.com"}}),
        )
        .await;
    let mut c = canary("backend").iterations(2).build();
    c["spec"]["targetRef"] = json!({"apiVersion": "v1", "kind": "Service", "name": "backend"});
    world.apply(&world.canaries(), c).await;
    world.wait_phase("backend", Phase::Initialized, LONG).await;
    let primary = world.services().get("backend-primary").await.unwrap();
    assert_eq!(
        primary.spec.unwrap().external_name.as_deref(),
        Some("backend-v1.example.com")
    );

    world
        .merge(
            &world.services(),
            "backend",
            json!({"spec": {"externalName": "backend-v2.example.com"}}),
        )
        .await;
    world.wait_phase("backend", Phase::Progressing, LONG).await;
    world.wait_phase("backend", Phase::Succeeded, LONG).await;
    let primary = world.services().get("backend-primary").await.unwrap();
    assert_eq!(
        primary.spec.unwrap().external_name.as_deref(),
        Some("backend-v2.example.com")
    );
}

async fn going_back_to_the_promoted_revision_cancels_the_release_without_analysis(
    cp: ControlPlane,
) {
    let world = world(cp).await;
    initialized(&world, "podinfo", 8).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_iterations("podinfo", 1).await;
    world.set_image("podinfo", "app", "podinfo:6.0.0").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    world
        .wait_event(
            "podinfo",
            "is back at the promoted revision; release cancelled",
            LONG,
        )
        .await;
    assert!(
        !world
            .has_event(
                "podinfo",
                &format!("Copying podinfo.{} template spec", world.ns())
            )
            .await
    );
    assert_eq!(world.replicas("podinfo").await, 0);
}

async fn a_hand_edit_of_the_primary_is_put_back_and_reported(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, "podinfo", 3).await;
    world
        .set_image("podinfo-primary", "app", "podinfo:hotfix")
        .await;
    world
        .wait_event(
            "podinfo",
            &format!(
                "Deployment/{}/podinfo-primary was changed outside serin",
                world.ns()
            ),
            LONG,
        )
        .await;
    let deployments = world.deployments();
    wait_until(LONG, "primary template restored", || async {
        let d = deployments.get("podinfo-primary").await.unwrap();
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref()
            == Some("podinfo:6.0.0")
    })
    .await;
    // A release still promotes normally afterwards.
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
}

/// `service.portDiscovery`: the generated Services carry the target's other container ports
/// too, on every provider (Flagger's behaviour), not only Istio's routes.
async fn port_discovery_adds_the_targets_other_ports_to_the_services(cp: ControlPlane) {
    let world = world(cp).await;
    let mut d = deployment("podinfo", "podinfo:6.0.0", 1);
    d["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([
        {"name": "http", "containerPort": 9898},
        {"name": "http-metrics", "containerPort": 8080},
        {"containerPort": 8888}
    ]);
    world.apply(&world.deployments(), d).await;
    let mut c = canary("podinfo").iterations(2).build();
    c["spec"]["service"]["portDiscovery"] = json!(true);
    world.apply(&world.canaries(), c).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    for name in ["podinfo", "podinfo-primary", "podinfo-canary"] {
        let svc = world.services().get(name).await.unwrap();
        let ports: Vec<(String, i32)> = svc
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("http".to_string(), 9898),
                ("http-metrics".to_string(), 8080),
                ("tcp-app-2".to_string(), 8888)
            ],
            "{name}"
        );
    }
}

serin_testkit::on_every_control_plane!(virtual_time:
    port_discovery_adds_the_targets_other_ports_to_the_services,
    a_configmap_change_starts_an_analysis_and_is_promoted_as_a_primary_copy,
    a_daemon_set_is_released_through_its_primary,
    deleting_a_canary_without_revert_on_deletion_keeps_the_application_serving,
    deleting_a_canary_with_revert_on_deletion_restores_the_target,
    deleting_a_canary_whose_new_version_never_becomes_ready_keeps_the_primary_serving,
    skip_analysis_promotes_without_checks,
    an_existing_apex_service_is_taken_over_by_its_selector_only,
    the_primary_gets_a_copy_of_the_targets_autoscaler,
    a_keda_scaled_object_is_copied_and_the_targets_paused,
    a_service_target_is_released_as_a_primary_copy,
    going_back_to_the_promoted_revision_cancels_the_release_without_analysis,
    a_hand_edit_of_the_primary_is_put_back_and_reported,
);
