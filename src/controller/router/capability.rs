//! What a provider can express beyond weights, and the error when a Canary asks for more.
//!
//! Flagger silently ignores `mirror`, `match` and `sessionAffinity` on providers that cannot
//! do them, so a Canary may claim to mirror or to pin sessions while it does not, and an A/B
//! test without header routing sends *all* traffic to the new version. serin refuses such a
//! Canary instead, naming the field, before any traffic moves.

use super::Input;
use crate::api::Provider;

/// The routing features a provider has besides weighted splits.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// Routes requests by `analysis.match` (A/B testing).
    pub ab_testing: bool,
    /// Mirrors traffic to the canary (`analysis.mirror`).
    pub mirroring: bool,
    /// Pins users to a version with a cookie (`analysis.sessionAffinity`).
    pub session_affinity: bool,
}

/// Weighted splits only.
pub const WEIGHTS_ONLY: Features = Features {
    ab_testing: false,
    mirroring: false,
    session_affinity: false,
};

/// Checks that `provider` can do what the Canary asks.
///
/// # Errors
/// The first field the provider cannot honour, and what to do about it.
pub fn check(provider: Provider, features: Features, input: &Input<'_>) -> Result<(), String> {
    let analysis = input.canary.spec.analysis();
    if !features.mirroring && (input.routes.mirrored || analysis.is_some_and(|a| a.mirror())) {
        return Err(format!(
            "spec.analysis.mirror: provider {provider} cannot mirror traffic; remove mirror \
             (mirroring needs istio or gatewayapi)"
        ));
    }
    let has_match = analysis
        .and_then(|a| a.r#match.as_ref())
        .is_some_and(|m| !m.is_empty());
    if !features.ab_testing && (input.ab_testing || has_match) {
        return Err(format!(
            "spec.analysis.match: provider {provider} cannot route requests by match \
             conditions (A/B testing); remove match, or use a provider that can (istio, \
             gatewayapi, nginx, contour, gloo, appmesh)"
        ));
    }
    if !features.session_affinity && analysis.is_some_and(|a| a.session_affinity.is_some()) {
        return Err(format!(
            "spec.analysis.sessionAffinity: provider {provider} cannot pin sessions with a \
             cookie; remove sessionAffinity (it needs istio or gatewayapi)"
        ));
    }
    Ok(())
}
