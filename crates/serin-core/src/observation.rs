//! What the controller observed for one decision: workload readiness, the target revision,
//! and the outcome of the gates and checks the engine asked for.

use serde::{Deserialize, Serialize};

/// Readiness of a workload (the target or the primary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "reason")]
pub enum Readiness {
    /// The object does not exist (yet).
    Missing,
    /// Rolling out or scaling; the reason says what is awaited.
    NotReady(String),
    Ready,
    /// Will not become ready without a change (e.g. ProgressDeadlineExceeded).
    Failed(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// Outcome of a webhook gate (confirm-rollout, pre-rollout, confirm-traffic-increase,
/// confirm-promotion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "detail")]
pub enum Gate {
    Open,
    Closed {
        /// Which webhook said no, and why.
        reason: String,
        /// All failing webhooks set `muteAlert`.
        mute_alert: bool,
    },
}

impl Gate {
    pub fn closed(reason: impl Into<String>) -> Gate {
        Gate::Closed {
            reason: reason.into(),
            mute_alert: false,
        }
    }
}

/// Outcome of one analysis run: rollout webhooks, then metric checks, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "reason")]
pub enum Analysis {
    Pass,
    /// A webhook or metric failed: counts as a failed check.
    Fail(String),
    /// A metric with the `hold` no-data policy had no data: the step waits without counting
    /// a failure, bounded by the progress deadline.
    Hold(String),
}

/// Results of the probes the engine requested (see [`crate::Probe`]). `None` = not run yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    pub confirm_rollout: Option<Gate>,
    /// `Some(true)`: a rollback webhook answered 2xx, asking for a rollback.
    pub rollback: Option<bool>,
    pub pre_rollout: Option<Gate>,
    pub analysis: Option<Analysis>,
    pub confirm_traffic_increase: Option<Gate>,
    pub confirm_promotion: Option<Gate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub target: Readiness,
    pub primary: Readiness,
    /// Hash of the target's current revision ([`crate::hash::spec_hash`]).
    pub revision: String,
    /// The Canary is being deleted and has serin's finalizer (revertOnDeletion).
    pub deleting: bool,
    /// When the deletion was asked for (`metadata.deletionTimestamp`): the progress deadline
    /// of the hand-back counts from here, whatever the earlier decisions wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_requested_at: Option<chrono::DateTime<chrono::Utc>>,
    pub probes: Probes,
    /// A person's command (`serin promote|abort|retry`), consumed by this decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    /// No release slot is free (`--max-progressing`): why, in words for the event. A new
    /// release waits in `Waiting` until one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<String>,
    /// The other members of the Canary's release group (`serin.flagger.app/release-group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::group::GroupObservation>,
}

/// What a person asked for, without editing the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Finish the running release now: skip the remaining steps and gates, keep the
    /// readiness checks.
    Promote,
    /// Roll the running release back now.
    Abort,
    /// Release the failed revision again.
    Retry,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Promote => "promote",
            Command::Abort => "abort",
            Command::Retry => "retry",
        }
    }

    /// Parses the value of the command annotation.
    pub fn parse(s: &str) -> Option<Command> {
        match s.trim() {
            "promote" => Some(Command::Promote),
            "abort" => Some(Command::Abort),
            "retry" => Some(Command::Retry),
            _ => None,
        }
    }

    /// Whether the command does anything in `phase`: promote and abort act on a running
    /// analysis, retry on a failed release.
    pub fn applies_in(self, phase: crate::Phase) -> bool {
        use crate::Phase::*;
        match self {
            Command::Promote | Command::Abort => matches!(phase, Progressing | WaitingPromotion),
            Command::Retry => phase == Failed,
        }
    }
}

impl Observation {
    /// Both workloads ready, the given revision, no probes run yet.
    pub fn ready(revision: impl Into<String>) -> Observation {
        Observation {
            target: Readiness::Ready,
            primary: Readiness::Ready,
            revision: revision.into(),
            deleting: false,
            deletion_requested_at: None,
            probes: Probes::default(),
            command: None,
            queued: None,
            group: None,
        }
    }
}
