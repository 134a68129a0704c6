//! What an alert says besides its message: Flagger's fields (cluster, target, failed checks
//! threshold, progress deadline, traffic routing) and what a person paged at night needs
//! next — the phase, the canary's weight, the failed checks so far and the failing metrics
//! with their values against their ranges.

use serin_core::{Phase, Plan, Severity, Status, Stepping, Strategy};

use super::Alert;
use crate::api::Canary;
use crate::api::canary::{MetricObservation, MetricVerdict};

/// The alert of one engine `Alert` effect, from the step's status.
pub fn alert(
    canary: &Canary,
    plan: &Plan,
    status: &Status,
    metrics: Option<&[MetricObservation]>,
    cluster: Option<&str>,
    severity: Severity,
    message: &str,
) -> Alert {
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let mut fields = Vec::new();
    if let Some(cluster) = cluster {
        fields.push(("Cluster".to_string(), cluster.to_string()));
    }
    let target = &canary.spec.target_ref;
    fields.push((
        "Target".into(),
        format!("{}/{}.{namespace}", target.kind.as_str(), target.name),
    ));
    fields.push(("Phase".into(), status.phase.as_str().to_string()));
    fields.push(("Canary weight".into(), format!("{}%", status.canary_weight)));
    // A failed release's count starts again from zero (as Flagger's): its alert names the
    // threshold it reached, in Flagger's field.
    fields.push(match status.phase {
        Phase::Failed => ("Failed checks threshold".into(), plan.threshold.to_string()),
        _ => (
            "Failed checks".into(),
            format!("{} of {}", status.failed_checks, plan.threshold),
        ),
    });
    let failing = failing_metrics(metrics.unwrap_or_default());
    if !failing.is_empty() {
        fields.push(("Failing metrics".into(), failing.join("; ")));
    }
    fields.push((
        "Progress deadline".into(),
        format!("{}s", plan.progress_deadline.num_seconds()),
    ));
    fields.push(("Traffic routing".into(), routing(&plan.strategy)));
    Alert {
        canary: canary.metadata.name.clone().unwrap_or_default(),
        namespace: namespace.clone(),
        workload: format!("{}.{namespace}", target.name),
        severity,
        message: message.to_string(),
        fields,
    }
}

/// Flagger's "Traffic routing" field.
fn routing(strategy: &Strategy) -> String {
    match strategy {
        Strategy::AbTesting { .. } => "A/B Testing".into(),
        Strategy::BlueGreen { .. } => "Blue/Green".into(),
        Strategy::Canary {
            stepping: Stepping::Linear { step, max_weight },
            ..
        } => format!("Weight step: {step} max: {max_weight}"),
        Strategy::Canary {
            stepping: Stepping::List { weights },
            ..
        } => {
            let list: Vec<String> = weights.iter().map(u32::to_string).collect();
            let max = weights.last().copied().unwrap_or_default();
            format!("Weight steps: {} max: {max}", list.join(","))
        }
    }
}

/// The value and range of each metric that did not pass at the last check.
fn failing_metrics(metrics: &[MetricObservation]) -> Vec<String> {
    metrics
        .iter()
        .filter(|m| m.verdict != MetricVerdict::Pass)
        .map(MetricObservation::summary)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use serin_core::Phase;

    use super::*;

    #[test]
    fn fields_name_the_cluster_target_weight_and_failing_metrics() {
        let canary: Canary = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "web", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50}}
        }))
        .unwrap();
        let plan = crate::canary_plan::from_canary(
            &canary,
            crate::api::Provider::Istio,
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let status = Status {
            phase: Phase::Progressing,
            failed_checks: 2,
            canary_weight: 20,
            ..Status::default()
        };
        let metrics = [MetricObservation {
            name: "request-success-rate".into(),
            value: Some(69.1666),
            threshold_min: Some(99.0),
            threshold_max: None,
            baseline: None,
            p_value: None,
            verdict: MetricVerdict::Fail,
            message: None,
            time: None,
            analyses: None,
            samples: None,
        }];
        let alert = alert(
            &canary,
            &plan,
            &status,
            Some(&metrics),
            Some("prod-eu"),
            Severity::Warn,
            "halted",
        );
        let fields: Vec<(&str, &str)> = alert
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("Cluster", "prod-eu"),
                ("Target", "Deployment/podinfo.test"),
                ("Phase", "Progressing"),
                ("Canary weight", "20%"),
                ("Failed checks", "2 of 5"),
                ("Failing metrics", "request-success-rate 69.17 >= 99"),
                ("Progress deadline", "600s"),
                ("Traffic routing", "Weight step: 10 max: 50"),
            ]
        );
        assert_eq!(alert.workload, "podinfo.test");
        assert_eq!(alert.canary, "web");

        // A failed release's counter is back at zero: its alert names the threshold.
        let failed = Status {
            phase: Phase::Failed,
            ..Status::default()
        };
        let failure = super::alert(
            &canary,
            &plan,
            &failed,
            None,
            None,
            Severity::Error,
            "failed",
        );
        assert!(
            failure
                .fields
                .contains(&("Failed checks threshold".into(), "5".into())),
            "{:?}",
            failure.fields
        );
    }
}
