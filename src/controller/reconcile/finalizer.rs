//! The finalizer that lets serin hand the application back when a Canary is deleted.

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use serin_core::EventType;

use crate::api::Canary;
use crate::controller::apply::orphan::Keep;
use crate::controller::context::Context;
use crate::controller::error::Error;

use super::FINALIZER;

pub(super) async fn add_finalizer(canary: &Canary, ctx: &Context) -> Result<(), Error> {
    let mut finalizers = canary.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(canary, ctx, finalizers).await
}

pub(super) async fn remove_finalizer(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    // Its probes still running in the background are about a Canary that is going.
    if let Some(uid) = canary.metadata.uid.as_deref() {
        ctx.background.forget(uid);
        ctx.written.forget(uid);
    }
    let finalizers: Vec<String> = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(canary, ctx, finalizers).await?;
    if let Some(uid) = canary.uid() {
        ctx.written.forget(&uid);
    }
    ctx.telemetry.forget(
        &canary.namespace().unwrap_or_default(),
        &canary.spec.target_ref.name,
    );
    Ok(Action::await_change())
}

/// A Canary deleted when serin cannot run the hand-back (its spec cannot even be routed
/// by; `why` says so, completing "Canary deleted"). The garbage collector would take the
/// primary and the apex Service with the Canary; what serves is kept, unowned, and the user
/// is told to clean up; then serin lets go, so the deletion is not blocked forever.
pub(super) async fn let_go_keeping_primary(
    canary: &Canary,
    ctx: &Context,
    namespace: &str,
    why: &str,
) -> Result<Action, Error> {
    let spec = &canary.spec;
    let initialized = canary
        .status
        .as_ref()
        .is_some_and(|s| s.last_promoted_spec.is_some());
    // A Knative target's primary revision belongs to its Knative Service, not to the Canary.
    let kept = initialized && !spec.is_knative_target();
    if kept && let Some(keep) = Keep::new(ctx.client.clone(), canary, namespace) {
        keep.workload_and_services(spec.target_ref.kind).await?;
    }
    let target = &spec.target_ref.name;
    let message = if kept {
        format!(
            "Canary deleted {why}: kept {target}-primary.{namespace} and its Services serving, \
             no longer owned by the Canary; delete them once {target}.{namespace} serves"
        )
    } else {
        format!("Canary deleted {why}; removing the finalizer")
    };
    ctx.events
        .publish(canary, EventType::Warning, &message)
        .await;
    remove_finalizer(canary, ctx).await
}

/// Merge patch guarded by the resourceVersion, so a concurrent change is never overwritten.
pub(super) async fn patch_finalizers(
    canary: &Canary,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<Canary> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": canary.resource_version(),
    }});
    api.patch(
        &canary.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::kube("update Canary finalizers", e))?;
    Ok(())
}
