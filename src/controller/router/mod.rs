//! Traffic routers: how a provider expresses the engine's [`Routes`] in routing objects.
//!
//! Every router is a pure render of the routing objects for a split; the controller applies
//! what it renders with server-side apply (see `controller::apply`), so providers hold no
//! I/O. The generated `<apex>`, `-primary` and `-canary` Services are common to all
//! providers and live in `controller::apply::services`.

use kube::api::DynamicObject;
use serin_core::Routes;

use crate::api::{Canary, Provider};

mod kubernetes;

/// A provider's routing.
pub trait Router: Send + Sync {
    fn provider(&self) -> Provider;

    /// The routing objects (beyond the generated Services) that make `routes` true. Empty
    /// when Services alone route, as for the `kubernetes` provider.
    ///
    /// # Errors
    /// A message naming the field of the Canary that stops rendering.
    fn render(&self, canary: &Canary, routes: Routes) -> Result<Vec<DynamicObject>, String>;
}

/// The router for `provider`, or why this build cannot route through it.
///
/// # Errors
/// The provider has no router yet: the message says what to use instead.
pub fn for_provider(provider: Provider) -> Result<Box<dyn Router>, String> {
    match provider {
        Provider::Kubernetes => Ok(Box::new(kubernetes::Kubernetes)),
        other => Err(format!(
            "provider {other} is not supported by this serin build yet; supported: kubernetes \
             (set spec.provider or --mesh-provider)"
        )),
    }
}
