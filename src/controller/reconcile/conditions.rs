//! Status conditions. `Promoted` is Flagger's (its reason is the phase; `kubectl wait
//! --for=condition=promoted` depends on it). `Ready` is serin's: `False` with a reason and a
//! message naming the field while the Canary is blocked on bad input, `True` otherwise.

use chrono::{DateTime, Utc};
use serin_core::{ConditionStatus, Phase};

use crate::api::Condition;

pub const PROMOTED: &str = "Promoted";
pub const READY: &str = "Ready";

/// Sets condition `type_`, keeping its transition time when the status is unchanged.
/// Returns whether anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c)
            if c.status == status
                && c.reason == reason
                && c.message.as_deref() == Some(message) =>
        {
            false
        }
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = Some(message.to_string());
            c.last_update_time = Some(now);
            true
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: Some(message.to_string()),
                last_update_time: Some(now),
                last_transition_time: Some(now),
            });
            true
        }
    }
}

/// The `Promoted` condition for a phase.
pub fn promoted(conditions: &mut Vec<Condition>, phase: Phase, kind: &str, now: DateTime<Utc>) {
    let (status, message) = phase.promoted_condition(kind);
    let reason = match phase {
        Phase::New => Phase::Initializing.as_str(),
        p => p.as_str(),
    };
    set(conditions, PROMOTED, status, reason, &message, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let t0 = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::<Utc>::from_timestamp(2_000, 0).unwrap();
        let mut c = Vec::new();
        promoted(&mut c, Phase::Progressing, "Deployment", t0);
        promoted(&mut c, Phase::Promoting, "Deployment", t1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, "Promoting");
        assert_eq!(c[0].last_transition_time, Some(t0), "still Unknown");
        promoted(&mut c, Phase::Succeeded, "Deployment", t1);
        assert_eq!(c[0].status, ConditionStatus::True);
        assert_eq!(c[0].last_transition_time, Some(t1));
        assert!(!set(
            &mut c,
            PROMOTED,
            ConditionStatus::True,
            "Succeeded",
            "Canary analysis completed successfully, promotion finished.",
            t1
        ));
        assert!(set(
            &mut c,
            READY,
            ConditionStatus::False,
            "TargetNotFound",
            "x",
            t1
        ));
        assert_eq!(c.len(), 2);
    }
}
