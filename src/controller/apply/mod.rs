//! The I/O of the engine's effects on workloads and Services. Every write is idempotent
//! (server-side apply with serin's field manager, or a merge patch of one field), so an effect
//! re-applied after a crash before the status write is harmless.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::Canary;
use crate::api::canary::AutoscalerKind;
use crate::controller::context::{Context, key};
use crate::controller::error::{Error, Reason};
use crate::controller::reconcile::target::{KnativeService, Primary, Target};
use crate::workload::configs::Tracked;
use crate::workload::knative;
use crate::workload::primary::{self, CopyRules, PRIMARY_SUFFIX, SCALE_TO_ZERO_LABEL};
use crate::workload::services::{self, Role};

pub mod orphan;
pub mod primary_drift;
pub mod routes;
pub mod routing_cache;
mod template_copy;

/// Field manager of every write serin makes.
pub const MANAGER: &str = "serin";

/// What the effects of one step work on.
pub struct Scope<'a> {
    pub ctx: &'a Context,
    pub canary: &'a Canary,
    pub namespace: &'a str,
    pub target: &'a Target,
    pub primary: Option<&'a Primary>,
    /// Selector label of the target (`key`, `value`); `None` for Service targets.
    pub selector: Option<&'a (String, String)>,
    pub tracked: &'a Tracked,
}

