//! `serin_api_requests_total{method,resource}`: a tower layer in front of the Kubernetes
//! client that counts every request it sends (watches once, when they start), by method and
//! by the resource it is about (`virtualservices`, `leases`, `canaries`: the kinds serin's
//! code asks for, so a bounded set).

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
        let resource = resource_of(request.uri().path());
        self.telemetry
            .api_request(request.method().as_str(), resource);
        self.inner.call(request)
    }
}

/// The resource a Kubernetes API path is about: its plural (`/apis/G/V/namespaces/N/R/...`,
/// `/api/v1/R/...`), `namespaces` for a namespace itself, `other` for anything else
/// (`/version`, discovery).
fn resource_of(path: &str) -> &str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    match rest {
        ["namespaces", _, resource, ..] => resource,
        [resource, ..] => resource,
        [] => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::resource_of;

    #[test]
    fn requests_are_named_by_their_resource() {
        let cases = [
            (
                "/apis/networking.istio.io/v1/namespaces/test/virtualservices/podinfo",
                "virtualservices",
            ),
            (
                "/apis/flagger.app/v1beta1/namespaces/test/canaries/podinfo/status",
                "canaries",
            ),
            (
                "/apis/coordination.k8s.io/v1/namespaces/serin/leases/serin",
                "leases",
            ),
            ("/api/v1/namespaces/test/events", "events"),
            ("/api/v1/namespaces/test", "namespaces"),
            ("/api/v1/secrets", "secrets"),
            (
                "/apis/kuma.io/v1alpha1/trafficroutes/podinfo",
                "trafficroutes",
            ),
            ("/version", "other"),
            ("/apis", "other"),
        ];
        for (path, resource) in cases {
            assert_eq!(resource_of(path), resource, "{path}");
        }
    }
}
