//! The kit's one way to wait: look, and if the condition does not hold yet, look again a
//! moment later until a deadline. Every poll of the tests and of the kit sleeps here, and
//! nowhere else: `.ci/run` fails on any other `sleep(` in `tests/` or this crate unless the
//! line says why it is not a wait (`// not a wait: ...`). A test that needs time to pass
//! waits for a condition, or for a barrier (a later event, a counter) that proves it passed.

use std::future::Future;
use std::time::Duration;
// The runtime's clock: virtual in scenarios that run in virtual time, so that a timeout
// counts the scenario's time, not the machine's.
use tokio::time::Instant;

/// A poll of a condition: how long it may take, how often to look. The caller's loop
/// looks, stops when the condition holds, fails (with its own message) once
/// [`expired`](Poll::expired), and otherwise calls [`next`](Poll::next).
#[derive(Debug, Clone)]
pub struct Poll {
    start: Instant,
    timeout: Duration,
    every: Duration,
}

impl Poll {
    /// A poll of at most `timeout`, looking every 50 ms (in virtual time every 250 ms: there
    /// each look is a request whose cost does not shrink with the scenario's time, and a look
    /// later by a fifth of a virtual second costs no real time).
    pub fn new(timeout: Duration) -> Poll {
        let every = match crate::virtual_time() {
            true => Duration::from_millis(250),
            false => Duration::from_millis(50),
        };
        Poll {
            start: Instant::now(),
            timeout,
            every,
        }
    }

    /// Looks every `every` instead: a look that costs the stack more (a list of every
    /// Canary, a run of the CLI, a Prometheus query) is taken less often.
    pub fn every(mut self, every: Duration) -> Poll {
        self.every = every;
        self
    }

    /// Since the poll began.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether the timeout has passed: the caller's last look was the last.
    pub fn expired(&self) -> bool {
        self.start.elapsed() > self.timeout
    }

    /// Waits until the next look.
    pub async fn next(&self) {
        tokio::time::sleep(self.every).await;
    }

    /// The same off the async runtime (a blocking read of a file).
    pub fn next_blocking(&self) {
        std::thread::sleep(self.every);
    }
}

/// Polls `f` every 50 ms until it is true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let poll = Poll::new(timeout);
    while !f().await {
        assert!(!poll.expired(), "{what}: not within {timeout:?}");
        poll.next().await;
    }
}
