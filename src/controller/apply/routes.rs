//! The I/O of routing: read the live routing objects, report drift, apply the render.

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use serin_core::Routes;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{MANAGER, Scope};
use crate::api::Canary;
use crate::controller::context::Context;
use crate::controller::error::{Error, Reason};
use crate::controller::router::{Input, Live, ORIGINAL_CONFIGURATION, ObjectKey, Router};

fn api(scope: &Routing<'_>, key: &ObjectKey) -> Api<DynamicObject> {
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

/// What routing works with: the Canary and the client. Routing reads neither the target nor
/// the primary, so it also runs when the target is gone.
pub struct Routing<'a> {
    pub ctx: &'a Context,
    pub canary: &'a Canary,
}

impl Scope<'_> {
    pub(crate) fn routing(&self) -> Routing<'_> {
        Routing {
            ctx: self.ctx,
            canary: self.canary,
        }
    }
}

impl Routing<'_> {
    /// The Canary as the controlling owner of what serin creates for it. `blockOwnerDeletion`,
    /// as Flagger sets it: a foreground deletion of the Canary waits for these objects.
    pub(crate) fn owner(&self) -> Option<OwnerReference> {
        use kube::Resource;
        let mut owner = self.canary.controller_owner_ref(&())?;
        owner.block_owner_deletion = Some(true);
        Some(owner)
    }

    /// Whether the Canary controls the object (it created it).
    pub(crate) fn controls(&self, meta: &ObjectMeta) -> bool {
        let uid = self.canary.uid();
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
    }

    /// The split the live routing objects express (`None` when they do not exist or cannot
    /// be read as a split).
    pub async fn live_routes(
        &self,
        router: &dyn Router,
        input: &Input<'_>,
    ) -> Result<Option<Routes>, Error> {
        let live = self.read_live(&router.objects(input), false).await?;
        if live.is_empty() {
            return Ok(None);
        }
        Ok(router.read(input, &live).ok().flatten())
    }

    /// The live routing objects: from the routing cache where it has seen serin's last apply,
    /// else (and always when `fresh`) with a GET.
    async fn read_live(&self, keys: &[ObjectKey], fresh: bool) -> Result<Live, Error> {
        let mut live = Live::new();
        for key in keys {
            let cached = (!fresh).then(|| self.ctx.routing.cached(key)).flatten();
            let found = match cached {
                Some(object) => Some(object),
                None => {
                    tracing::debug!(object = key.id(), "routing object read with a GET");
                    api(self, key)
                        .get_opt(&key.name)
                        .await
                        .map_err(|e| Error::kube(format!("read {}", key.id()), e))?
                }
            };
            if let Some(object) = found {
                live.insert(key.id(), object);
            }
        }
        Ok(live)
    }

    /// Makes the routing objects express `input.routes`. `recorded` is the split the previous
    /// status implies: a live split that is neither it nor the new one was changed by someone
    /// else, and is put back (and reported).
    pub async fn route(
        &self,
        router: &dyn Router,
        input: &Input<'_>,
        recorded: Option<Routes>,
    ) -> Result<Outcome, Error> {
        // Each object is applied at the resourceVersion it was read at, so an edit landing
        // between the read and the apply is not overwritten unseen: the apply answers 409
        // and the next attempt reads (and reports) it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            // After a conflict the cache may lag behind the edit: read the objects afresh.
            match self.route_once(router, input, recorded, attempt > 1).await {
                Err(Error::Kube { source, .. }) if is_conflict(&source) && attempt < 3 => {
                    tracing::debug!("routing object changed while being applied; again");
                }
                other => return other,
            }
        }
    }

    // Long on purpose: read live, render, apply each object and record its generation is one
    // sequence whose order matters (a conflict retries the whole pass).
    async fn route_once(
        &self,
        router: &dyn Router,
        input: &Input<'_>,
        recorded: Option<Routes>,
        fresh: bool,
    ) -> Result<Outcome, Error> {
        let keys = router.objects(input);
        if keys.is_empty() {
            return Ok(Outcome::default());
        }
        let live = self.read_live(&keys, fresh).await?;
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
                reason: Reason::RoutingInvalid,
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
                    reason: Reason::RoutingInvalid,
                    message: format!(
                        "router rendered {} which it does not declare in objects()",
                        object.name_any()
                    ),
                })?;
            // The first take-over keeps what was there, for revertOnDeletion; later applies
            // carry it on (server-side apply removes what its manager stops sending).
            let kept = live
                .get(&key.id())
                .and_then(|l| l.annotations().get(ORIGINAL_CONFIGURATION).cloned());
            if let Some(kept) = kept {
                object
                    .annotations_mut()
                    .insert(ORIGINAL_CONFIGURATION.into(), kept);
            } else if let Some(existing) = live.get(&key.id())
                && !self.controls(&existing.metadata)
            {
                let original = json!({
                    "path": router.restorable(),
                    "value": existing.data.pointer(router.restorable()),
                })
                .to_string();
                object
                    .annotations_mut()
                    .insert(ORIGINAL_CONFIGURATION.into(), original);
            }
            // Owner references cannot point across scopes: a cluster-scoped object (Kuma's
            // TrafficRoute) is not garbage collected with the Canary.
            let ours = live
                .get(&key.id())
                .is_none_or(|l| self.controls(&l.metadata));
            if key.namespace.is_some() && ours {
                object.metadata.owner_references = self.owner().map(|o| vec![o]);
            }
            let current = live.get(&key.id());
            if current.is_some_and(|l| self.ctx.routing.unchanged(&key, &object, l)) {
                continue;
            }
            tracing::debug!(object = key.id(), "routing object applied");
            let render = object.clone();
            object.metadata.resource_version =
                current.and_then(|l| l.metadata.resource_version.clone());
            let answer = api(self, &key)
                .patch(
                    &key.name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
                .map_err(|e| Error::kube(format!("apply {}", key.id()), e))?;
            self.ctx.routing.applied(&key, &render, &answer);
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
            // Older annotations (and Flagger's) hold the whole object: `{"spec": ...}`.
            let (path, value) = match original["path"].as_str() {
                Some(path) => (path, original["value"].clone()),
                None => ("/spec", original["spec"].clone()),
            };
            let mut patch = json!({"metadata": {"annotations": {ORIGINAL_CONFIGURATION: null}}});
            nest(&mut patch, path, value);
            api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("restore {}", key.id()), e))?;
        }
        Ok(())
    }
}

/// Sets `value` at the JSON pointer `path` inside `patch`, creating objects on the way.
fn nest(patch: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut at = patch;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let Some(map) = at.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return;
        }
        at = map.entry((*part).to_string()).or_insert_with(|| json!({}));
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_patch_nests_the_kept_part() {
        let mut patch = json!({"metadata": {"annotations": {"a": null}}});
        nest(&mut patch, "/spec/traffic", json!([{"percent": 100}]));
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {"a": null}}, "spec": {"traffic": [{"percent": 100}]}})
        );
        let mut whole = json!({});
        nest(&mut whole, "/spec", json!({"hosts": ["x"]}));
        assert_eq!(whole, json!({"spec": {"hosts": ["x"]}}));
    }
}
