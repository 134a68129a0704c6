//! The part of `Canary.status` the engine reads and writes. It is the durable state of a
//! release: the controller persists it after every decision, so a restarted process resumes
//! exactly where the last one stopped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Phase;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub phase: Phase,
    pub failed_checks: u32,
    /// Canary weight of the canary strategy, and during a stepped promotion. A/B and
    /// blue/green keep 0 here as Flagger does; their routing follows from `iterations`.
    pub canary_weight: u32,
    pub iterations: u32,
    /// serin extension: traffic is being mirrored to the canary (Flagger reads this back from
    /// the mesh; serin records it so that the declared state survives restarts and drift).
    pub mirrored: bool,
    /// Hash of the target revision the last decision saw.
    pub last_applied_spec: Option<String>,
    /// Hash of the revision the primary runs.
    pub last_promoted_spec: Option<String>,
    /// Last time the release made progress (phase, weight, iterations or failed checks
    /// changed). The progress deadline counts from here.
    pub last_transition_time: Option<DateTime<Utc>>,
    /// serin extension: last time a time-gated step ran (analysis, gate check). The next one is
    /// due one analysis interval later, however often the controller is woken up.
    pub last_step_time: Option<DateTime<Utc>>,
    /// serin extension: what a `Waiting` release waits for, when it is not an approval.
    pub waiting_for: Option<WaitingFor>,
    /// serin extension: the revisions promoted before the current one, newest last, as many
    /// as the plan's rollback window keeps.
    pub promoted_before: Vec<String>,
}

/// Why a release that should start has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WaitingFor {
    /// A release slot: as many releases as the controller allows at once are progressing
    /// (`--max-progressing`, `--max-progressing-per-namespace`); queued in the order the
    /// releases began to wait.
    Concurrency,
}

impl WaitingFor {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingFor::Concurrency => "concurrency",
        }
    }

    pub fn parse(s: &str) -> Option<WaitingFor> {
        (s == "concurrency").then_some(WaitingFor::Concurrency)
    }
}
