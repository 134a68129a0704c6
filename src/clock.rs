//! Where the controller reads the time of day: every status timestamp, event time, analysis
//! window and interval decision takes its `now` from one [`Clock`].
//!
//! In production that is the system's wall clock. Tests that run the controller inside their
//! own tokio runtime with paused time use [`Clock::Runtime`]: the wall time moves with the
//! runtime's clock, so a release whose steps are an interval apart runs in virtual time, as
//! fast as the machine computes it, and always in the same order.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// The controller's source of the time of day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// The wall time of the tokio runtime's clock: the same as [`Clock::System`] (but for
    /// system clock corrections) in a runtime that runs in real time, virtual time in one
    /// whose time is paused (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`).
    Runtime,
}

impl Clock {
    pub fn now(self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Runtime => DateTime::<Utc>::from(runtime_wall_time()),
        }
    }
}

/// The wall time of the current tokio runtime's clock (outside a runtime, of the monotonic
/// clock): the wall time at the first call, moved on by the monotonic time since. Under paused
/// time tokio's `Instant` is virtual, so this is too, the same in every crate that computes it
/// this way.
pub fn runtime_wall_time() -> SystemTime {
    static ANCHOR: OnceLock<(SystemTime, std::time::Instant)> = OnceLock::new();
    let (wall, at) = *ANCHOR.get_or_init(|| (SystemTime::now(), std::time::Instant::now()));
    let now = tokio::time::Instant::now().into_std();
    match now.checked_duration_since(at) {
        Some(since) => wall + since,
        None => wall - at.checked_duration_since(now).unwrap_or(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_runtime_clock_follows_paused_time_and_the_system_clock_does_not() {
        let (virtual_start, real_start) = (Clock::Runtime.now(), Clock::System.now());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let virtual_hour = Clock::Runtime.now() - virtual_start;
        let real = Clock::System.now() - real_start;
        assert!(
            (3600..3602).contains(&virtual_hour.num_seconds()),
            "{virtual_hour}"
        );
        assert!(real.num_seconds() < 60, "{real}");
    }

    #[tokio::test]
    async fn in_real_time_the_runtime_clock_is_the_wall_clock() {
        let gap = Clock::Runtime.now() - Clock::System.now();
        assert!(gap.num_milliseconds().abs() < 1000, "{gap}");
    }
}
