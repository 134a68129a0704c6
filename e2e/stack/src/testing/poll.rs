//! The one way the stack's tests wait: look, and if what they wait for is not there yet, look
//! again a moment later, until a deadline. Every poll of `e2e/stack/tests` and of
//! `e2e/stack/src/testing` sleeps here and nowhere else: `.ci/run` fails on any other sleep
//! there unless its line says why it is not a wait (`// not a wait: ...`). A test that must
//! show that something does *not* happen waits for a barrier instead: a later thing that can
//! only come after the moment it would have happened.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// A poll of a condition: what is awaited (the failure names it), how long it may take, how
/// often to look.
#[derive(Debug, Clone)]
pub struct Poll {
    what: String,
    timeout: Duration,
    every: Duration,
}

/// What one look found: `Some`, `Ok` or `true` ends the poll with its value; `None`, `false`
/// or `Err` (which says what was seen instead, for the failure message) looks again.
pub trait Look<T> {
    fn found(self) -> Result<T, String>;
}

impl Look<()> for bool {
    fn found(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Look<T> for Option<T> {
    fn found(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Look<T> for Result<T, E> {
    fn found(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

impl Poll {
    /// A poll for `what`, of at most `timeout`, looking every 50 ms.
    pub fn new(what: impl Into<String>, timeout: Duration) -> Poll {
        Poll {
            what: what.into(),
            timeout,
            every: Duration::from_millis(50),
        }
    }

    /// Looks every `every` instead: a look that costs more (a run of kubectl, a Prometheus
    /// query) is taken less often.
    pub fn every(mut self, every: Duration) -> Poll {
        self.every = every;
        self
    }

    /// Looks with `look` until it finds what is awaited, and returns it; panics naming what
    /// was awaited (and what the last look saw instead) after the timeout.
    pub async fn until<T, L, F>(&self, mut look: impl FnMut() -> F) -> T
    where
        L: Look<T>,
        F: Future<Output = L>,
    {
        let start = Instant::now();
        loop {
            match look().await.found() {
                Ok(found) => return found,
                Err(seen) if start.elapsed() > self.timeout => self.fail(&seen),
                Err(_) => {}
            }
            tokio::time::sleep(self.every).await; // not a wait: the one poll interval of the stack's tests
        }
    }

    /// The same off the async runtime (a child process, a blocking client).
    pub fn until_blocking<T, L: Look<T>>(&self, look: impl FnMut() -> L) -> T {
        self.try_until_blocking(look)
            .unwrap_or_else(|seen| self.fail(&seen))
    }

    /// As [`until_blocking`](Poll::until_blocking), but when the timeout passes returns what
    /// the last look saw instead of panicking, for a caller that must clean up first (kill a
    /// child process) before it fails.
    pub fn try_until_blocking<T, L: Look<T>>(
        &self,
        mut look: impl FnMut() -> L,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            match look().found() {
                Ok(found) => return Ok(found),
                Err(seen) if start.elapsed() > self.timeout => return Err(seen),
                Err(_) => {}
            }
            std::thread::sleep(self.every); // not a wait: the one poll interval of the stack's tests
        }
    }

    fn fail(&self, seen: &str) -> ! {
        let (what, timeout) = (&self.what, self.timeout);
        if seen.is_empty() {
            panic!("{what}: not within {timeout:?}");
        }
        panic!("{what}: not within {timeout:?}; the last look saw {seen}");
    }
}
