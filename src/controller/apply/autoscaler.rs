//! The autoscaler beside the target: its HPA or KEDA ScaledObject copied for the primary, and
//! the target's own paused while the target is scaled to zero.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::api::canary::AutoscalerKind;
use crate::controller::error::{Error, Reason};
use crate::workload::primary::PRIMARY_SUFFIX;

use super::{MANAGER, Scope};

impl Scope<'_> {
    /// The primary's HorizontalPodAutoscaler: the target's, pointed at the primary, with
    /// `primaryScalerReplicas` applied. Created at initialization, updated on promotion.
    pub(super) async fn copy_autoscaler(&self, promotion: bool) -> Result<(), Error> {
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
    pub(super) async fn copy_scaled_object(
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

    pub(super) fn scaled_objects(
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
    pub(super) async fn pause_target_scaler(&self, paused: bool) -> Result<(), Error> {
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

    pub(super) async fn autoscaler_min(&self) -> Option<i32> {
        let reference = self.canary.spec.autoscaler_ref.as_ref()?;
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.ctx.client.clone(), self.namespace);
        let hpa = api.get_opt(&reference.name).await.ok()??;
        hpa.spec?.min_replicas.filter(|m| *m > 1)
    }
}

/// KEDA's ScaledObject resource, at the version the Canary names.
pub(super) fn scaled_object_resource(
    reference: &crate::api::canary::AutoscalerRef,
) -> kube::api::ApiResource {
    let (group, version) = reference
        .api_version
        .split_once('/')
        .unwrap_or(("keda.sh", "v1alpha1"));
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, version, "ScaledObject"),
        "scaledobjects",
    )
}
