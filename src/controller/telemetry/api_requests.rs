//! `serin_api_requests_total{method}`: a tower layer in front of the Kubernetes client that
//! counts every request it sends (watches once, when they start).

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::Telemetry;

#[derive(Clone, Debug)]
pub struct CountLayer {
    telemetry: Arc<Telemetry>,
}

impl CountLayer {
    pub fn new(telemetry: Arc<Telemetry>) -> CountLayer {
        CountLayer { telemetry }
    }
}

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Count<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S, B> Service<hyper::Request<B>> for Count<S>
where
    S: Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<B>) -> Self::Future {
        self.telemetry.api_request(request.method().as_str());
        self.inner.call(request)
    }
}
