//! KEDA ScaledObjects (`autoscalerRef.kind: ScaledObject`), as Flagger handles them: the
//! primary gets a copy of the target's ScaledObject scaling `<target>-primary`, with the
//! trigger queries of `primaryScalerQueries` (by trigger name) and `primaryScalerReplicas`;
//! and while the target is scaled to zero its own ScaledObject is paused at zero replicas
//! (KEDA's `autoscaling.keda.sh/paused-replicas` annotation), so KEDA does not scale it
//! back up behind serin's back.

use serde_json::Value;

use crate::api::canary::AutoscalerRef;

/// KEDA's annotation that holds a scaled workload at a fixed replica count.
pub const PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";

/// The `spec` of the primary's ScaledObject, from the target's.
pub fn primary_spec(
    target_spec: &Value,
    primary_workload: &str,
    reference: &AutoscalerRef,
) -> Value {
    let mut spec = target_spec.clone();
    spec["scaleTargetRef"]["name"] = primary_workload.into();
    if let Some(replicas) = &reference.primary_scaler_replicas {
        if let Some(min) = replicas.min_replicas {
            spec["minReplicaCount"] = min.into();
        }
        if let Some(max) = replicas.max_replicas {
            spec["maxReplicaCount"] = max.into();
        }
    }
    if let Some(queries) = &reference.primary_scaler_queries {
        let triggers = spec.get_mut("triggers").and_then(Value::as_array_mut);
        for trigger in triggers.into_iter().flatten() {
            let name = trigger
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(query) = queries.get(name) {
                trigger["metadata"]["query"] = query.as_str().into();
            }
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_primary_copy_scales_the_primary_with_its_own_queries_and_bounds() {
        let target = json!({
            "scaleTargetRef": {"name": "podinfo"},
            "minReplicaCount": 1, "maxReplicaCount": 10,
            "triggers": [
                {"type": "prometheus", "name": "rps",
                 "metadata": {"serverAddress": "http://prometheus:9090", "query": "sum(rate(x{app=\"podinfo\"}[1m]))"}},
                {"type": "cpu", "metadata": {"value": "60"}}
            ]
        });
        let reference: AutoscalerRef = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "podinfo",
            "primaryScalerQueries": {"rps": "sum(rate(x{app=\"podinfo-primary\"}[1m]))"},
            "primaryScalerReplicas": {"minReplicas": 2}
        }))
        .unwrap();
        let spec = primary_spec(&target, "podinfo-primary", &reference);
        assert_eq!(spec["scaleTargetRef"]["name"], "podinfo-primary");
        assert_eq!(spec["minReplicaCount"], 2);
        assert_eq!(spec["maxReplicaCount"], 10);
        assert_eq!(
            spec["triggers"][0]["metadata"]["query"],
            "sum(rate(x{app=\"podinfo-primary\"}[1m]))"
        );
        assert_eq!(
            spec["triggers"][0]["metadata"]["serverAddress"],
            "http://prometheus:9090"
        );
        assert_eq!(
            spec["triggers"][1], target["triggers"][1],
            "other triggers as they are"
        );
    }
}
