//! The I/O of routing: read the live routing objects, report drift, apply the render.

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use serin_core::Routes;

use super::{MANAGER, Scope};
use crate::controller::error::Error;
use crate::controller::router::{Input, Live, ORIGINAL_CONFIGURATION, ObjectKey, Router};

fn api(scope: &Scope<'_>, key: &ObjectKey) -> Api<DynamicObject> {
    match &key.namespace {
        Some(ns) => Api::namespaced_with(scope.ctx.client.clone(), ns, &key.resource),
        None => Api::all_with(scope.ctx.client.clone(), &key.resource),
    }
}

/// What applying the routes found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The live objects expressed a split serin did not set: what they said.
    pub drift: Option<Routes>,
}

impl Scope<'_> {
    /// Makes the routing objects express `input.routes`. `recorded` is the split the previous
    /// status implies: a live split that is neither it nor the new one was changed by someone
    /// else, and is put back (and reported).
    pub async fn route(
        &self,
        router: &dyn Router,
        input: &Input<'_>,
        recorded: Option<Routes>,
    ) -> Result<Outcome, Error> {
        let keys = router.objects(input);
        if keys.is_empty() {
            return Ok(Outcome::default());
        }
        let mut live = Live::new();
        for key in &keys {
            let found = api(self, key)
                .get_opt(&key.name)
                .await
                .map_err(|e| Error::kube(format!("read {}", key.id()), e))?;
            if let Some(object) = found {
                live.insert(key.id(), object);
            }
        }
        let mut outcome = Outcome::default();
        match router.read(input, &live) {
            Ok(Some(current)) if Some(current) != recorded && current != input.routes => {
                outcome.drift = Some(current);
            }
            Ok(_) => {}
            // Unreadable (e.g. a route not yet accepted): the apply below rewrites it.
            Err(reason) => tracing::debug!(%reason, "live routing not readable"),
        }
        let rendered = router
            .render(input, &live)
            .map_err(|message| Error::Blocked {
                reason: "RoutingInvalid",
                message,
            })?;
        for mut object in rendered {
            let key = keys
                .iter()
                .find(|k| {
                    k.resource.kind == object.types.as_ref().map_or("", |t| t.kind.as_str())
                        && k.name == object.name_any()
                })
                .cloned()
                .ok_or_else(|| Error::Blocked {
                    reason: "RoutingInvalid",
                    message: format!(
                        "router rendered {} which it does not declare in objects()",
                        object.name_any()
                    ),
                })?;
            // The first take-over keeps what was there, for revertOnDeletion.
            if let Some(existing) = live.get(&key.id())
                && !existing.annotations().contains_key(ORIGINAL_CONFIGURATION)
                && !self.controls(&existing.metadata)
            {
                let original = json!({"spec": existing.data.get("spec")}).to_string();
                object
                    .annotations_mut()
                    .insert(ORIGINAL_CONFIGURATION.into(), original);
            }
            if live
                .get(&key.id())
                .is_none_or(|l| self.controls(&l.metadata))
            {
                object.metadata.owner_references = self.owner().map(|o| vec![o]);
            }
            api(self, &key)
                .patch(
                    &key.name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
                .map_err(|e| Error::kube(format!("apply {}", key.id()), e))?;
        }
        Ok(outcome)
    }

    /// revertOnDeletion: taken-over routing objects get their original spec back.
    pub async fn restore_routing(
        &self,
        router: &dyn Router,
        input: &Input<'_>,
    ) -> Result<(), Error> {
        for key in router.objects(input) {
            let api = api(self, &key);
            let Some(live) = api
                .get_opt(&key.name)
                .await
                .map_err(|e| Error::kube(format!("read {}", key.id()), e))?
            else {
                continue;
            };
            let Some(original) = live.annotations().get(ORIGINAL_CONFIGURATION) else {
                continue;
            };
            let Ok(original) = serde_json::from_str::<serde_json::Value>(original) else {
                continue;
            };
            let patch = json!({
                "metadata": {"annotations": {ORIGINAL_CONFIGURATION: null}},
                "spec": original["spec"],
            });
            api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("restore {}", key.id()), e))?;
        }
        Ok(())
    }
}
