//! Scenarios in virtual time: the controller runs in the test's runtime, whose clock the test
//! has paused, and tokio moves the clock to the next timer whenever every task waits. A
//! release of ten 1 s steps then takes what its computing takes, in the same order each run.
//!
//! The test's own requests are instants of that time: while one is in flight the clock is
//! held (a blocking task, which stops tokio from moving it), so a step of the controller
//! cannot slip in between the test seeing a state and acting on it because a socket was not
//! ready at the moment the runtime looked.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

tokio::task_local! {
    static VIRTUAL_TIME: bool;
}

/// Runs `scenario` in virtual time: a [`crate::World`] it starts on the emulator runs the
/// controller in process (see `Controller::in_process`). The test must have paused time
/// (`#[tokio::test(start_paused = true)]`, as `on_every_control_plane!(virtual_time: ...)`
/// does).
pub async fn in_virtual_time<F: Future>(scenario: F) -> F::Output {
    VIRTUAL_TIME.scope(true, scenario).await
}

/// Whether the current scenario runs in virtual time.
pub fn virtual_time() -> bool {
    VIRTUAL_TIME.try_with(|v| *v).unwrap_or(false)
}

/// Holds the runtime's paused clock where it is until dropped.
pub(crate) struct Hold(Option<std::sync::mpsc::Sender<()>>);

/// A hold in a scenario that runs in virtual time: around what the test does that takes real
/// time (a run of the CLI, whose requests the in-process stack answers meanwhile).
pub(crate) fn hold() -> Option<Hold> {
    virtual_time().then(Hold::start)
}

impl Hold {
    fn start() -> Hold {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Returns when the sender is dropped.
        drop(tokio::task::spawn_blocking(move || rx.recv()));
        Hold(Some(tx))
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// A client layer holding the clock during each request, until its response's head arrives
/// (a watch's events come later, as time passes).
#[derive(Clone, Copy, Debug, Default)]
pub struct HoldLayer;

impl<S> tower::Layer<S> for HoldLayer {
    type Service = Held<S>;

    fn layer(&self, inner: S) -> Held<S> {
        Held(inner)
    }
}

/// See [`HoldLayer`].
#[derive(Clone, Debug)]
pub struct Held<S>(S);

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> tower::Service<R> for Held<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Boxed<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let hold = Hold::start();
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(hold);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_paused_time_still_while_real_time_passes() {
        let start = tokio::time::Instant::now();
        let hold = Hold::start();
        let hour = std::time::Duration::from_secs(3600);
        let sleeper = tokio::spawn(tokio::time::sleep(hour)); // not a wait: the timer a hold stops
        // Something that takes real time while every task waits: without the hold, the
        // runtime would jump the hour meanwhile.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50)); // not a wait: real time must pass
            tx.send(())
        });
        rx.await.unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        drop(hold);
        sleeper.await.unwrap();
        assert!(start.elapsed() >= std::time::Duration::from_secs(3600));
    }
}
