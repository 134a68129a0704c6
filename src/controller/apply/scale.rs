//! Scaling the target: to zero between releases, up (to its autoscaler's minimum) when a
//! release starts. A StatefulSet, released in place, is "scaled" by its partition: every pod
//! held on the current revision between releases, the canary's first pod updated when one
//! starts, every pod released when its Canary is deleted.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::ResourceExt;
use serde_json::json;

use crate::controller::error::Error;
use crate::controller::reconcile::target::{Primary, Target};
use crate::workload::primary::SCALE_TO_ZERO_LABEL;
use crate::workload::stateful_set;

use super::Scope;

impl Scope<'_> {
    pub(super) fn target_name(&self) -> String {
        match self.target {
            Target::Deployment(d) => d.name_any(),
            Target::DaemonSet(d) => d.name_any(),
            Target::StatefulSet(s) => s.name_any(),
            Target::Service(s) => s.name_any(),
            Target::Knative(k) => k.service.name_any(),
        }
    }

    /// Scales the target to zero (a DaemonSet gets a nodeSelector no node matches).
    pub async fn scale_target_to_zero(&self) -> Result<(), Error> {
        if let Target::StatefulSet(s) = self.target {
            // Its pods keep serving, so its autoscaler keeps working.
            return self.set_partition(s, stateful_set::replicas(s)).await;
        }
        self.pause_target_scaler(true).await?;
        match self.target {
            Target::Deployment(d) => self.scale_deployment(&d.name_any(), 0).await,
            Target::DaemonSet(d) => {
                let patch = json!({"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO_LABEL: "true"}}}}});
                self.patch_workload::<DaemonSet>(&d.name_any(), &patch)
                    .await
            }
            // Knative scales revisions by their traffic.
            Target::Service(_) | Target::Knative(_) | Target::StatefulSet(_) => Ok(()),
        }
    }

    /// Scales the target up for a release or a revert: its own replicas if it has some, else
    /// the primary's, else the autoscaler's minimum, else 1.
    pub async fn scale_target_up(&self) -> Result<(), Error> {
        if let Target::StatefulSet(s) = self.target {
            if self.canary.metadata.deletion_timestamp.is_some() {
                // Handed back: the StatefulSet rolls every pod again, as without serin.
                return self.set_partition(s, 0).await;
            }
            if self.target.is_scaled_to_zero() {
                return self.update_pods_for(s, 0).await;
            }
            return Ok(());
        }
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
            Target::Service(_) | Target::Knative(_) | Target::StatefulSet(_) => Ok(()),
        }
    }

    pub(super) async fn scale_deployment(&self, name: &str, replicas: i32) -> Result<(), Error> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.patch_workload::<Deployment>(name, &patch).await
    }
}
