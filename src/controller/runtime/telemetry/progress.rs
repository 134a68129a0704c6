//! Whether the controller still makes progress, for `/healthz`. Every reconcile is cancelled
//! at its deadline, so reconciles in flight while none has finished for longer than that
//! mean the controller is wedged (a blocking call on its runtime, a deadlock): the liveness
//! probe fails and the kubelet restarts it. An idle controller (nothing in flight) is healthy
//! however long it waits: that is what `interval` asks of it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `started` of the last reconcile that finished (or began, when
    /// nothing was in flight before it).
    last: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }
}

/// A reconcile in flight; finished when dropped (completed, failed or cancelled alike).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Progress);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last.store(self.0.now_ms(), Ordering::Relaxed);
    }
}

impl Progress {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A reconcile begins.
    pub fn begin(&self) -> InFlight<'_> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            // Waiting starts now, not at the end of an idle stretch.
            self.last.store(self.now_ms(), Ordering::Relaxed);
        }
        InFlight(self)
    }

    /// How long reconciles have been in flight with none finishing, when longer than
    /// `limit`.
    pub fn stalled(&self, limit: Duration) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last.load(Ordering::Relaxed));
        let since = Duration::from_millis(since);
        (since > limit).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reconciles_in_flight_with_none_finishing_are_a_stall() {
        let progress = Progress::default();
        assert_eq!(progress.stalled(Duration::ZERO), None, "idle is healthy");
        let first = progress.begin();
        std::thread::sleep(Duration::from_millis(20)); // not a wait: time must pass
        assert!(progress.stalled(Duration::from_millis(5)).is_some());
        assert!(progress.stalled(Duration::from_secs(60)).is_none());
        let second = progress.begin();
        drop(first);
        assert!(
            progress.stalled(Duration::from_millis(5)).is_none(),
            "a finish is progress"
        );
        drop(second);
        assert_eq!(progress.stalled(Duration::ZERO), None);
    }
}
