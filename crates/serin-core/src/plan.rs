//! The release plan: a Canary spec reduced to what the engine needs, with Flagger's defaults
//! already applied and every invariant the engine relies on checked once, here.

use chrono::TimeDelta;
use serde::Serialize;

/// How traffic moves from the primary to the new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Strategy {
    /// Progressive weights: `stepWeight` or `stepWeights`, up to `maxWeight`.
    Canary { stepping: Stepping, mirror: bool },
    /// Requests matching `analysis.match` go to the canary for `iterations` checks.
    AbTesting { iterations: u32 },
    /// The canary gets test traffic (or a mirror) for `iterations` checks, then all traffic.
    BlueGreen { iterations: u32, mirror: bool },
}

impl Strategy {
    /// The label Flagger uses for this strategy in metrics and alerts.
    pub fn label(&self) -> &'static str {
        match self {
            Strategy::Canary { .. } => "canary",
            Strategy::AbTesting { .. } => "ab-testing",
            Strategy::BlueGreen { .. } => "blue-green",
        }
    }
}

/// Canary weight stepping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stepping {
    /// `stepWeight` up to `maxWeight` (a true cap, see [`crate::weights`]).
    Linear { step: u32, max_weight: u32 },
    /// `stepWeights`: strictly increasing weights in 1..=100; the last one is the max weight.
    List { weights: Vec<u32> },
}

/// How routing works for this canary's provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Routing {
    /// A mesh or ingress splits traffic by weight (and header/cookie match for A/B).
    Weighted,
    /// The `kubernetes` provider: the apex Service always selects the primary; the canary is
    /// reachable only through `<apex>-canary`. Blue/green only; no weights to shift.
    ServiceSelector,
}

/// Which webhook gates the canary declares. The engine asks the controller to run a gate only
/// when the canary has at least one webhook of that type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    pub confirm_rollout: bool,
    pub pre_rollout: bool,
    pub confirm_traffic_increase: bool,
    pub confirm_promotion: bool,
    pub rollback: bool,
    pub post_rollout: bool,
}

/// Everything the engine needs to drive one Canary's releases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// `<name>.<namespace>` of the Canary, as Flagger writes it in events and alerts.
    pub canary: String,
    /// `<target>.<namespace>`.
    pub target: String,
    /// Kind of the target (Deployment, DaemonSet, StatefulSet, Service), for messages.
    pub target_kind: String,
    pub strategy: Strategy,
    pub routing: Routing,
    #[serde(with = "seconds")]
    pub interval: TimeDelta,
    /// Failed checks that trigger a rollback (>= 1).
    pub threshold: u32,
    /// `stepWeightPromotion`; 0 switches all traffic back to the primary at once.
    pub step_weight_promotion: u32,
    #[serde(with = "seconds")]
    pub progress_deadline: TimeDelta,
    pub skip_analysis: bool,
    pub suspend: bool,
    pub hooks: Hooks,
    /// Whether the analysis has anything to check (metrics or rollout webhooks).
    pub has_checks: bool,
    /// `analysis.rollbackWindow`: a target set back to one of this many revisions promoted
    /// before the current one is promoted again without analysis. 0: never.
    pub rollback_window: u32,
}

/// Why a plan cannot be built. The API layer validates specs first, so these name the
/// invariant rather than the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("stepWeight must be in 1..=100, got {0}")]
    StepWeight(u32),
    #[error("maxWeight must be in 1..=100, got {0}")]
    MaxWeight(u32),
    #[error("stepWeights must be strictly increasing values in 1..=100, got {0:?}")]
    StepWeights(Vec<u32>),
    #[error("iterations must be at least 1")]
    Iterations,
    #[error("the kubernetes provider supports only blue/green (iterations without match)")]
    SelectorNeedsBlueGreen,
    #[error("analysis interval must be positive")]
    Interval,
    #[error("stepWeightPromotion must be in 0..=100, got {0}")]
    StepWeightPromotion(u32),
}

