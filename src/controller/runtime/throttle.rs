//! `--kubeconfig-qps` / `--kubeconfig-burst`: a rate limit in front of the Kubernetes client,
//! as client-go has (governor's GCRA: a token bucket of `burst` refilled at `qps`). kube-rs
//! has none, and a controller that hammers the API server during an incident makes the
//! incident worse. A request waits for a token; watches take one when they start, not per event.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

/// `qps` requests per second (at least one per 1000 s) with bursts of `burst` (at least 1).
fn quota(qps: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / qps.max(0.001));
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    // `with_period` refuses only a zero period, which 1/qps (qps <= 1e15 in practice) is not.
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

#[derive(Clone, Debug)]
pub struct ThrottleLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl ThrottleLayer {
    pub fn new(qps: f64, burst: u32) -> ThrottleLayer {
        ThrottleLayer {
            limiter: Arc::new(RateLimiter::direct(quota(qps, burst))),
        }
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        Throttle {
            inner,
            limiter: self.limiter.clone(),
            wait: None,
            holding: false,
        }
    }
}

pub struct Throttle<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A token was taken for the next call.
    holding: bool,
}

impl<S, R> Service<R> for Throttle<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.holding {
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            match self.limiter.check() {
                Ok(()) => self.holding = true,
                Err(not_until) => {
                    let delay = not_until.wait_time_from(DefaultClock::default().now());
                    self.wait = Some(Box::pin(tokio::time::sleep(delay)));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.holding = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_then_rate() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(10.0, 3), clock.clone());
        for _ in 0..3 {
            assert!(limiter.check().is_ok());
        }
        let wait = limiter.check().unwrap_err().wait_time_from(clock.now());
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        clock.advance(Duration::from_millis(100));
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_err());
        // Idle time refills up to the burst, not beyond.
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(limiter.check().is_ok());
        }
        assert!(limiter.check().is_err());
    }

    #[test]
    fn nonsense_flags_still_make_a_limiter() {
        for (qps, burst) in [(0.0, 0), (-5.0, 1), (1e9, 1_000_000)] {
            let limiter =
                RateLimiter::direct_with_clock(quota(qps, burst), FakeRelativeClock::default());
            assert!(limiter.check().is_ok(), "{qps} {burst}");
        }
    }
}
