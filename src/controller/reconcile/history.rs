//! `status.history`: the Canary's last releases, kept from one step to the next. A release
//! begins when the phase leaves a resting phase (Initialized, Succeeded, Failed) for an active
//! one, and ends when it comes back to Succeeded or Failed; a newer revision arriving mid-release
//! supersedes it and begins the next.

use chrono::{DateTime, Utc};
use serin_core::{Effect, EventType, Phase, Status};

use crate::api::canary::ReleaseRecord;

/// Releases kept, oldest dropped first.
pub const KEPT: usize = 10;
/// A failure's message is cut to this many bytes.
const MESSAGE_BYTES: usize = 512;

const PROGRESSING: &str = "Progressing";
const SUPERSEDED: &str = "Superseded";

fn active(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Waiting
            | Phase::Progressing
            | Phase::WaitingPromotion
            | Phase::Promoting
            | Phase::Finalising
    )
}

/// Updates `history` for a step from `before` to `after`, taken `now`; `effects` are the
/// step's (a failure's reason is its first Warning event).
pub fn record(
    history: &mut Vec<ReleaseRecord>,
    before: Phase,
    after: &Status,
    effects: &[Effect],
    now: DateTime<Utc>,
) {
    let revision = after.last_applied_spec.clone().unwrap_or_default();
    let open = history
        .last_mut()
        .filter(|r| r.outcome == PROGRESSING && r.ended.is_none());
    match open {
        Some(last) if active(after.phase) && last.revision != revision => {
            last.outcome = SUPERSEDED.into();
            last.ended = Some(now);
            begin(history, revision, now);
        }
        Some(last) if matches!(after.phase, Phase::Succeeded | Phase::Failed) => {
            last.outcome = after.phase.as_str().into();
            last.ended = Some(now);
            last.message = (after.phase == Phase::Failed)
                .then(|| first_warning(effects))
                .flatten();
        }
        None if active(after.phase) && !active(before) => begin(history, revision, now),
        _ => {}
    }
    let excess = history.len().saturating_sub(KEPT);
    history.drain(..excess);
}

fn begin(history: &mut Vec<ReleaseRecord>, revision: String, now: DateTime<Utc>) {
    history.push(ReleaseRecord {
        revision,
        outcome: PROGRESSING.into(),
        started: now,
        ended: None,
        message: None,
    });
}

fn first_warning(effects: &[Effect]) -> Option<String> {
    effects.iter().find_map(|e| match e {
        Effect::Event {
            kind: EventType::Warning,
            message,
        } => Some(cut(message)),
        _ => None,
    })
}

/// At most [`MESSAGE_BYTES`], cut at a character boundary.
fn cut(message: &str) -> String {
    let mut end = message.len().min(MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn status(phase: Phase, revision: &str) -> Status {
        Status {
            phase,
            last_applied_spec: Some(revision.into()),
            ..Status::default()
        }
    }

    fn warning(message: &str) -> Effect {
        Effect::Event {
            kind: EventType::Warning,
            message: message.into(),
        }
    }

    /// `(before, after phase, revision, effects)` steps at seconds 0, 1, 2, ...
    type Steps<'a> = Vec<(Phase, Phase, &'a str, Vec<Effect>)>;
    /// A case: its name, its steps, the `(revision, outcome)`s it leaves.
    type Case<'a> = (&'a str, Steps<'a>, Vec<(&'a str, &'a str)>);

    fn run(steps: &[(Phase, Phase, &str, Vec<Effect>)]) -> Vec<ReleaseRecord> {
        let mut history = Vec::new();
        for (i, (before, after, revision, effects)) in steps.iter().enumerate() {
            let now = at(i64::try_from(i).unwrap());
            record(
                &mut history,
                *before,
                &status(*after, revision),
                effects,
                now,
            );
        }
        history
    }

    fn outcomes(history: &[ReleaseRecord]) -> Vec<(&str, &str)> {
        history
            .iter()
            .map(|r| (r.revision.as_str(), r.outcome.as_str()))
            .collect()
    }

    #[test]
    fn releases_are_recorded_from_start_to_outcome() {
        use Phase::*;
        let cases: Vec<Case> = vec![
            (
                "initialization is no release",
                vec![(Initializing, Initialized, "a", vec![])],
                vec![],
            ),
            (
                "promoted",
                vec![
                    (Initialized, Progressing, "b", vec![]),
                    (Progressing, Progressing, "b", vec![]),
                    (Progressing, Promoting, "b", vec![]),
                    (Promoting, Finalising, "b", vec![]),
                    (Finalising, Succeeded, "b", vec![]),
                ],
                vec![("b", "Succeeded")],
            ),
            (
                "rolled back, then released again",
                vec![
                    (Succeeded, Progressing, "c", vec![]),
                    (Progressing, Failed, "c", vec![warning("Canary failed!")]),
                    (Failed, Waiting, "d", vec![]),
                    (Waiting, Progressing, "d", vec![]),
                ],
                vec![("c", "Failed"), ("d", "Progressing")],
            ),
            (
                "a newer revision supersedes the running one",
                vec![
                    (Initialized, Progressing, "e", vec![]),
                    (Progressing, Progressing, "f", vec![]),
                    (Progressing, Succeeded, "f", vec![]),
                ],
                vec![("e", "Superseded"), ("f", "Succeeded")],
            ),
        ];
        for (name, steps, expected) in cases {
            assert_eq!(outcomes(&run(&steps)), expected, "{name}");
        }
    }

    #[test]
    fn an_outcome_has_its_times_and_a_failure_its_first_warning() {
        use Phase::*;
        let history = run(&[
            (Initialized, Progressing, "a", vec![]),
            (Progressing, Progressing, "a", vec![]),
            (
                Progressing,
                Failed,
                "a",
                vec![
                    warning("Rolling back: 2 failed checks"),
                    warning("Canary failed!"),
                ],
            ),
        ]);
        let record = &history[0];
        assert_eq!((record.started, record.ended), (at(0), Some(at(2))));
        assert_eq!(
            record.message.as_deref(),
            Some("Rolling back: 2 failed checks")
        );
    }

    #[test]
    fn ten_releases_are_kept_and_messages_are_bounded() {
        use Phase::*;
        let mut history = Vec::new();
        let long = "é".repeat(400);
        for i in 0..15 {
            let revision = format!("r{i}");
            let start = at(2 * i);
            record(
                &mut history,
                Succeeded,
                &status(Progressing, &revision),
                &[],
                start,
            );
            let end = at(2 * i + 1);
            let failed = [warning(&long)];
            record(
                &mut history,
                Progressing,
                &status(Failed, &revision),
                &failed,
                end,
            );
        }
        assert_eq!(history.len(), KEPT);
        assert_eq!(history[0].revision, "r5");
        let message = history[0].message.as_deref().unwrap();
        assert!(message.len() <= MESSAGE_BYTES && message.starts_with('é'));
    }
}
