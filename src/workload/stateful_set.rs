//! StatefulSets, released in place. A StatefulSet cannot be copied into a `-primary` (its pods
//! own their identity and volumes), so its own rolling update does the release: the
//! partition (`spec.updateStrategy.rollingUpdate.partition`) holds every pod below it on the
//! current revision while the pods at and above it, the highest ordinals, run the new one.
//! Between releases the partition equals the replica count (a new template updates no pod);
//! at each step of a release it is lowered to put the canary's share of pods on the new
//! revision; promotion lowers it to 0; a rollback raises it back and deletes the pods on the
//! new revision, which the StatefulSet controller recreates on the current one (it recreates
//! a missing pod below the partition from the current revision).
//!
//! The pods of both revisions carry the same labels but `controller-revision-hash`, so the
//! canary Service selects the new revision's pods by it, and while a release is analysed the
//! primary Service the current revision's.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use serin_core::Readiness;

use super::services::Role;

/// The label the StatefulSet controller puts on each pod: the name of its revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Replicas asked for (`spec.replicas`, 1 when unset, as the API server defaults it).
pub fn replicas(s: &StatefulSet) -> i32 {
    s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// The rolling update's partition (0 when unset).
pub fn partition(s: &StatefulSet) -> i32 {
    s.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0)
}

/// Pods on the new revision at canary weight `weight` (percent): the weight's share of the
/// replicas rounded up, at least one (the canary needs a pod to be analysed) and at most all
/// but one (the primary keeps one).
pub fn canary_pods(replicas: i32, weight: u32) -> i32 {
    let share = (i64::from(replicas.max(0)) * i64::from(weight.min(100)) + 99) / 100;
    let most = (replicas - 1).max(1);
    i32::try_from(share).unwrap_or(most).clamp(1, most)
}

/// The partition that puts `pods` of `replicas` on the new revision (the highest ordinals).
pub fn partition_for(replicas: i32, pods: i32) -> i32 {
    (replicas - pods).max(0)
}

/// The current and the update revision, from the status.
pub fn revisions(s: &StatefulSet) -> (Option<&str>, Option<&str>) {
    let status = s.status.as_ref();
    (
        status.and_then(|st| st.current_revision.as_deref()),
        status.and_then(|st| st.update_revision.as_deref()),
    )
}

/// The revision whose pods a rollback deletes: the update revision, once the partition holds
/// every pod on the current one and the controller has seen it, while pods still run it.
pub fn to_roll_back(s: &StatefulSet) -> Option<&str> {
    let status = s.status.as_ref()?;
    let observed = status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    let (current, update) = revisions(s);
    let updated = status.updated_replicas.unwrap_or(0);
    match (current, update) {
        (Some(c), Some(u)) if c != u && observed && updated > 0 && partition(s) >= replicas(s) => {
            Some(u)
        }
        _ => None,
    }
}

/// The selector of a generated Service (`role`) of a StatefulSet whose pods carry
/// `key: value`: the apex selects every pod, as does the primary but while a release is
/// analysed (then the current revision's: during a promotion the current revision's pods go
/// one by one, and the primary Service must never be left without one), and the canary the
/// update revision's (none before the StatefulSet controller has named it).
pub fn service_selector(
    s: &StatefulSet,
    key: &str,
    value: &str,
    role: Role,
    in_analysis: bool,
) -> BTreeMap<String, String> {
    let mut selector = BTreeMap::from([(key.to_string(), value.to_string())]);
    let (current, update) = revisions(s);
    let revision = match role {
        Role::Apex => None,
        Role::Primary if !in_analysis => None,
        Role::Primary => Some(current.unwrap_or_default()),
        Role::Canary => Some(update.unwrap_or_default()),
    };
    if let Some(r) = revision {
        selector.insert(REVISION_LABEL.to_string(), r.to_string());
    }
    selector
}

