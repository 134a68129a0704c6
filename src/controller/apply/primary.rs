//! The `-primary` copy: created, promoted (the target's template and tracked configs copied
//! to it), and for Service and Knative targets, the promotion of a Service or a revision.

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::controller::context::key;
use crate::controller::error::{Error, Reason};
use crate::controller::reconcile::target::{KnativeService, Primary, Target};
use crate::workload::knative;
use crate::workload::primary::{self, CopyRules, PRIMARY_SUFFIX};

use super::Scope;

impl Scope<'_> {
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

    pub(super) async fn write_primary(&self, promotion: bool) -> Result<(), Error> {
        match self.target {
            Target::Service(_) => return self.promote_service().await,
            Target::Knative(k) => return self.promote_revision(k).await,
            // Released in place: promoted by releasing every pod, nothing to copy.
            Target::StatefulSet(s) if promotion => return self.set_partition(s, 0).await,
            Target::StatefulSet(_) => return Ok(()),
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
            Target::Service(_) | Target::Knative(_) | Target::StatefulSet(_) => {}
        }
        if has_autoscaler {
            self.copy_autoscaler(promotion).await?;
        }
        Ok(())
    }

    /// Service targets: `<target>-primary` is a copy of the target Service's spec.
    pub(super) async fn promote_service(&self) -> Result<(), Error> {
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
    pub(super) async fn promote_revision(&self, k: &KnativeService) -> Result<(), Error> {
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
    pub(super) async fn annotate_knative(
        &self,
        k: &KnativeService,
        value: Value,
    ) -> Result<(), Error> {
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
    pub(super) async fn copy_configs(&self) -> Result<(), Error> {
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

    pub(super) fn copy_meta(
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
}
