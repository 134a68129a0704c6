//! Probes that outlive a reconcile. A webhook or a metric query may take minutes (a hung
//! receiver, a provider's rate limit); run inside the reconcile, it would hold one of the
//! controller's reconcile slots, which every Canary shares, for all that time. A probe
//! therefore runs as its own task: the reconcile waits for it briefly and, when it takes
//! longer, leaves it running and looks again soon. The answer is kept for the state it was
//! asked in; a Canary that moved on (another phase, step or revision) asks afresh.

use std::collections::HashMap;
use std::sync::Mutex;

use serin_core::{Analysis, Gate, Probe};
use tokio::task::JoinHandle;

use crate::api::canary::MetricObservation;

/// What a probe found.
#[derive(Debug)]
pub enum Answer {
    Gate(Gate),
    /// A rollback hook asked for a rollback.
    Rollback(bool),
    Analysis(Analysis, Option<Vec<MetricObservation>>),
}

/// The probes running past their reconcile, by Canary and probe.
#[derive(Debug, Default)]
pub struct Background {
    running: Mutex<HashMap<(String, Probe), Running>>,
}

#[derive(Debug)]
struct Running {
    /// The state the probe was asked in ([`asked_in`]).
    asked: String,
    task: JoinHandle<Answer>,
}

/// What became of a probe left running.
#[derive(Debug)]
pub enum Left {
    /// None is running for this state (none was left, or it was for another state).
    Nothing,
    /// Still running.
    Running,
    /// Finished: its task, to be awaited for the answer (at once).
    Finished(JoinHandle<Answer>),
}

impl Background {
    /// The probe `probe` of Canary `uid` left running for the state `asked`, if any. One left
    /// for another state is cancelled: its answer would be about something else.
    pub fn take(&self, uid: &str, probe: Probe, asked: &str) -> Left {
        let Ok(mut running) = self.running.lock() else {
            return Left::Nothing;
        };
        let key = (uid.to_string(), probe);
        match running.get(&key) {
            None => Left::Nothing,
            Some(r) if r.asked != asked => {
                if let Some(stale) = running.remove(&key) {
                    stale.task.abort();
                }
                Left::Nothing
            }
            Some(r) if !r.task.is_finished() => Left::Running,
            Some(_) => running
                .remove(&key)
                .map_or(Left::Nothing, |r| Left::Finished(r.task)),
        }
    }

    /// Leaves `task` running for the next reconcile of this state.
    pub fn leave(&self, uid: &str, probe: Probe, asked: String, task: JoinHandle<Answer>) {
        if let Ok(mut running) = self.running.lock()
            && let Some(old) = running.insert((uid.to_string(), probe), Running { asked, task })
        {
            old.task.abort();
        }
    }

    /// Cancels every probe of a Canary (it is gone).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut running) = self.running.lock() {
            running.retain(|(owner, _), r| {
                let keep = owner != uid;
                if !keep {
                    r.task.abort();
                }
                keep
            });
        }
    }

    /// Probes running now.
    pub fn len(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state a probe is asked in: the phase, the step and the revision. The same probe
/// asked again in the same state is the same question.
pub fn asked_in(status: &serin_core::Status, checksum: &str) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        status.phase, status.iterations, status.canary_weight, status.failed_checks, checksum
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate_task(answer: Gate, pending: bool) -> JoinHandle<Answer> {
        tokio::spawn(async move {
            if pending {
                std::future::pending::<()>().await;
            }
            Answer::Gate(answer)
        })
    }

    #[tokio::test]
    async fn a_probe_left_running_is_found_by_the_same_state_only() {
        let background = Background::default();
        let probe = Probe::ConfirmPromotion;
        background.leave("u1", probe, "a".into(), gate_task(Gate::Open, true));
        assert!(matches!(background.take("u1", probe, "a"), Left::Running));
        assert!(matches!(background.take("u2", probe, "a"), Left::Nothing));
        // Another state: the old probe is cancelled and forgotten.
        assert!(matches!(background.take("u1", probe, "b"), Left::Nothing));
        assert!(background.is_empty());
    }

    #[tokio::test]
    async fn a_finished_probe_is_handed_over_once() {
        let background = Background::default();
        let probe = Probe::Rollback;
        let task = gate_task(Gate::Open, false);
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
        background.leave("u1", probe, "a".into(), task);
        let Left::Finished(task) = background.take("u1", probe, "a") else {
            panic!("not finished");
        };
        assert!(matches!(task.await.unwrap(), Answer::Gate(Gate::Open)));
        assert!(matches!(background.take("u1", probe, "a"), Left::Nothing));
    }

    #[tokio::test]
    async fn forgetting_a_canary_cancels_its_probes() {
        let background = Background::default();
        background.leave(
            "u1",
            Probe::Analysis,
            "a".into(),
            gate_task(Gate::Open, true),
        );
        background.leave(
            "u2",
            Probe::Analysis,
            "a".into(),
            gate_task(Gate::Open, true),
        );
        background.forget("u1");
        assert_eq!(background.len(), 1);
    }
}