impl Scope<'_> {
    pub(crate) fn owner(&self) -> Option<OwnerReference> {
        self.routing().owner()
    }

    /// Metadata of an object serin creates for this Canary, controlled by it.
    fn owned_meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.to_string()),
            owner_references: self.owner().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(MANAGER).force()
    }

    async fn apply<K>(&self, name: &str, object: &K) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Serialize
            + DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let mut body = serde_json::to_value(object).map_err(Error::serialize)?;
        body["apiVersion"] = json!(K::api_version(&()));
        body["kind"] = json!(K::kind(&()));
        api.patch(name, &Self::apply_params(), &Patch::Apply(&body))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("apply {} {}/{name}", K::kind(&()), self.namespace),
                    e,
                )
            })
    }

    /// Initialization: the primary, its configs, Services and autoscaler, when missing.
    pub async fn ensure_primary(&self) -> Result<(), Error> {
        if self.primary.is_none() {
            self.write_primary(false).await?;
        }
        self.ensure_side_services().await
    }

    /// Promotion: the primary runs the target's template (configs and autoscaler copied too).
    pub async fn promote(&self) -> Result<(), Error> {
        self.write_primary(true).await?;
        self.ensure_side_services().await
    }

    async fn write_primary(&self, promotion: bool) -> Result<(), Error> {
        match self.target {
            Target::Service(_) => return self.promote_service().await,
            Target::Knative(k) => return self.promote_revision(k).await,
            Target::Deployment(_) | Target::DaemonSet(_) => {}
        }
        self.copy_configs().await?;
        // A fresh id per promotion, so the primary always rolls (even to an identical template).
        let promotion_id = crate::controller::runtime::ids::fresh(self.canary, 16);
        let has_autoscaler = self.canary.spec.autoscaler_ref.is_some();
        let rules = CopyRules {
            selector_labels: &self.ctx.config.selector_labels,
            include_label_prefixes: &self.ctx.config.include_label_prefixes,
            tracked_configmaps: &self.tracked.configmaps,
            tracked_secrets: &self.tracked.secrets,
            has_autoscaler,
            promotion_id: &promotion_id,
        };
        match self.target {
            Target::Deployment(d) => {
                let current = self.primary.and_then(Primary::replicas);
                let mut p = primary::render(d, current, &rules).map_err(Error::workload)?;
                p.metadata.owner_references = self.owner().map(|o| vec![o]);
                let name = p.name_any();
                let written = self.apply(&name, &p).await?;
                self.ctx.expect_generation(&written);
                self.record_template(&written).await?;
            }
            Target::DaemonSet(d) => {
                let mut p = primary::render_daemon_set(d, &rules).map_err(Error::workload)?;
                p.metadata.owner_references = self.owner().map(|o| vec![o]);
                let name = p.name_any();
                let written = self.apply(&name, &p).await?;
                self.ctx.expect_generation(&written);
                self.record_template(&written).await?;
            }
            Target::Service(_) | Target::Knative(_) => {}
        }
        if has_autoscaler {
            self.copy_autoscaler(promotion).await?;
        }
        Ok(())
    }

    /// Service targets: `<target>-primary` is a copy of the target Service's spec.
    async fn promote_service(&self) -> Result<(), Error> {
        let Target::Service(s) = self.target else {
            return Ok(());
        };
        let name = format!("{}{PRIMARY_SUFFIX}", s.name_any());
        let mut spec = s.spec.clone().unwrap_or_default();
        // Cluster IPs are allocated per Service; copying them would be rejected.
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        let copy = Service {
            metadata: self.owned_meta(&name),
            spec: Some(spec),
            status: None,
        };
        self.apply(&name, &copy).await.map(|_| ())
    }

    /// Knative targets: the latest revision becomes the primary one. A merge patch of the
    /// annotation alone: a server-side apply without the traffic split that routing applied
    /// under the same field manager would remove that split.
    async fn promote_revision(&self, k: &KnativeService) -> Result<(), Error> {
        let Some(latest) = knative::latest_created(&k.service) else {
            return Err(Error::Blocked {
                reason: Reason::TargetInvalid,
                message: format!(
                    "Knative Service {}/{} has no status.latestCreatedRevisionName; \
                     wait for Knative to create a revision",
                    self.namespace,
                    k.service.name_any()
                ),
            });
        };
        if knative::primary_revision(&k.service) == Some(latest) {
            return Ok(());
        }
        self.annotate_knative(k, json!(latest)).await
    }

    /// Sets (or with `null` removes) the primary-revision annotation.
    async fn annotate_knative(&self, k: &KnativeService, value: Value) -> Result<(), Error> {
        let name = k.service.name_any();
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            self.ctx.client.clone(),
            self.namespace,
            &knative::service_resource(),
        );
        let patch = json!({"metadata": {"annotations": {knative::PRIMARY_REVISION: value}}});
        let answer = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("annotate Knative Service {}/{name}", self.namespace),
                    e,
                )
            })?;
        let key = knative::service_key(self.namespace, &name);
        self.ctx.routing.wrote(&key, &answer);
        Ok(())
    }

    /// Tracked ConfigMaps and Secrets copied to `-primary`, owned (not controlled) by this
    /// Canary so that several canaries can share one.
    async fn copy_configs(&self) -> Result<(), Error> {
        let mut owner = self.owner();
        if let Some(o) = owner.as_mut() {
            o.controller = Some(false);
        }
        for name in &self.tracked.configmaps {
            let Some(cm) = self.ctx.stores.configmaps.get(&key(self.namespace, name)) else {
                continue;
            };
            let copy = ConfigMap {
                metadata: self.copy_meta(&cm.metadata, name, owner.clone()),
                data: cm.data.clone(),
                binary_data: cm.binary_data.clone(),
                immutable: None,
            };
            self.apply(&format!("{name}{PRIMARY_SUFFIX}"), &copy)
                .await?;
        }
        for name in &self.tracked.secrets {
            let Some(secret) = self.ctx.stores.secrets.get(&key(self.namespace, name)) else {
                continue;
            };
            let copy = Secret {
                metadata: self.copy_meta(&secret.metadata, name, owner.clone()),
                data: secret.data.clone(),
                type_: secret.type_.clone(),
                ..Secret::default()
            };
            self.apply(&format!("{name}{PRIMARY_SUFFIX}"), &copy)
                .await?;
        }
        Ok(())
    }

    fn copy_meta(
        &self,
        from: &ObjectMeta,
        name: &str,
        owner: Option<OwnerReference>,
    ) -> ObjectMeta {
        let labels = primary::filtered(&from.labels, &self.ctx.config.include_label_prefixes);
        ObjectMeta {
            labels: (!labels.is_empty()).then_some(labels),
            owner_references: owner.map(|o| vec![o]),
            ..self.owned_meta(&format!("{name}{PRIMARY_SUFFIX}"))
        }
    }

    /// The primary's HorizontalPodAutoscaler: the target's, pointed at the primary, with
    /// `primaryScalerReplicas` applied. Created at initialization, updated on promotion.
    async fn copy_autoscaler(&self, promotion: bool) -> Result<(), Error> {
        let Some(reference) = &self.canary.spec.autoscaler_ref else {
            return Ok(());
        };
        if reference.kind == AutoscalerKind::ScaledObject {
            return self.copy_scaled_object(reference, promotion).await;
        }
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.ctx.client.clone(), self.namespace);
        let name = format!("{}{PRIMARY_SUFFIX}", reference.name);
        if !promotion
            && api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube("read HPA", e))?
                .is_some()
        {
            return Ok(());
        }
        let Some(hpa) = api
            .get_opt(&reference.name)
            .await
            .map_err(|e| Error::kube("read HPA", e))?
        else {
            return Err(Error::Blocked {
                reason: Reason::AutoscalerNotFound,
                message: format!(
                    "spec.autoscalerRef: HorizontalPodAutoscaler {}/{} not found",
                    self.namespace, reference.name
                ),
            });
        };
        let mut spec = hpa.spec.clone().unwrap_or_default();
        spec.scale_target_ref.name = format!("{}{PRIMARY_SUFFIX}", self.target_name());
        if let Some(r) = &reference.primary_scaler_replicas {
            if let Some(min) = r.min_replicas {
                spec.min_replicas = Some(min);
            }
            if let Some(max) = r.max_replicas {
                spec.max_replicas = max;
            }
        }
        let copy = HorizontalPodAutoscaler {
            metadata: self.owned_meta(&name),
            spec: Some(spec),
            status: None,
        };
        self.apply(&name, &copy).await.map(|_| ())
    }

    /// The primary's KEDA ScaledObject: the target's, scaling the primary (see `keda`).
    async fn copy_scaled_object(
        &self,
        reference: &crate::api::canary::AutoscalerRef,
        promotion: bool,
    ) -> Result<(), Error> {
        let api = self.scaled_objects(reference);
        let name = format!("{}{PRIMARY_SUFFIX}", reference.name);
        let exists = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("read ScaledObject", e))?
            .is_some();
        if exists && !promotion {
            return Ok(());
        }
        let not_found = || Error::Blocked {
            reason: Reason::AutoscalerNotFound,
            message: format!(
                "spec.autoscalerRef: ScaledObject {}/{} not found (is KEDA installed?)",
                self.namespace, reference.name
            ),
        };
        let source = match api.get_opt(&reference.name).await {
            Ok(Some(s)) => s,
            Ok(None) | Err(kube::Error::Api(_)) => return Err(not_found()),
            Err(e) => return Err(Error::kube("read ScaledObject", e)),
        };
        let primary_workload = format!("{}{PRIMARY_SUFFIX}", self.target_name());
        let spec = crate::workload::keda::primary_spec(
            source.data.get("spec").unwrap_or(&Value::Null),
            &primary_workload,
            reference,
        );
        let mut copy = kube::api::DynamicObject::new(&name, &scaled_object_resource(reference))
            .within(self.namespace)
            .data(json!({"spec": spec}));
        copy.metadata = self.owned_meta(&name);
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&copy),
        )
        .await
        .map_err(|e| Error::kube(format!("apply ScaledObject {name}"), e))?;
        Ok(())
    }

    fn scaled_objects(
        &self,
        reference: &crate::api::canary::AutoscalerRef,
    ) -> Api<kube::api::DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            self.namespace,
            &scaled_object_resource(reference),
        )
    }

    /// Pauses (at zero) or resumes the target's own ScaledObject with the target's scale, so
    /// KEDA does not scale a target serin scaled to zero.
    async fn pause_target_scaler(&self, paused: bool) -> Result<(), Error> {
        let Some(reference) = self.canary.spec.autoscaler_ref.as_ref() else {
            return Ok(());
        };
        if reference.kind != AutoscalerKind::ScaledObject {
            return Ok(());
        }
        let value = if paused { json!("0") } else { Value::Null };
        let patch =
            json!({"metadata": {"annotations": {crate::workload::keda::PAUSED_REPLICAS: value}}});
        match self
            .scaled_objects(reference)
            .patch(
                &reference.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone: nothing scales the target.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::kube("pause the target's ScaledObject", e)),
        }
    }

    fn target_name(&self) -> String {
        match self.target {
            Target::Deployment(d) => d.name_any(),
            Target::DaemonSet(d) => d.name_any(),
            Target::Service(s) => s.name_any(),
            Target::Knative(k) => k.service.name_any(),
        }
    }

    /// `<apex>-primary` and `<apex>-canary`, which address each version directly.
    async fn ensure_side_services(&self) -> Result<(), Error> {
        for role in [Role::Primary, Role::Canary] {
            self.ensure_service(role).await?;
        }
        Ok(())
    }

    /// All three generated Services; the apex selects the primary.
    pub async fn ensure_services(&self) -> Result<(), Error> {
        for role in [Role::Primary, Role::Canary, Role::Apex] {
            self.ensure_service(role).await?;
        }
        Ok(())
    }

    async fn ensure_service(&self, role: Role) -> Result<(), Error> {
        let Some((label, value)) = self.selector else {
            // Service targets route by their own Services.
            return Ok(());
        };
        let discovered = services::discovered_ports(&self.canary.spec, self.target.pod());
        let mut desired = services::render(
            &self.canary.spec,
            self.namespace,
            label,
            value,
            role,
            &discovered,
        );
        let name = desired.name_any();
        let live = self.ctx.stores.services.get(&key(self.namespace, &name));
        let owned = live.as_ref().is_none_or(|s| self.controls(&s.metadata));
        if let Some(live) = &live
            && same_routing(live, &desired)
            && match owned {
                true => live.metadata.owner_references.is_some(),
                false => services::opts_out_of_gitops(live),
            }
        {
            return Ok(());
        }
        if owned {
            desired.metadata.owner_references = self.owner().map(|o| vec![o]);
        } else {
            // Taking over someone else's apex Service: only its selector and ports change,
            // so its clients never see it disappear and its owner keeps the rest; GitOps
            // tools are told to leave it alone meanwhile.
            desired.metadata.labels = None;
            desired.metadata.annotations = Some(
                services::FLUX_OPT_OUT
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        self.apply(&name, &desired).await.map(|_| ())
    }

    pub(crate) fn controls(&self, meta: &ObjectMeta) -> bool {
        self.routing().controls(meta)
    }

    /// Scales the target to zero (a DaemonSet gets a nodeSelector no node matches).
    pub async fn scale_target_to_zero(&self) -> Result<(), Error> {
        self.pause_target_scaler(true).await?;
        match self.target {
            Target::Deployment(d) => self.scale_deployment(&d.name_any(), 0).await,
            Target::DaemonSet(d) => {
                let patch = json!({"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO_LABEL: "true"}}}}});
                self.patch_workload::<DaemonSet>(&d.name_any(), &patch)
                    .await
            }
            // Knative scales revisions by their traffic.
            Target::Service(_) | Target::Knative(_) => Ok(()),
        }
    }

    /// Scales the target up for a release or a revert: its own replicas if it has some, else
    /// the primary's, else the autoscaler's minimum, else 1.
    pub async fn scale_target_up(&self) -> Result<(), Error> {
        self.pause_target_scaler(false).await?;
        match self.target {
            Target::Deployment(d) => {
                let own = self.target.replicas().filter(|r| *r > 0);
                let replicas = match own {
                    Some(r) => r,
                    None => match self.primary.and_then(Primary::replicas).filter(|r| *r > 0) {
                        Some(r) => r,
                        None => self.autoscaler_min().await.unwrap_or(1),
                    },
                };
                if self.target.replicas() == Some(replicas) {
                    return Ok(());
                }
                self.scale_deployment(&d.name_any(), replicas).await
            }
            Target::DaemonSet(d) => {
                if !self.target.is_scaled_to_zero() {
                    return Ok(());
                }
                let patch = json!({"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO_LABEL: null}}}}});
                self.patch_workload::<DaemonSet>(&d.name_any(), &patch)
                    .await
            }
            Target::Service(_) | Target::Knative(_) => Ok(()),
        }
    }

    async fn autoscaler_min(&self) -> Option<i32> {
        let reference = self.canary.spec.autoscaler_ref.as_ref()?;
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.ctx.client.clone(), self.namespace);
        let hpa = api.get_opt(&reference.name).await.ok()??;
        hpa.spec?.min_replicas.filter(|m| *m > 1)
    }

    async fn scale_deployment(&self, name: &str, replicas: i32) -> Result<(), Error> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.patch_workload::<Deployment>(name, &patch).await
    }

    async fn patch_workload<K>(&self, name: &str, patch: &Value) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let written = api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("scale {} {}/{name}", K::kind(&()), self.namespace),
                    e,
                )
            })?;
        self.ctx.expect_generation(&written);
        Ok(())
    }

    /// Deletion: the target serves again and keeps the apex Service. The apex selects its
    /// pods and loses serin's owner reference (so garbage collection of the Canary's objects
    /// does not take it), then the primary may go. The engine asks for this only once the
    /// target is ready (it scaled it up in earlier steps): moving the selector in the step
    /// that scales up from zero would leave the Service with no ready pods.
    pub async fn revert(&self) -> Result<(), Error> {
        if let Target::Knative(k) = self.target {
            // Knative serves the latest revision again once the split is restored; the
            // annotation goes with it.
            if self.canary.spec.revert_on_deletion()
                && knative::primary_revision(&k.service).is_some()
            {
                self.annotate_knative(k, Value::Null).await?;
            }
            return Ok(());
        }
        let Some((label, value)) = self.selector else {
            return Ok(());
        };
        let apex = self.canary.spec.service_name().to_string();
        let Some(live) = self.ctx.stores.services.get(&key(self.namespace, &apex)) else {
            return Ok(());
        };
        let uid = self.canary.uid().unwrap_or_default();
        let owners: Vec<&OwnerReference> = live
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.uid != uid)
            .collect();
        let selector = live.spec.as_ref().and_then(|s| s.selector.clone());
        let wanted = BTreeMap::from([(label.clone(), value.clone())]);
        let owned = owners.len() != live.metadata.owner_references.as_ref().map_or(0, Vec::len);
        let opted_out = live.metadata.annotations.as_ref().is_some_and(|a| {
            services::FLUX_OPT_OUT
                .iter()
                .any(|(k, _)| a.contains_key(*k))
        });
        if selector.as_ref() == Some(&wanted) && !owned && !opted_out {
            return Ok(());
        }
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        // GitOps is in charge again: the opt-outs serin added go (null removes a key).
        let annotations: serde_json::Map<String, serde_json::Value> = services::FLUX_OPT_OUT
            .iter()
            .map(|(k, _)| (k.to_string(), serde_json::Value::Null))
            .collect();
        let patch = json!({
            "metadata": {"ownerReferences": owners, "resourceVersion": live.resource_version(),
                "annotations": annotations},
            "spec": {"selector": wanted},
        });
        api.patch(&apex, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::kube(format!("hand back Service {}/{apex}", self.namespace), e))?;
        Ok(())
    }
}

/// KEDA's ScaledObject resource, at the version the Canary names.
fn scaled_object_resource(reference: &crate::api::canary::AutoscalerRef) -> kube::api::ApiResource {
    let (group, version) = reference
        .api_version
        .split_once('/')
        .unwrap_or(("keda.sh", "v1alpha1"));
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, version, "ScaledObject"),
        "scaledobjects",
    )
}

/// The parts of a Service that route: selector and ports.
fn same_routing(live: &Service, desired: &Service) -> bool {
    let (Some(l), Some(d)) = (&live.spec, &desired.spec) else {
        return false;
    };
    let ports = |s: &k8s_openapi::api::core::v1::ServiceSpec| {
        s.ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.port, p.target_port.clone()))
            .collect::<Vec<_>>()
    };
    l.selector == d.selector && ports(l) == ports(d)
}
