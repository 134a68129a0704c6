//! From a Canary spec to the engine's [`Plan`]: Flagger's defaults applied, the provider
//! resolved, the spec validated first so the engine only ever sees a plan it can run.

use std::time::Duration;

use chrono::TimeDelta;
use serin_core::{Hooks, Plan, Routing, Stepping, Strategy};

use crate::api::HookType;
use crate::api::validate::{self, Problem};
use crate::api::{Canary, DeploymentStrategy, Provider};

/// Iterations Flagger forces on a `kubernetes`-provider canary that sets none.
const KUBERNETES_DEFAULT_ITERATIONS: u32 = 10;

/// Builds the release plan of `canary`. `default_provider` applies when `spec.provider` is
/// unset; `min_interval` is the controller's minimum analysis interval.
///
/// # Errors
/// Every validation problem of the spec, each naming its field.
// Long on purpose: one field of the engine's Plan per paragraph, each with Flagger's default.
pub fn from_canary(
    canary: &Canary,
    default_provider: Provider,
    min_interval: Duration,
) -> Result<Plan, Vec<Problem>> {
    let problems = validate::canary(canary, default_provider);
    if !problems.is_empty() {
        return Err(problems);
    }
    let spec = &canary.spec;
    let name = canary.metadata.name.as_deref().unwrap_or("<unnamed>");
    let namespace = canary.metadata.namespace.as_deref().unwrap_or("default");
    let provider = spec.provider_or(default_provider);
    let analysis = spec.analysis().cloned().unwrap_or_default();
    let interval = analysis
        .interval(min_interval)
        .map_err(|e| vec![Problem::new("spec.analysis.interval", e.to_string())])?;

    // A StatefulSet released in place splits by pods: its weights pick how many run the new
    // revision, with the `kubernetes` provider too (its apex Service selects every pod).
    let in_place = spec.target_ref.kind == crate::api::TargetKind::StatefulSet;
    let routing = if provider == Provider::Kubernetes && !in_place {
        Routing::ServiceSelector
    } else {
        Routing::Weighted
    };
    let strategy = match (routing, spec.strategy()) {
        // The kubernetes provider only does blue/green: match is ignored and iterations
        // default to 10, as in Flagger.
        (Routing::ServiceSelector, _) => Strategy::BlueGreen {
            iterations: match analysis.iterations() {
                0 => KUBERNETES_DEFAULT_ITERATIONS,
                n => n,
            },
            mirror: false,
        },
        (_, DeploymentStrategy::AbTesting) => Strategy::AbTesting {
            iterations: analysis.iterations(),
        },
        (_, DeploymentStrategy::BlueGreen) => Strategy::BlueGreen {
            iterations: analysis.iterations(),
            mirror: analysis.mirror(),
        },
        (_, DeploymentStrategy::Canary) => {
            let stepping = if analysis.step_weights().is_empty() {
                Stepping::Linear {
                    // skipAnalysis canaries may set no step at all; they never step.
                    step: analysis.step_weight().max(1),
                    max_weight: analysis.max_weight().max(1),
                }
            } else {
                Stepping::List {
                    weights: analysis
                        .step_weights()
                        .iter()
                        .map(|w| (*w).clamp(1, 100).unsigned_abs())
                        .collect(),
                }
            };
            Strategy::Canary {
                stepping,
                mirror: analysis.mirror(),
            }
        }
    };

    let has = |t: HookType| analysis.webhooks().iter().any(|w| w.hook_type() == t);
    let hooks = Hooks {
        confirm_rollout: has(HookType::ConfirmRollout),
        pre_rollout: has(HookType::PreRollout),
        confirm_traffic_increase: has(HookType::ConfirmTrafficIncrease),
        confirm_promotion: has(HookType::ConfirmPromotion),
        rollback: has(HookType::Rollback),
        post_rollout: has(HookType::PostRollout),
    };
    let plan = Plan {
        canary: format!("{name}.{namespace}"),
        target: format!("{}.{namespace}", spec.target_ref.name),
        target_kind: spec.target_ref.kind.as_str().to_string(),
        strategy,
        routing,
        interval: to_delta(interval),
        threshold: analysis.threshold(),
        step_weight_promotion: analysis.step_weight_promotion().min(100),
        progress_deadline: TimeDelta::seconds(i64::from(spec.progress_deadline_seconds())),
        skip_analysis: spec.skip_analysis(),
        suspend: spec.is_suspended(),
        hooks,
        has_checks: !analysis.metrics().is_empty()
            || has(HookType::Rollout)
            || has(HookType::Unset),
        rollback_window: analysis.rollback_window(),
    };
    plan.check()
        .map_err(|e| vec![Problem::new("spec.analysis", e.to_string())])?;
    Ok(plan)
}

fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The plan a deletion runs by when the spec no longer validates (edited, then deleted): the
/// hand-back needs the target, the routing and the progress deadline, not the analysis, so
/// the analysis is set aside. A spec whose routing is invalid too still fails.
///
/// # Errors
/// The problems of the spec without its analysis.
pub fn for_deletion(
    canary: &Canary,
    default_provider: Provider,
    min_interval: Duration,
) -> Result<Plan, Vec<Problem>> {
    let mut routing_only = canary.clone();
    routing_only.spec.analysis = Some(crate::api::canary::CanaryAnalysis::default());
    routing_only.spec.canary_analysis = None;
    routing_only.spec.skip_analysis = Some(true);
    from_canary(&routing_only, default_provider, min_interval)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn canary(analysis: serde_json::Value, service: serde_json::Value) -> Canary {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "progressDeadlineSeconds": 6,
                "service": service,
                "analysis": analysis,
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_deletion_plan_sets_an_invalid_analysis_aside() {
        let broken = canary(
            serde_json::json!({"interval": "soon", "iterations": 3, "stepWeight": 10}),
            serde_json::json!({"port": 9898}),
        );
        assert!(from_canary(&broken, Provider::Kubernetes, Duration::ZERO).is_err());
        let plan = for_deletion(&broken, Provider::Kubernetes, Duration::ZERO).unwrap();
        assert_eq!(plan.target, "podinfo.test");
        assert_eq!(plan.progress_deadline, TimeDelta::seconds(6));
        assert_eq!(plan.routing, Routing::ServiceSelector);
    }

    #[test]
    fn a_deletion_plan_still_needs_valid_routing() {
        let no_port = canary(
            serde_json::json!({"iterations": 3}),
            serde_json::json!({"port": 0}),
        );
        let problems = for_deletion(&no_port, Provider::Kubernetes, Duration::ZERO).unwrap_err();
        assert!(
            problems.iter().any(|p| p.path == "spec.service.port"),
            "{problems:?}"
        );
    }
}
