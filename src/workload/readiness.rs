//! Readiness of Deployments and DaemonSets, with Flagger's rules and its
//! progress deadline: a rollout that cannot finish is `Failed`, one that is still moving is
//! `NotReady` with the reason a platform engineer would look for.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serin_core::Readiness;

/// Converts a Kubernetes time (jiff) to serin's time type (chrono), at the edge.
pub fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.0.as_second(), 0)
}

/// Readiness of a Deployment.
///
/// `ready_threshold` is the percentage of updated replicas that must be available
/// (`analysis.primaryReadyThreshold` / `canaryReadyThreshold`, default 100);
/// `progress_deadline` is the Canary's `progressDeadlineSeconds`.
pub fn deployment(
    deployment: &Deployment,
    ready_threshold: u32,
    progress_deadline: TimeDelta,
    now: DateTime<Utc>,
) -> Readiness {
    let name = deployment.metadata.name.as_deref().unwrap_or("<unnamed>");
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else {
        return Readiness::NotReady(format!("deployment {name} has no status yet"));
    };
    if generation > status.observed_generation.unwrap_or(0) {
        return Readiness::NotReady(
            "observed deployment generation less than desired generation".into(),
        );
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if conditions.iter().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Readiness::Failed(format!("deployment {name} exceeded its progress deadline"));
    }
    // Unavailable for longer than the Canary's deadline: waiting will not help.
    let stuck = conditions.iter().any(|c| {
        c.type_ == "Available"
            && c.status == "False"
            && c.reason.as_deref() == Some("MinimumReplicasUnavailable")
            && c.last_update_time
                .as_ref()
                .and_then(to_chrono)
                .is_some_and(|t| t + progress_deadline < now)
    });
    let waiting = |reason: String| {
        if stuck {
            Readiness::Failed(format!(
                "deployment {name} exceeded its progress deadline: {reason}"
            ))
        } else {
            Readiness::NotReady(reason)
        }
    };

    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return waiting(format!(
            "waiting for rollout to finish: {updated} out of {desired} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "waiting for rollout to finish: {} old replicas are pending termination",
            replicas - updated
        ));
    }
    let needed = required(updated, ready_threshold);
    if available < needed {
        return waiting(format!(
            "waiting for rollout to finish: {available} of {updated} (readyThreshold {ready_threshold}%) updated replicas are available"
        ));
    }
    Readiness::Ready
}

