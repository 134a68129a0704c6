//! A StatefulSet released in place (`workload::stateful_set`): the engine's effects become
//! moves of its partition, and a rollback deletes the pods on the new revision for the
//! StatefulSet controller to recreate on the current one.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::json;
use serin_core::EventType;

use crate::controller::error::Error;
use crate::controller::reconcile::target::Target;
use crate::workload::stateful_set::{self as sts, REVISION_LABEL};

use super::Scope;

impl Scope<'_> {
    /// Sets the partition, unless it is already `partition`.
    pub(super) async fn set_partition(&self, s: &StatefulSet, partition: i32) -> Result<(), Error> {
        if self.partition(s) == partition {
            return Ok(());
        }
        let patch = json!({"spec": {"updateStrategy": {
            "type": "RollingUpdate", "rollingUpdate": {"partition": partition}}}});
        self.patch_workload::<StatefulSet>(&s.name_any(), &patch)
            .await?;
        if let Ok(mut set) = self.partition_set.lock() {
            *set = Some(partition);
        }
        Ok(())
    }

    /// The partition as this step left it: the one it set, else the cached target's.
    fn partition(&self, s: &StatefulSet) -> i32 {
        self.partition_set
            .lock()
            .ok()
            .and_then(|set| *set)
            .unwrap_or_else(|| sts::partition(s))
    }

    /// For a StatefulSet target, [`Scope::update_pods_for`] at `weight`; nothing otherwise.
    pub async fn update_pods_for_weight(&self, weight: u32) -> Result<(), Error> {
        match self.target {
            Target::StatefulSet(s) => self.update_pods_for(s, weight).await,
            _ => Ok(()),
        }
    }

    /// The canary's share of pods at `weight` on the new revision: the partition is lowered
    /// to it, never raised (a raised partition would leave updated pods behind).
    pub(super) async fn update_pods_for(&self, s: &StatefulSet, weight: u32) -> Result<(), Error> {
        let replicas = sts::replicas(s);
        let partition = sts::partition_for(replicas, sts::canary_pods(replicas, weight));
        if partition >= self.partition(s) {
            return Ok(());
        }
        self.set_partition(s, partition).await
    }

    /// After a rollback (the partition back over every pod), the pods still on the new
    /// revision are deleted; the StatefulSet controller recreates each on the current
    /// revision, as it does every missing pod below the partition. Only the new revision's
    /// pods, each by uid, so a pod recreated meanwhile is left alone; the current revision's
    /// keep serving throughout.
    pub async fn roll_back_pods(&self, s: &StatefulSet) -> Result<(), Error> {
        let Some(revision) = sts::to_roll_back(s) else {
            return Ok(());
        };
        let Some((label, value)) = self.selector else {
            return Ok(());
        };
        let selector = format!("{label}={value},{REVISION_LABEL}={revision}");
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let found = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Error::kube(format!("list pods {selector} in {}", self.namespace), e))?;
        let mut deleted = Vec::new();
        for pod in found.items.iter().take(sts::replicas(s).max(0) as usize) {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&pod.name_any(), &params).await {
                Ok(_) => deleted.push(pod.name_any()),
                // Gone already, or replaced by a pod of the same name.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    return Err(Error::kube(
                        format!("delete pod {}/{}", self.namespace, pod.name_any()),
                        e,
                    ));
                }
            }
        }
        if !deleted.is_empty() {
            let message = format!(
                "Rolling back {} pod(s) of StatefulSet {}.{} from revision {revision}: {}",
                deleted.len(),
                s.name_any(),
                self.namespace,
                deleted.join(", ")
            );
            self.ctx
                .events
                .publish(self.canary, EventType::Normal, &message)
                .await;
        }
        Ok(())
    }
}
