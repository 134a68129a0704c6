//! Canary phases, named exactly as Flagger names them (`status.phase`), and the `Promoted`
//! condition each phase implies. Dashboards, alerts and `kubectl wait` depend on these strings.

use serde::{Deserialize, Serialize};

/// `status.phase` of a Canary. The empty string Flagger writes before initialisation
/// deserialises as [`Phase::Initializing`]'s predecessor, [`Phase::New`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Phase {
    /// No status yet (Flagger's `""`).
    #[default]
    #[serde(rename = "")]
    New,
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl Phase {
    pub const ALL: [Phase; 12] = [
        Phase::New,
        Phase::Initializing,
        Phase::Initialized,
        Phase::Waiting,
        Phase::Progressing,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Terminating,
        Phase::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::New => "",
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
            Phase::Terminated => "Terminated",
        }
    }

    /// Phases in which a release is running: the analysis, the gates or the promotion.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Phase::Progressing
                | Phase::Waiting
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
        )
    }

    /// Phases before the primary exists and serves traffic.
    pub fn is_initial(self) -> bool {
        matches!(self, Phase::New | Phase::Initializing)
    }

    /// The `Promoted` condition for this phase: (status, message). `kind` is the target kind.
    pub fn promoted_condition(self, kind: &str) -> (ConditionStatus, String) {
        use ConditionStatus::*;
        match self {
            Phase::New | Phase::Initializing => (
                Unknown,
                format!("New {kind} detected, starting initialization."),
            ),
            Phase::Initialized => (True, format!("{kind} initialization completed.")),
            Phase::Waiting | Phase::WaitingPromotion => (Unknown, "Waiting for approval.".into()),
            Phase::Progressing => (
                Unknown,
                "New revision detected, progressing canary analysis.".into(),
            ),
            Phase::Promoting => (
                Unknown,
                "Canary analysis completed, starting primary rolling update.".into(),
            ),
            Phase::Finalising => (
                Unknown,
                "Canary analysis completed, routing all traffic to primary.".into(),
            ),
            Phase::Succeeded => (
                True,
                "Canary analysis completed successfully, promotion finished.".into(),
            ),
            Phase::Failed => (
                False,
                format!("Canary analysis failed, {kind} scaled to zero."),
            ),
            Phase::Terminating => (Unknown, "Canary is being deleted, reverting.".into()),
            Phase::Terminated => (Unknown, "Canary deleted, target reverted.".into()),
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes condition status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_round_trip_through_json_as_flagger_spells_them() {
        for phase in Phase::ALL {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
            let back: Phase = serde_json::from_str(&json).unwrap();
            assert_eq!(back, phase);
        }
    }

    #[test]
    fn promoted_condition_matches_flagger_messages() {
        let (s, m) = Phase::Failed.promoted_condition("Deployment");
        assert_eq!(s, ConditionStatus::False);
        assert_eq!(m, "Canary analysis failed, Deployment scaled to zero.");
        let (s, _) = Phase::Succeeded.promoted_condition("Deployment");
        assert_eq!(s, ConditionStatus::True);
    }
}
