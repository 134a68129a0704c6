//! Knative Service targets (`serving.knative.dev/v1`). Knative keeps every version of a Service
//! as a Revision, so there is no primary copy to write: the primary is the revision named by
//! the `flagger.app/primary-revision` annotation on the Knative Service, the canary is the
//! revision Knative created last (`status.latestCreatedRevisionName`), and a promotion only
//! moves the annotation. Readiness of either is the Revision's `Ready` condition.
//!
//! Knative Services are read with a GET per reconcile instead of a watch: their CRD is often
//! not installed, and a watch on a kind the API server does not serve fails forever. A new
//! revision is therefore noticed at the next requeue (at most the analysis interval), as in
//! Flagger, which reads them the same way.

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use crate::controller::router::ObjectKey;
use serin_core::Readiness;

/// Annotation on the Knative Service naming the revision that serves as primary.
pub const PRIMARY_REVISION: &str = "flagger.app/primary-revision";

/// The Knative Service resource.
pub fn service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.knative.dev", "v1", "Service"),
        "services",
    )
}

/// The Knative Revision resource.
pub fn revision_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.knative.dev", "v1", "Revision"),
        "revisions",
    )
}

/// The key of a Knative Service, for the routing cache (it is also a routing object).
pub fn service_key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        resource: service_resource(),
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
    }
}

/// The key of a Knative Revision, for the routing cache.
pub fn revision_key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        resource: revision_resource(),
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
    }
}

/// The revision Knative created last: the version being released.
pub fn latest_created(service: &DynamicObject) -> Option<&str> {
    service
        .data
        .pointer("/status/latestCreatedRevisionName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The revision in production, as recorded by the last initialization or promotion.
pub fn primary_revision(service: &DynamicObject) -> Option<&str> {
    service
        .annotations()
        .get(PRIMARY_REVISION)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Readiness of a revision from its `Ready` condition. Knative reports a revision that cannot
/// start as `Ready=False`; one still deploying as `Unknown`. Neither has a deadline of its own
/// that serin can read, so the Canary's progress deadline counts from `since` (its last
/// transition), as for DaemonSets.
pub fn revision_readiness(
    revision: Option<&DynamicObject>,
    name: &str,
    progress_deadline: TimeDelta,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Readiness {
    let Some(revision) = revision else {
        return Readiness::NotReady(format!("waiting for Knative to create revision {name}"));
    };
    let ready = revision
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let status = ready
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown");
    if status == "True" {
        return Readiness::Ready;
    }
    let why = ready
        .and_then(|c| c["message"].as_str().or(c["reason"].as_str()))
        .unwrap_or("no Ready condition yet");
    let reason = format!("revision {name} is not ready: {why}");
    match since {
        Some(since) if since + progress_deadline < now => Readiness::Failed(format!(
            "{reason} (progress deadline of {}s exceeded)",
            progress_deadline.num_seconds()
        )),
        _ => Readiness::NotReady(reason),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn revision(conditions: Value) -> DynamicObject {
        DynamicObject::new("podinfo-00002", &revision_resource())
            .data(json!({"status": {"conditions": conditions}}))
    }

    #[test]
    fn readiness_follows_the_ready_condition_and_the_deadline() {
        let now = Utc::now();
        let deadline = TimeDelta::seconds(60);
        let recent = Some(now - TimeDelta::seconds(10));
        let old = Some(now - TimeDelta::seconds(120));
        let ready = revision(json!([{"type": "Ready", "status": "True"}]));
        let deploying =
            revision(json!([{"type": "Ready", "status": "Unknown", "reason": "Deploying"}]));
        let failing = revision(json!([{"type": "Ready", "status": "False",
            "reason": "ContainerMissing", "message": "image not found"}]));
        let table = [
            (Some(&ready), old, "Ready"),
            (
                Some(&deploying),
                recent,
                "NotReady: revision podinfo-00002 is not ready: Deploying",
            ),
            (
                Some(&deploying),
                old,
                "Failed: revision podinfo-00002 is not ready: Deploying",
            ),
            (
                Some(&failing),
                recent,
                "NotReady: revision podinfo-00002 is not ready: image not found",
            ),
            (
                None,
                old,
                "NotReady: waiting for Knative to create revision podinfo-00002",
            ),
            (
                Some(&revision(json!([]))),
                None,
                "NotReady: revision podinfo-00002 is not ready: no Ready",
            ),
        ];
        for (rev, since, expected) in table {
            let got = match revision_readiness(rev, "podinfo-00002", deadline, since, now) {
                Readiness::Ready => "Ready".to_string(),
                Readiness::NotReady(m) => format!("NotReady: {m}"),
                Readiness::Failed(m) => format!("Failed: {m}"),
                Readiness::Missing => "Missing".to_string(),
            };
            assert!(got.starts_with(expected), "{expected} <- {got}");
        }
    }

    #[test]
    fn revisions_are_read_from_status_and_annotation() {
        let mut service = DynamicObject::new("podinfo", &service_resource())
            .data(json!({"status": {"latestCreatedRevisionName": "podinfo-00003"}}));
        assert_eq!(latest_created(&service), Some("podinfo-00003"));
        assert_eq!(primary_revision(&service), None);
        service
            .annotations_mut()
            .insert(PRIMARY_REVISION.into(), "podinfo-00002".into());
        assert_eq!(primary_revision(&service), Some("podinfo-00002"));
    }
}