/// What keeps a StatefulSet from being released by partition, as (field, message).
pub fn problems(s: &StatefulSet) -> Vec<(&'static str, String)> {
    let name = s.metadata.name.as_deref().unwrap_or("<unnamed>");
    let mut found = Vec::new();
    let strategy = s
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref());
    if strategy == Some("OnDelete") {
        found.push((
            "spec.updateStrategy.type",
            format!(
                "StatefulSet {name} updates its pods OnDelete: serin releases a StatefulSet \
                 through its rolling update's partition; set `updateStrategy.type: RollingUpdate`"
            ),
        ));
    }
    if replicas(s) < 2 {
        found.push((
            "spec.replicas",
            format!(
                "StatefulSet {name} has {} replica(s): a release in place needs at least 2, \
                 one for the canary and one that stays on the current revision",
                replicas(s)
            ),
        ));
    }
    found
}

/// Readiness of a StatefulSet as its partition asks: every pod at or above the partition on
/// the update revision, and the ready share of all pods at `ready_threshold` percent. The
/// same question for the canary (its pods updated and ready) and the primary (after the
/// promotion, every pod updated). StatefulSets have no progress condition, so the deadline
/// counts from `since`, the Canary's last transition.
pub fn readiness(
    s: &StatefulSet,
    ready_threshold: u32,
    progress_deadline: TimeDelta,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Readiness {
    let name = s.metadata.name.as_deref().unwrap_or("<unnamed>");
    let Some(status) = &s.status else {
        return Readiness::NotReady(format!("statefulset {name} has no status yet"));
    };
    let reason = if s.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        Some("observed statefulset generation less than desired generation".to_string())
    } else {
        let replicas = replicas(s);
        let want = partition_for(replicas, partition(s));
        let (current, update) = revisions(s);
        // With one revision every pod is on it, whatever the counts say.
        let updated = if current.is_some() && current == update {
            replicas
        } else {
            status.updated_replicas.unwrap_or(0)
        };
        let ready = status.ready_replicas.unwrap_or(0);
        let required = super::readiness::required(replicas, ready_threshold);
        if updated < want {
            Some(format!(
                "waiting for rollout to finish: {updated} out of {want} pods have been updated"
            ))
        } else if ready < required {
            Some(format!(
                "waiting for rollout to finish: {ready} of {replicas} (readyThreshold \
                 {ready_threshold}%) pods are ready"
            ))
        } else {
            None
        }
    };
    match reason {
        None => Readiness::Ready,
        Some(r) if since.is_some_and(|t| t + progress_deadline < now) => Readiness::Failed(
            format!("statefulset {name} exceeded its progress deadline: {r}"),
        ),
        Some(r) => Readiness::NotReady(r),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sts(spec: serde_json::Value, status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "generation": 2},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn the_canary_gets_its_share_of_pods_rounded_up_and_never_all() {
        for (replicas, weight, pods) in [
            (3, 0, 1),
            (3, 33, 1),
            (3, 34, 2),
            (3, 66, 2),
            (3, 100, 2),
            (10, 10, 1),
            (10, 25, 3),
            (10, 50, 5),
            (2, 50, 1),
            (2, 100, 1),
            (1, 50, 1),
        ] {
            assert_eq!(
                canary_pods(replicas, weight),
                pods,
                "{replicas} replicas at {weight}%"
            );
        }
        assert_eq!(partition_for(3, 1), 2);
        assert_eq!(partition_for(3, 5), 0);
    }

    #[test]
    fn ready_when_the_partition_is_rolled_out_and_the_pods_ready() {
        let spec = |partition: i32| {
            json!({"replicas": 3, "selector": {}, "serviceName": "db", "template": {},
                   "updateStrategy": {"type": "RollingUpdate",
                                      "rollingUpdate": {"partition": partition}}})
        };
        let status = |updated: i32, ready: i32, update: &str| {
            json!({"replicas": 3, "observedGeneration": 2, "updatedReplicas": updated,
                   "readyReplicas": ready, "currentRevision": "db-1", "updateRevision": update})
        };
        let now = Utc::now();
        let deadline = TimeDelta::seconds(60);
        let at =
            |s: &StatefulSet, since: Option<DateTime<Utc>>| readiness(s, 100, deadline, since, now);
        let cases = [
            (spec(2), status(1, 3, "db-2"), Readiness::Ready),
            (
                spec(1),
                status(1, 3, "db-2"),
                Readiness::NotReady(
                    "waiting for rollout to finish: 1 out of 2 pods have been updated".into(),
                ),
            ),
            (
                spec(2),
                status(1, 2, "db-2"),
                Readiness::NotReady(
                    "waiting for rollout to finish: 2 of 3 (readyThreshold 100%) pods are ready"
                        .into(),
                ),
            ),
            // One revision: every pod is on it.
            (spec(0), status(0, 3, "db-1"), Readiness::Ready),
        ];
        for (spec, status, want) in cases {
            assert_eq!(at(&sts(spec, status), None), want);
        }
        let stuck = sts(spec(1), status(1, 3, "db-2"));
        let long_ago = Some(now - TimeDelta::seconds(61));
        assert!(matches!(at(&stuck, long_ago), Readiness::Failed(m) if m.contains("deadline")));
        let unobserved = sts(spec(2), json!({"observedGeneration": 1}));
        assert!(matches!(at(&unobserved, None), Readiness::NotReady(_)));
    }

    #[test]
    fn a_rollback_deletes_the_new_revisions_pods_once_the_partition_holds_them() {
        let spec = |partition: i32| {
            json!({"replicas": 3, "selector": {}, "serviceName": "db", "template": {},
                   "updateStrategy": {"rollingUpdate": {"partition": partition}}})
        };
        let status = |observed: i64, updated: i32, update: &str| {
            json!({"replicas": 3, "observedGeneration": observed, "updatedReplicas": updated,
                   "currentRevision": "db-1", "updateRevision": update})
        };
        assert_eq!(
            to_roll_back(&sts(spec(3), status(2, 1, "db-2"))),
            Some("db-2")
        );
        // Not yet: the controller has not seen the partition, or it is not raised.
        assert_eq!(to_roll_back(&sts(spec(3), status(1, 1, "db-2"))), None);
        assert_eq!(to_roll_back(&sts(spec(2), status(2, 1, "db-2"))), None);
        // Nothing to do: no pod on the new revision, or a single revision.
        assert_eq!(to_roll_back(&sts(spec(3), status(2, 0, "db-2"))), None);
        assert_eq!(to_roll_back(&sts(spec(3), status(2, 3, "db-1"))), None);
    }

    #[test]
    fn the_services_select_by_revision_where_it_matters() {
        let s = sts(
            json!({"replicas": 3, "selector": {}, "serviceName": "db", "template": {}}),
            json!({"currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        let select = |role, analysing| {
            let m = service_selector(&s, "app", "db", role, analysing);
            m.get(REVISION_LABEL).cloned()
        };
        assert_eq!(select(Role::Apex, true), None);
        assert_eq!(select(Role::Primary, true).as_deref(), Some("db-1"));
        assert_eq!(
            select(Role::Primary, false),
            None,
            "every pod while promoting"
        );
        assert_eq!(select(Role::Canary, false).as_deref(), Some("db-2"));
        assert_eq!(
            service_selector(&s, "app", "db", Role::Apex, true)["app"],
            "db"
        );
        let unnamed = sts(
            json!({"selector": {}, "serviceName": "db", "template": {}}),
            json!({}),
        );
        assert_eq!(
            service_selector(&unnamed, "app", "db", Role::Canary, true)[REVISION_LABEL],
            "",
            "no pod until the controller names the revision"
        );
    }

    #[test]
    fn on_delete_and_a_single_replica_are_refused_with_the_field() {
        let bad = sts(
            json!({"replicas": 1, "selector": {}, "serviceName": "db", "template": {},
                   "updateStrategy": {"type": "OnDelete"}}),
            json!({}),
        );
        let fields: Vec<&str> = problems(&bad).iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["spec.updateStrategy.type", "spec.replicas"]);
        assert!(problems(&bad)[0].1.contains("RollingUpdate"));
        let good = sts(
            json!({"replicas": 3, "selector": {}, "serviceName": "db", "template": {}}),
            json!({}),
        );
        assert!(problems(&good).is_empty());
    }
}
