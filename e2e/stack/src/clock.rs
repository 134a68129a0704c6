//! The stack's time of day: object timestamps, pod start times, the traffic world's seconds.
//!
//! It follows the tokio runtime's clock, so that a test running in paused (virtual) time
//! sees the stack age with the controller it runs in process (whose `Clock::Runtime` is
//! computed the same way; serin-stack does not link serin, hence the few lines twice). In a
//! runtime running in real time it is the wall clock, but for corrections of the system
//! clock, which a test stack need not follow. Request signatures and token lifetimes that the
//! controller checks against the system clock stay on the system clock.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The wall time at the first call, moved on by the runtime's (monotonic) clock since.
pub fn now() -> SystemTime {
    static ANCHOR: OnceLock<(SystemTime, std::time::Instant)> = OnceLock::new();
    let (wall, at) = *ANCHOR.get_or_init(|| (SystemTime::now(), std::time::Instant::now()));
    let now = tokio::time::Instant::now().into_std();
    match now.checked_duration_since(at) {
        Some(since) => wall + since,
        None => wall - at.checked_duration_since(now).unwrap_or(Duration::ZERO),
    }
}

/// [`now`] as a chrono time.
pub fn utc() -> chrono::DateTime<chrono::Utc> {
    now().into()
}

/// [`now`] as the API's timestamps write it (RFC 3339, seconds).
pub fn timestamp() -> String {
    utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_moves_with_paused_time() {
        let start = now();
        tokio::time::sleep(Duration::from_secs(600)).await;
        let moved = now().duration_since(start).unwrap();
        assert!((600..602).contains(&moved.as_secs()), "{moved:?}");
    }
}
