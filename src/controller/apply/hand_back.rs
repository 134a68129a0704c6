//! Handing back on deletion (`spec.revertOnDeletion`): the target scaled up again and the apex
//! Service selecting it, as before serin.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::controller::caches::packed;
use crate::controller::error::Error;
use crate::controller::reconcile::target::Target;
use crate::workload::knative;
use crate::workload::services::{self};

use super::Scope;

impl Scope<'_> {
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
        let Some(live) = packed::get(&self.ctx.stores.services, self.namespace, &apex)? else {
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
