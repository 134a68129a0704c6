//! The finalizer that lets serin hand the application back when a Canary is deleted.

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::Canary;
use crate::controller::context::Context;
use crate::controller::error::Error;

use super::FINALIZER;

pub(super) async fn add_finalizer(canary: &Canary, ctx: &Context) -> Result<(), Error> {
    let mut finalizers = canary.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(canary, ctx, finalizers).await
}

pub(super) async fn remove_finalizer(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    let finalizers: Vec<String> = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(canary, ctx, finalizers).await?;
    if let (Some(uid), Ok(mut written)) = (canary.uid(), ctx.written.lock()) {
        written.remove(&uid);
    }
    ctx.telemetry.forget(
        &canary.namespace().unwrap_or_default(),
        &canary.spec.target_ref.name,
    );
    Ok(Action::await_change())
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