impl Plan {
    /// Whether the target is released in place (a StatefulSet, by its partition): its
    /// current revision is the primary, so the engine's messages name it, not a copy.
    pub fn in_place(&self) -> bool {
        self.target_kind == "StatefulSet"
    }

    /// Checks the invariants [`crate::decide`] relies on.
    pub fn check(&self) -> Result<(), PlanError> {
        match &self.strategy {
            Strategy::Canary { stepping, .. } => match stepping {
                Stepping::Linear { step, max_weight } => {
                    if !(1..=100).contains(step) {
                        return Err(PlanError::StepWeight(*step));
                    }
                    if !(1..=100).contains(max_weight) {
                        return Err(PlanError::MaxWeight(*max_weight));
                    }
                }
                Stepping::List { weights } => {
                    let increasing = weights.windows(2).all(|w| w[0] < w[1]);
                    let in_range = weights.iter().all(|w| (1..=100).contains(w));
                    if weights.is_empty() || !increasing || !in_range {
                        return Err(PlanError::StepWeights(weights.clone()));
                    }
                }
            },
            Strategy::AbTesting { iterations } | Strategy::BlueGreen { iterations, .. } => {
                if *iterations == 0 {
                    return Err(PlanError::Iterations);
                }
            }
        }
        if self.routing == Routing::ServiceSelector
            && !matches!(self.strategy, Strategy::BlueGreen { .. })
        {
            return Err(PlanError::SelectorNeedsBlueGreen);
        }
        if self.interval <= TimeDelta::zero() {
            return Err(PlanError::Interval);
        }
        if self.step_weight_promotion > 100 {
            return Err(PlanError::StepWeightPromotion(self.step_weight_promotion));
        }
        Ok(())
    }

    /// The highest canary weight of the canary strategy (100 for the others).
    pub fn max_weight(&self) -> u32 {
        match &self.strategy {
            Strategy::Canary { stepping, .. } => crate::weights::max_weight(stepping),
            _ => 100,
        }
    }

    /// A plan for tests and examples: canary strategy, weighted routing, 1 minute interval.
    pub fn example(stepping: Stepping) -> Plan {
        Plan {
            canary: "podinfo.test".into(),
            target: "podinfo.test".into(),
            target_kind: "Deployment".into(),
            strategy: Strategy::Canary {
                stepping,
                mirror: false,
            },
            routing: Routing::Weighted,
            interval: TimeDelta::minutes(1),
            threshold: 5,
            step_weight_promotion: 0,
            progress_deadline: TimeDelta::seconds(600),
            skip_analysis: false,
            suspend: false,
            hooks: Hooks::default(),
            has_checks: true,
            rollback_window: 0,
        }
    }
}

/// Serialises a `TimeDelta` as whole seconds (the plan is printed by `serin plan -o json`).
mod seconds {
    use chrono::TimeDelta;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &TimeDelta, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.num_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_rejects_what_the_engine_cannot_run() {
        let bad = [
            Stepping::Linear {
                step: 0,
                max_weight: 50,
            },
            Stepping::Linear {
                step: 10,
                max_weight: 0,
            },
            Stepping::Linear {
                step: 10,
                max_weight: 101,
            },
            Stepping::List { weights: vec![] },
            Stepping::List {
                weights: vec![10, 10],
            },
            Stepping::List {
                weights: vec![10, 200],
            },
        ];
        for stepping in bad {
            assert!(
                Plan::example(stepping.clone()).check().is_err(),
                "{stepping:?}"
            );
        }
        let mut plan = Plan::example(Stepping::Linear {
            step: 10,
            max_weight: 50,
        });
        assert_eq!(plan.check(), Ok(()));
        plan.routing = Routing::ServiceSelector;
        assert_eq!(plan.check(), Err(PlanError::SelectorNeedsBlueGreen));
        plan.strategy = Strategy::BlueGreen {
            iterations: 0,
            mirror: false,
        };
        assert_eq!(plan.check(), Err(PlanError::Iterations));
    }
}
