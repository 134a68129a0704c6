//! Traffic routers: how a provider expresses the engine's [`Routes`] in routing objects.
//!
//! A router is pure: [`Router::render`] turns the desired split into the routing objects
//! (given the live ones, for take-over), and [`Router::read`] reads the split the live objects
//! express. The controller does the I/O in one place (`controller::apply::routes`): it reads
//! the objects [`Router::objects`] names, renders, applies the result with server-side apply
//! (field manager `serin`, so fields other managers own stay theirs), and reports drift.
//! The generated `<apex>`, `-primary` and `-canary` Services are common to all providers and
//! live in `controller::apply`.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject};
use serin_core::Routes;

use crate::api::canary::HttpMatchRequest;
use crate::api::{Canary, Provider};

mod apisix;
mod appmesh;
mod capability;
mod contour;
#[cfg(test)]
mod fixture;
mod gateway_api;
mod gloo;
mod ingress;
mod istio;
mod knative;
mod kubernetes;
mod kuma;
mod live;
mod nginx;
mod routing_object;
mod session_affinity;
mod skipper;
mod smi;
mod traefik;

/// Annotation holding a taken-over object's spec as it was before serin first changed it, so
/// `revertOnDeletion` can restore it (Flagger's key).
pub const ORIGINAL_CONFIGURATION: &str = "flagger.kubernetes.io/original-configuration";

/// Controller-wide router options (flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// `--ingress-annotations-prefix` (NGINX), default `nginx.ingress.kubernetes.io`.
    pub nginx_annotations_prefix: String,
    /// `--ingress-class` (Contour HTTPProxy `ingressClassName`).
    pub ingress_class: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nginx_annotations_prefix: "nginx.ingress.kubernetes.io".into(),
            ingress_class: None,
        }
    }
}

/// What a router renders from.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub canary: &'a Canary,
    pub namespace: &'a str,
    /// `<apex>` (spec.service.name or the target's name).
    pub apex: &'a str,
    /// `<apex>-primary`.
    pub primary_service: String,
    /// `<apex>-canary`.
    pub canary_service: String,
    /// The split to express. `mirrored`: a copy of the primary's traffic goes to the canary
    /// (`analysis.mirrorWeight` percent of it, default 100).
    pub routes: Routes,
    /// A/B testing: only requests matching `analysis.match` follow `routes` (all of them go to
    /// the canary when `routes.canary` is 100); every other request goes to the primary.
    pub ab_testing: bool,
    /// Session affinity (`analysis.sessionAffinity`): the cookie (`name=value`) that pins a
    /// user to the canary in this run, and the one pinning to the primary.
    pub canary_cookie: Option<&'a str>,
    pub primary_cookie: Option<&'a str>,
    pub options: &'a Options,
}

impl<'a> Input<'a> {
    /// The `analysis.match` conditions that route an A/B run's requests; `None` outside A/B
    /// testing (a Canary may keep its matches while it runs another strategy).
    pub fn ab_matches(&self) -> Option<&'a [HttpMatchRequest]> {
        let canary: &'a Canary = self.canary;
        canary
            .spec
            .analysis()
            .and_then(|a| a.r#match.as_deref())
            .filter(|_| self.ab_testing)
    }

    /// [`Input::ab_matches`] for a router whose A/B routes are the matches alone: without one
    /// no request would reach the canary.
    pub fn required_ab_matches(&self) -> Result<&'a [HttpMatchRequest], String> {
        self.ab_matches().filter(|m| !m.is_empty()).ok_or_else(|| {
            "spec.analysis.match: A/B testing needs at least one match condition".into()
        })
    }
}

/// Identifies one routing object.
#[derive(Clone, Debug)]
pub struct ObjectKey {
    pub resource: ApiResource,
    /// `None` for cluster-scoped kinds (e.g. Kuma TrafficRoute).
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// `kind/name`, the key of [`Live`].
    pub fn id(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name)
    }
}

/// The live routing objects, by [`ObjectKey::id`]; missing ones are absent.
pub type Live = BTreeMap<String, DynamicObject>;

/// A provider's routing.
pub trait Router: Send + Sync {
    fn provider(&self) -> Provider;

    /// The objects this router renders and reads (owned or taken over), so the controller can
    /// fetch the live ones. Empty when Services alone route, as for `kubernetes`.
    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey>;

    /// The routing objects that make `input.routes` true. For a taken-over object the render
    /// carries only the fields serin manages; `live` gives what is there (e.g. to keep the
    /// original spec in [`ORIGINAL_CONFIGURATION`] on first take-over).
    ///
    /// # Errors
    /// A message naming the field of the Canary (or the live object) that stops rendering.
    fn render(&self, input: &Input<'_>, live: &Live) -> Result<Vec<DynamicObject>, String>;

    /// The split the live objects express; `Ok(None)` when they do not exist yet.
    ///
    /// # Errors
    /// The objects cannot be read as a split (or, for Gateway API, the route is not accepted
    /// by its parents at its current generation): the message says why.
    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String>;

    /// The part of a taken-over object kept in [`ORIGINAL_CONFIGURATION`] and restored by
    /// `revertOnDeletion`, as a JSON pointer. The whole spec by default; a router that takes
    /// over an object others keep changing (Knative's Service: its template is the user's)
    /// narrows it to what it writes.
    fn restorable(&self) -> &'static str {
        "/spec"
    }
}

/// The router for `provider`. Every provider value has its own; none stands in for another.
///
/// # Errors
/// Kept for builds without a router for some provider: the message says what to do.
pub fn for_provider(provider: Provider) -> Result<Box<dyn Router>, String> {
    match provider {
        Provider::GatewayApiV1 => Ok(Box::new(gateway_api::GatewayApi::V1)),
        Provider::GatewayApiV1beta1 => Ok(Box::new(gateway_api::GatewayApi::V1BETA1)),
        Provider::Istio => Ok(Box::new(istio::Istio)),
        Provider::Kubernetes => Ok(Box::new(kubernetes::Kubernetes)),
        Provider::Nginx => Ok(Box::new(nginx::Nginx)),
        Provider::Contour => Ok(Box::new(contour::Contour)),
        Provider::Traefik => Ok(Box::new(traefik::Traefik)),
        Provider::Skipper => Ok(Box::new(skipper::Skipper)),
        Provider::Kuma => Ok(Box::new(kuma::Kuma)),
        Provider::Apisix => Ok(Box::new(apisix::Apisix)),
        Provider::Knative => Ok(Box::new(knative::Knative)),
        Provider::Gloo => Ok(Box::new(gloo::Gloo)),
        Provider::AppMesh => Ok(Box::new(appmesh::AppMesh::v1beta1())),
        Provider::AppMeshV1beta2 => Ok(Box::new(appmesh::AppMesh::v1beta2())),
        Provider::Linkerd
        | Provider::Osm
        | Provider::SmiV1alpha1
        | Provider::SmiV1alpha2
        | Provider::SmiV1alpha3 => smi::Smi::new(provider)
            .map(|r| Box::new(r) as Box<dyn Router>)
            .ok_or_else(|| format!("provider {provider} is not an SMI provider")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every provider value routes through its own router; none falls back to another's.
    #[test]
    fn every_provider_is_its_own_router() {
        for provider in Provider::all() {
            let router = for_provider(provider).unwrap();
            assert_eq!(router.provider(), provider);
        }
    }
}
