//! Release groups: Canaries released together. Members with a release underway advance step
//! by step as one (no member takes a step while another is more than one behind), promote
//! only once every member's analysis has passed at its last step, and roll back together when
//! any member's release fails.
//!
//! The controller observes the other members ([`GroupObservation`]); this module says how far
//! a member is ([`position`]), and the engine holds, promotes or rolls back from that.

use serde::{Deserialize, Serialize};

use crate::plan::{Routing, Strategy};
use crate::{Phase, Plan, Status, weights};

/// How far a member's release is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "at", content = "steps")]
pub enum Position {
    /// Analysing, this many steps taken.
    Step(u32),
    /// The analysis passed at the last step: waiting for promotion (for the group, or for
    /// a confirm-promotion gate).
    Ready,
    /// Promoting, or promoted in this release.
    Promoting,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Step(n) => write!(f, "step {n}"),
            Position::Ready => f.write_str("ready to promote"),
            Position::Promoting => f.write_str("promoting"),
        }
    }
}

/// Where a member with `status` stands in a release run by `plan`. Members with different
/// plans compare by steps taken: a canary strategy counts its weights (and the mirrored step),
/// A/B testing and blue/green their iterations.
pub fn position(plan: &Plan, status: &Status) -> Position {
    match status.phase {
        Phase::Promoting | Phase::Finalising | Phase::Succeeded => return Position::Promoting,
        Phase::WaitingPromotion => return Position::Ready,
        Phase::Progressing => {}
        _ => return Position::Step(0),
    }
    let steps = match &plan.strategy {
        Strategy::Canary { stepping, mirror } => {
            let weights = weights::sequence(stepping);
            let taken = weights
                .iter()
                .filter(|w| **w <= status.canary_weight)
                .count();
            let mirrored = *mirror && (status.mirrored || status.canary_weight > 0);
            u32::try_from(taken).unwrap_or(u32::MAX) + u32::from(mirrored)
        }
        Strategy::AbTesting { .. } => status.iterations,
        Strategy::BlueGreen { iterations, .. } => {
            // Weighted blue/green routes all traffic to the new version for one more step.
            if plan.routing == Routing::Weighted && status.iterations > *iterations {
                return Position::Ready;
            }
            status.iterations
        }
    };
    Position::Step(steps)
}

/// The other members of this Canary's release group, as the controller saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupObservation {
    /// The group's name (`serin.flagger.app/release-group`).
    pub name: String,
    /// A member whose release failed after this member's began: the whole group rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The other members with a release underway (or promoted in this one), by name.
    #[serde(default)]
    pub members: Vec<(String, Position)>,
}

impl GroupObservation {
    /// The first member that is behind a member at `mine` about to take its next step: one
    /// more than a step behind (a member may lead by one step, not more).
    pub fn behind(&self, mine: Position) -> Option<&(String, Position)> {
        let Position::Step(taken) = mine else {
            return None;
        };
        self.members
            .iter()
            .find(|(_, p)| matches!(p, Position::Step(n) if *n < taken))
    }

    /// The first member whose analysis has not passed its last step yet.
    pub fn not_ready(&self) -> Option<&(String, Position)> {
        self.members
            .iter()
            .find(|(_, p)| matches!(p, Position::Step(_)))
    }

    /// Whether a member promotes already: the group decided to promote.
    pub fn promoting(&self) -> bool {
        self.members.iter().any(|(_, p)| *p == Position::Promoting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Stepping;

    fn plan(strategy: Strategy) -> Plan {
        Plan {
            strategy,
            ..Plan::example(Stepping::Linear {
                step: 20,
                max_weight: 50,
            })
        }
    }

    fn status(phase: Phase, weight: u32, iterations: u32, mirrored: bool) -> Status {
        Status {
            phase,
            canary_weight: weight,
            iterations,
            mirrored,
            ..Status::default()
        }
    }

    #[test]
    fn positions() {
        let linear = Strategy::Canary {
            stepping: Stepping::Linear {
                step: 20,
                max_weight: 50,
            },
            mirror: false,
        };
        let mirrored = Strategy::Canary {
            stepping: Stepping::Linear {
                step: 50,
                max_weight: 100,
            },
            mirror: true,
        };
        let ab = Strategy::AbTesting { iterations: 3 };
        let table = [
            (
                &linear,
                status(Phase::Progressing, 0, 0, false),
                Position::Step(0),
            ),
            (
                &linear,
                status(Phase::Progressing, 20, 0, false),
                Position::Step(1),
            ),
            (
                &linear,
                status(Phase::Progressing, 50, 0, false),
                Position::Step(3),
            ),
            (
                &linear,
                status(Phase::WaitingPromotion, 50, 0, false),
                Position::Ready,
            ),
            (
                &linear,
                status(Phase::Promoting, 50, 0, false),
                Position::Promoting,
            ),
            (
                &linear,
                status(Phase::Finalising, 0, 0, false),
                Position::Promoting,
            ),
            (
                &linear,
                status(Phase::Waiting, 0, 0, false),
                Position::Step(0),
            ),
            (
                &mirrored,
                status(Phase::Progressing, 0, 0, true),
                Position::Step(1),
            ),
            (
                &mirrored,
                status(Phase::Progressing, 50, 0, false),
                Position::Step(2),
            ),
            (
                &ab,
                status(Phase::Progressing, 0, 2, false),
                Position::Step(2),
            ),
        ];
        for (strategy, status, want) in table {
            assert_eq!(
                position(&plan(strategy.clone()), &status),
                want,
                "{strategy:?} {status:?}"
            );
        }
    }

    #[test]
    fn a_member_leads_by_one_step_at_most() {
        let group = GroupObservation {
            name: "shop".into(),
            failed: None,
            members: vec![
                ("cart".into(), Position::Step(2)),
                ("api".into(), Position::Ready),
            ],
        };
        assert_eq!(group.behind(Position::Step(2)), None);
        assert_eq!(
            group.behind(Position::Step(3)).map(|(n, _)| n.as_str()),
            Some("cart")
        );
        assert_eq!(group.behind(Position::Ready), None);
        assert_eq!(group.not_ready().map(|(n, _)| n.as_str()), Some("cart"));
        assert!(!group.promoting());
    }
}