/// Readiness of a DaemonSet. DaemonSets have no progress condition, so the deadline counts
/// from `since`, the Canary's last transition.
pub fn daemon_set(
    daemon_set: &DaemonSet,
    ready_threshold: u32,
    progress_deadline: TimeDelta,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Readiness {
    let name = daemon_set.metadata.name.as_deref().unwrap_or("<unnamed>");
    let generation = daemon_set.metadata.generation.unwrap_or(0);
    let Some(status) = &daemon_set.status else {
        return Readiness::NotReady(format!("daemonset {name} has no status yet"));
    };
    let reason = if generation > status.observed_generation.unwrap_or(0) {
        Some("observed daemonset generation less than desired generation".to_string())
    } else {
        let desired = status.desired_number_scheduled;
        let updated = status.updated_number_scheduled.unwrap_or(0);
        let available = status.number_available.unwrap_or(0);
        if updated < desired {
            Some(format!(
                "waiting for rollout to finish: {updated} out of {desired} new pods have been updated"
            ))
        } else if available < required(desired, ready_threshold) {
            Some(format!(
                "waiting for rollout to finish: {available} of {desired} (readyThreshold {ready_threshold}%) updated pods are available"
            ))
        } else {
            None
        }
    };
    match reason {
        None => Readiness::Ready,
        Some(r) if since.is_some_and(|t| t + progress_deadline < now) => Readiness::Failed(
            format!("daemonset {name} exceeded its progress deadline: {r}"),
        ),
        Some(r) => Readiness::NotReady(r),
    }
}

/// Whether the statuses a Deployment's status is summed from are current: each of its
/// ReplicaSets (`replica_sets`, those the Deployment controls) has observed its latest
/// generation. A ReplicaSet scaled down computes its status from the pods it had before
/// deleting them, so scaled to zero and straight back up it can still count terminating
/// pods as ready, and the Deployment report them available at its current generation.
/// `Some(reason)` while one lags; no ReplicaSets at all is no evidence either way.
pub fn replica_sets_lag(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Option<String> {
    let uid = deployment.metadata.uid.as_deref()?;
    replica_sets
        .iter()
        .filter(|rs| {
            let owners = rs.metadata.owner_references.as_deref().unwrap_or_default();
            owners
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .find(|rs| {
            let generation = rs.metadata.generation.unwrap_or(0);
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
            observed.unwrap_or(0) < generation
        })
        .map(|rs| {
            format!(
                "waiting for ReplicaSet {} to observe its scale",
                rs.metadata.name.as_deref().unwrap_or("<unnamed>")
            )
        })
}

/// Replicas that must be available: `count × threshold / 100`, rounded down as Flagger does.
pub(super) fn required(count: i32, threshold: u32) -> i32 {
    let threshold = i64::from(threshold.min(100));
    i32::try_from(i64::from(count) * threshold / 100).unwrap_or(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn deploy(generation: i64, spec_replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "generation": generation},
            "spec": {"replicas": spec_replicas, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    /// A Deployment of 2 replicas at `generation` whose status counts `[observed generation,
    /// replicas, updated, available]`: most rows of the table differ only there.
    fn rolling(generation: i64, [observed, replicas, updated, available]: [i32; 4]) -> Deployment {
        let status = json!({"observedGeneration": observed, "replicas": replicas,
            "updatedReplicas": updated, "availableReplicas": available});
        deploy(generation, 2, status)
    }

    #[test]
    fn deployment_table() {
        let deadline = TimeDelta::seconds(600);
        let long_ago = "2027-01-15T07:00:00Z"; // > 600 s before now()
        let cases: Vec<(&str, Deployment, &str)> = vec![
            ("rolled out", rolling(2, [2, 2, 2, 2]), "ready"),
            (
                "new generation not observed",
                rolling(3, [2, 2, 2, 2]),
                "not-ready",
            ),
            ("updating", rolling(2, [2, 2, 1, 2]), "not-ready"),
            (
                "old pods terminating",
                rolling(2, [2, 3, 2, 2]),
                "not-ready",
            ),
            ("not available", rolling(2, [2, 2, 2, 1]), "not-ready"),
            (
                "deadline exceeded",
                deploy(
                    2,
                    2,
                    json!({"observedGeneration": 2, "replicas": 2,
                "updatedReplicas": 1, "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded"}]}),
                ),
                "failed",
            ),
            (
                "unavailable past the canary's deadline",
                deploy(
                    2,
                    2,
                    json!({
                "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                "availableReplicas": 0, "conditions": [{"type": "Available", "status": "False",
                "reason": "MinimumReplicasUnavailable", "lastUpdateTime": long_ago}]}),
                ),
                "failed",
            ),
            (
                "scaled to zero",
                deploy(2, 0, json!({"observedGeneration": 2})),
                "ready",
            ),
        ];
        for (what, d, expected) in cases {
            let got = deployment(&d, 100, deadline, now());
            let kind = match got {
                Readiness::Ready => "ready",
                Readiness::NotReady(_) => "not-ready",
                Readiness::Failed(_) => "failed",
                Readiness::Missing => "missing",
            };
            assert_eq!(kind, expected, "{what}: {got:?}");
        }
    }

    #[test]
    fn ready_threshold_lowers_the_bar() {
        let d = deploy(
            2,
            4,
            json!({"observedGeneration": 2, "replicas": 4,
            "updatedReplicas": 4, "availableReplicas": 2}),
        );
        assert!(!deployment(&d, 100, TimeDelta::seconds(600), now()).is_ready());
        assert!(deployment(&d, 50, TimeDelta::seconds(600), now()).is_ready());
    }

    #[test]
    fn daemon_set_deadline_counts_from_the_canary() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "node-agent", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
                "currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 1,
                "updatedNumberScheduled": 3, "numberAvailable": 1},
        }))
        .unwrap();
        let deadline = TimeDelta::seconds(600);
        let recent = Some(now() - TimeDelta::seconds(10));
        let old = Some(now() - TimeDelta::seconds(601));
        assert!(matches!(
            daemon_set(&ds, 100, deadline, recent, now()),
            Readiness::NotReady(_)
        ));
        assert!(matches!(
            daemon_set(&ds, 100, deadline, old, now()),
            Readiness::Failed(_)
        ));
        assert!(daemon_set(&ds, 30, deadline, recent, now()).is_ready());
    }

    fn replica_set(owner: &str, generation: i64, observed: Option<i64>) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("podinfo-{generation}"), "generation": generation,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": "podinfo", "uid": owner, "controller": true}]},
            "status": {"replicas": 2, "observedGeneration": observed},
        }))
        .unwrap()
    }

    #[test]
    fn replica_sets_lag_table() {
        let mut d = rolling(3, [3, 2, 2, 2]);
        d.metadata.uid = Some("d-uid".into());
        let cases: Vec<(&str, Vec<ReplicaSet>, bool)> = vec![
            ("no ReplicaSets: no evidence", vec![], false),
            (
                "every one current",
                vec![replica_set("d-uid", 4, Some(4))],
                false,
            ),
            (
                "scaled back up before its controller looked again",
                vec![replica_set("d-uid", 5, Some(4))],
                true,
            ),
            ("never observed", vec![replica_set("d-uid", 1, None)], true),
            (
                "another Deployment's lags: not this one's",
                vec![replica_set("other", 5, Some(4))],
                false,
            ),
            (
                "one of two lags",
                vec![
                    replica_set("d-uid", 2, Some(2)),
                    replica_set("d-uid", 7, Some(6)),
                ],
                true,
            ),
        ];
        for (name, sets, lags) in cases {
            assert_eq!(replica_sets_lag(&d, &sets).is_some(), lags, "{name}");
        }
    }
}
