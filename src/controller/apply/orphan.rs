//! Keeping the primary when a Canary goes and its target cannot serve: the objects that carry
//! the user's traffic lose serin's owner reference, so the garbage collector, which deletes
//! what the deleted Canary owned, leaves them serving. The user deletes them once the target
//! serves (the Warning event the engine records says so).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::Scope;
use super::autoscaler::scaled_object_resource;
use crate::api::Canary;
use crate::api::canary::{AutoscalerKind, TargetKind};
use crate::controller::error::Error;
use crate::controller::reconcile::target::Target;
use crate::controller::router::{Input, Router};
use crate::workload::primary::PRIMARY_SUFFIX;

impl Scope<'_> {
    /// The primary workload, its config copies and autoscaler, the apex and `-primary`
    /// Services and serin's own routing objects stop being owned by the Canary. Objects
    /// serin took over are not owned by it and stay as they are (routing on the primary).
    pub async fn orphan_primary(
        &self,
        router: &dyn Router,
        input: &Input<'_>,
    ) -> Result<(), Error> {
        let Some(kept) = Keep::new(self.ctx.client.clone(), self.canary, self.namespace) else {
            return Ok(());
        };
        match self.target {
            // The primary revision belongs to the Knative Service, not to the Canary; the
            // split that keeps it serving is on the (taken-over) Knative Service.
            Target::Knative(_) => {}
            Target::Service(s) => {
                let primary = format!("{}{PRIMARY_SUFFIX}", s.name_any());
                kept.object::<Service>(&primary).await?;
            }
            Target::Deployment(_) | Target::DaemonSet(_) | Target::StatefulSet(_) => {
                let kind = match self.target {
                    Target::DaemonSet(_) => TargetKind::DaemonSet,
                    Target::StatefulSet(_) => TargetKind::StatefulSet,
                    _ => TargetKind::Deployment,
                };
                kept.workload_and_services(kind).await?;
            }
        }
        for name in &self.tracked.configmaps {
            kept.object::<ConfigMap>(&format!("{name}{PRIMARY_SUFFIX}"))
                .await?;
        }
        for name in &self.tracked.secrets {
            kept.object::<Secret>(&format!("{name}{PRIMARY_SUFFIX}"))
                .await?;
        }
        for key in router.objects(input) {
            // Cluster-scoped objects never carry a namespaced owner (see `routes`).
            let Some(namespace) = &key.namespace else {
                continue;
            };
            kept.dynamic(&key.resource, namespace, &key.name).await?;
        }
        Ok(())
    }
}

/// Lets go of one Canary's objects in its namespace.
pub struct Keep<'a> {
    client: Client,
    canary: &'a Canary,
    namespace: &'a str,
    uid: String,
}

impl<'a> Keep<'a> {
    /// `None` for a Canary without a uid (never stored, so it owns nothing).
    pub fn new(client: Client, canary: &'a Canary, namespace: &'a str) -> Option<Keep<'a>> {
        let uid = canary.uid()?;
        Some(Keep {
            client,
            canary,
            namespace,
            uid,
        })
    }

    /// What serving needs when only the spec is known (no target observed): the primary
    /// workload of the target's kind, its autoscaler copy, and the apex and `-primary`
    /// Services.
    pub async fn workload_and_services(&self, kind: TargetKind) -> Result<(), Error> {
        let spec = &self.canary.spec;
        let primary = format!("{}{PRIMARY_SUFFIX}", spec.target_ref.name);
        match kind {
            TargetKind::Deployment => self.object::<Deployment>(&primary).await?,
            TargetKind::DaemonSet => self.object::<DaemonSet>(&primary).await?,
            TargetKind::Service => self.object::<Service>(&primary).await?,
            // Released in place: the StatefulSet is the user's, serin made no copy.
            TargetKind::StatefulSet => {}
        }
        if let Some(reference) = &spec.autoscaler_ref {
            let copy = format!("{}{PRIMARY_SUFFIX}", reference.name);
            match reference.kind {
                AutoscalerKind::ScaledObject => {
                    let resource = scaled_object_resource(reference);
                    self.dynamic(&resource, self.namespace, &copy).await?;
                }
                AutoscalerKind::HorizontalPodAutoscaler => {
                    self.object::<HorizontalPodAutoscaler>(&copy).await?
                }
            }
        }
        let apex = spec.service_name().to_string();
        self.object::<Service>(&apex).await?;
        self.object::<Service>(&format!("{apex}{PRIMARY_SUFFIX}"))
            .await
    }

    async fn object<K>(&self, name: &str) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let resource = ApiResource::erase::<K>(&());
        self.dynamic(&resource, self.namespace, name).await
    }

    /// Removes this Canary's owner reference from one object; absent objects and objects it
    /// does not own are left alone.
    async fn dynamic(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<(), Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, resource);
        let what = || format!("{} {namespace}/{name}", resource.kind);
        let live = match api.get_opt(name).await {
            Ok(live) => live,
            // A kind the API server does not serve (e.g. KEDA not installed): nothing to keep.
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => return Err(Error::kube(format!("read {}", what()), e)),
        };
        let Some(live) = live else {
            return Ok(());
        };
        let owners = live.metadata.owner_references.clone().unwrap_or_default();
        let others: Vec<_> = owners.iter().filter(|o| o.uid != self.uid).collect();
        if others.len() == owners.len() {
            return Ok(());
        }
        // At the version read, so an owner added meanwhile is not dropped unseen (a conflict
        // is retried by the next reconcile).
        let patch = json!({"metadata": {
            "ownerReferences": others,
            "resourceVersion": live.resource_version(),
        }});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::kube(format!("keep {} (drop the Canary as owner)", what()), e))?;
        tracing::info!(object = %what(), "kept serving after the Canary's deletion");
        Ok(())
    }
}
