//! The I/O of the engine's effects on workloads and Services. Every write is idempotent
//! (server-side apply with serin's field manager, or a merge patch of one field), so an effect
//! re-applied after a crash before the status write is harmless.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::Canary;
use crate::controller::caches::lean::{Lean, Meta};
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::reconcile::target::{Primary, Target};
use crate::workload::configs::Tracked;

mod autoscaler;
mod hand_back;
pub mod orphan;
mod primary;
pub mod primary_drift;
pub mod routes;
pub mod routing_cache;
mod scale;
mod services;
mod stateful_set;
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
    /// Whether the step leaves a release under analysis (Progressing, WaitingPromotion): a
    /// StatefulSet's partition then follows the canary's weight, and its primary Service
    /// selects the current revision's pods only.
    pub in_analysis: bool,
    /// The StatefulSet partition this step has set, if any: the cached target still shows
    /// the one before, and a second effect of the same step (the first step scales the
    /// target up, then moves the pods for the weight) must not patch the same value again.
    pub partition_set: std::sync::Mutex<Option<i32>>,
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
        // The answer decoded without its managed fields (see `lean`).
        let api: Api<Lean<K>> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let mut body = serde_json::to_value(object).map_err(Error::serialize)?;
        body["apiVersion"] = json!(K::api_version(&()));
        body["kind"] = json!(K::kind(&()));
        api.patch(name, &Self::apply_params(), &Patch::Apply(&body))
            .await
            .map(Lean::into_inner)
            .map_err(|e| {
                Error::kube(
                    format!("apply {} {}/{name}", K::kind(&()), self.namespace),
                    e,
                )
            })
    }

    pub(crate) fn controls(&self, meta: &ObjectMeta) -> bool {
        self.routing().controls(meta)
    }

    async fn patch_workload<K>(&self, name: &str, patch: &Value) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        // Only the answer's generation is read (see `lean::Meta`).
        let api: Api<Meta<K>> = Api::namespaced(self.ctx.client.clone(), self.namespace);
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
}
