//! The workload a Canary releases, as read from the caches: a Deployment, a DaemonSet, a
//! StatefulSet (released in place: its current revision is the primary, see
//! `workload::stateful_set`), a Service (route-only: nothing to copy or scale) or a Knative
//! Service (read from the API: its revisions are the versions), and the primary serin keeps
//! beside it.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use kube::ResourceExt;
use serde_json::Value;
use serin_core::Readiness;

use kube::api::DynamicObject;

use crate::workload::{knative, primary, readiness, stateful_set};

/// The target of a Canary.
#[derive(Clone, Debug)]
pub enum Target {
    Deployment(Arc<Deployment>),
    DaemonSet(Arc<DaemonSet>),
    StatefulSet(Arc<StatefulSet>),
    Service(Arc<Service>),
    Knative(Arc<KnativeService>),
}

/// A Knative Service and the revision Knative created last (the version being released).
#[derive(Clone, Debug)]
pub struct KnativeService {
    pub service: DynamicObject,
    pub latest: Option<DynamicObject>,
}

/// The primary copy, when it exists; for a Knative Service, the primary revision.
#[derive(Clone, Debug)]
pub enum Primary {
    Deployment(Arc<Deployment>),
    DaemonSet(Arc<DaemonSet>),
    /// The target itself: its pods on the current revision.
    StatefulSet(Arc<StatefulSet>),
    KnativeRevision(Arc<DynamicObject>),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Deployment(_) => "Deployment",
            Target::DaemonSet(_) => "DaemonSet",
            Target::StatefulSet(_) => "StatefulSet",
            Target::Service(_) | Target::Knative(_) => "Service",
        }
    }

    /// The pod spec of a workload target, typed (none for a Service target).
    pub fn pod(&self) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
        match self {
            Target::Deployment(d) => d.spec.as_ref()?.template.spec.as_ref(),
            Target::DaemonSet(d) => d.spec.as_ref()?.template.spec.as_ref(),
            Target::StatefulSet(s) => s.spec.as_ref()?.template.spec.as_ref(),
            Target::Service(_) | Target::Knative(_) => None,
        }
    }

    /// The pod template, as the revision is hashed from it (a DaemonSet's without the
    /// scale-to-zero nodeSelector, so scaling does not look like a new revision).
    pub fn template(&self) -> Option<PodTemplateSpec> {
        match self {
            Target::Deployment(d) => d.spec.as_ref().map(|s| s.template.clone()),
            Target::DaemonSet(d) => d.spec.as_ref().map(|s| {
                let mut t = s.template.clone();
                primary::strip_scale_to_zero(&mut t);
                t
            }),
            Target::StatefulSet(s) => s.spec.as_ref().map(|s| s.template.clone()),
            Target::Service(_) | Target::Knative(_) => None,
        }
    }

    /// What the revision hash covers: the pod template, the Service spec, or the name of the
    /// revision Knative created last (each new template gets one).
    pub fn revision_source(&self) -> Value {
        match self {
            Target::Service(s) => serde_json::to_value(&s.spec).unwrap_or(Value::Null),
            Target::Knative(k) => knative::latest_created(&k.service).into(),
            _ => serde_json::to_value(self.template()).unwrap_or(Value::Null),
        }
    }

    /// The pod spec (JSON) whose ConfigMap and Secret references are tracked.
    pub fn pod_spec(&self) -> Option<Value> {
        let spec = self.template()?.spec?;
        serde_json::to_value(spec).ok()
    }

    /// Readiness of the target as the canary of a release.
    pub fn readiness(&self, threshold: u32, at: &ReadinessClock) -> Readiness {
        match self {
            Target::Deployment(d) => readiness::deployment(d, threshold, at.deadline, at.now),
            Target::DaemonSet(d) => {
                readiness::daemon_set(d, threshold, at.deadline, at.since, at.now)
            }
            Target::StatefulSet(s) => {
                stateful_set::readiness(s, threshold, at.deadline, at.since, at.now)
            }
            // A Service has no pods of its own to wait for.
            Target::Service(_) => Readiness::Ready,
            Target::Knative(k) => match knative::latest_created(&k.service) {
                Some(name) => knative::revision_readiness(
                    k.latest.as_ref(),
                    name,
                    at.deadline,
                    at.since,
                    at.now,
                ),
                None => Readiness::NotReady("waiting for Knative to create a revision".into()),
            },
        }
    }

    /// The analysis' `{{ route }}` when the target names it: a Knative Service's latest
    /// created revision (Flagger's choice), read with the target, not again.
    pub fn route(&self) -> Option<&str> {
        match self {
            Target::Knative(k) => knative::latest_created(&k.service),
            _ => None,
        }
    }

    /// Replicas the target runs now (DaemonSets: `None`, they follow the nodes).
    pub fn replicas(&self) -> Option<i32> {
        match self {
            Target::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Target::StatefulSet(s) => Some(stateful_set::replicas(s)),
            _ => None,
        }
    }

    /// A DaemonSet "scaled to zero" carries the scale-to-zero nodeSelector; a StatefulSet's
    /// canary is "scaled to zero" while its partition holds every pod.
    pub fn is_scaled_to_zero(&self) -> bool {
        match self {
            Target::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas) == Some(0),
            Target::DaemonSet(d) => d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.node_selector.as_ref())
                .is_some_and(|n| n.contains_key(primary::SCALE_TO_ZERO_LABEL)),
            Target::StatefulSet(s) => stateful_set::partition(s) >= stateful_set::replicas(s),
            Target::Service(_) | Target::Knative(_) => false,
        }
    }
}

/// The times readiness is judged at: the progress deadline, since when the current phase
/// holds, and now.
#[derive(Clone, Copy, Debug)]
pub struct ReadinessClock {
    pub deadline: TimeDelta,
    pub since: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

impl Primary {
    pub fn readiness(&self, threshold: u32, at: &ReadinessClock) -> Readiness {
        match self {
            Primary::Deployment(d) => readiness::deployment(d, threshold, at.deadline, at.now),
            Primary::DaemonSet(d) => {
                readiness::daemon_set(d, threshold, at.deadline, at.since, at.now)
            }
            Primary::StatefulSet(s) => {
                stateful_set::readiness(s, threshold, at.deadline, at.since, at.now)
            }
            Primary::KnativeRevision(r) => {
                knative::revision_readiness(Some(r), &r.name_any(), at.deadline, at.since, at.now)
            }
        }
    }

    pub fn replicas(&self) -> Option<i32> {
        match self {
            Primary::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Primary::StatefulSet(s) => Some(stateful_set::replicas(s)),
            Primary::DaemonSet(_) | Primary::KnativeRevision(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_is_the_knative_latest_created_revision_and_nothing_else() {
        let service: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "status": {"latestCreatedRevisionName": "podinfo-00003"}
        }))
        .unwrap();
        let knative = Target::Knative(Arc::new(KnativeService {
            service,
            latest: None,
        }));
        assert_eq!(knative.route(), Some("podinfo-00003"));
        let deployment = Target::Deployment(Arc::new(Deployment::default()));
        assert_eq!(deployment.route(), None);
    }
}
