//! The primary runs what was promoted, nothing else. After each promotion serin records on the
//! primary the pod template as stored (API defaults included) and its hash; a template that
//! no longer matches was edited by someone else, and is put back (reported by the caller).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use serin_core::hash::spec_hash;

use super::Scope;
use crate::controller::caches::trim;
use crate::controller::error::{Error, Reason};
use crate::controller::reconcile::target::Primary;

/// Hash of the promoted pod template, on the primary object.
pub const TEMPLATE_HASH: &str = "serin.flagger.app/promoted-template-hash";
/// The promoted pod template itself, compressed (`template_copy`), to put it back.
pub const TEMPLATE: &str = "serin.flagger.app/promoted-template";

/// Hash of a stored pod template.
pub fn template_hash(template: &Value) -> String {
    spec_hash(template, &Default::default())
}

/// Hash of a primary's running template, as `template_hash` hashes the recorded one.
pub fn running_hash(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<String> {
    serde_json::to_value(template)
        .ok()
        .map(|t| template_hash(&t))
}

/// `Some(recorded template)` when the primary's template differs from the one recorded at
/// promotion. `None` when it matches or nothing is recorded (a primary from before).
pub fn drifted(primary: &Primary) -> Option<Value> {
    let (meta, template) = match primary {
        Primary::Deployment(d) => (&d.metadata, d.spec.as_ref().map(|s| &s.template)),
        Primary::DaemonSet(d) => (&d.metadata, d.spec.as_ref().map(|s| &s.template)),
        // A revision is immutable: nothing to drift. A StatefulSet is its own primary: its
        // template is the user's to change.
        Primary::KnativeRevision(_) | Primary::StatefulSet(_) => return None,
    };
    let annotations = meta.annotations.as_ref()?;
    let recorded = annotations.get(TEMPLATE_HASH)?;
    // A primary cached without its template carries the template's hash instead; one
    // trimmed without that hash is never taken for drift (its empty template would be).
    let current = match annotations.get(trim::TEMPLATE_HASH) {
        Some(hash) => hash.clone(),
        None if annotations.contains_key(trim::TRIMMED) => return None,
        None => running_hash(template?)?,
    };
    if current == *recorded {
        return None;
    }
    super::template_copy::decode(annotations.get(TEMPLATE)?)
}

impl Scope<'_> {
    /// Records the template of a freshly written primary.
    pub(super) async fn record_template<K>(&self, written: &K) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + serde::Serialize
            + DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let object = serde_json::to_value(written).map_err(Error::serialize)?;
        let template = &object["spec"]["template"];
        // Too large to keep even compressed: no copy (and none of an earlier promotion, which
        // would be put back), so a hand edit of this primary is not undone; said once.
        let copy = match super::template_copy::encode(template) {
            Ok(copy) => Value::String(copy),
            Err(size) => {
                let message = format!(
                    "the pod template of {} is too large to keep a copy of on it ({} KiB \
                     compressed, at most {} KiB): a hand edit of it will not be put back",
                    written.name_any(),
                    size / 1024,
                    super::template_copy::MAX_ENCODED / 1024
                );
                let events = &self.ctx.events;
                events
                    .publish(self.canary, serin_core::EventType::Warning, &message)
                    .await;
                Value::Null
            }
        };
        let patch = json!({"metadata": {"annotations": {
            TEMPLATE_HASH: template_hash(template),
            TEMPLATE: copy,
        }}});
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        api.patch(
            &written.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| Error::kube("record the promoted template", e))?;
        Ok(())
    }

    /// Puts the recorded template back on the primary (a replace, so fields someone added go
    /// too). Returns the primary's name for the report.
    pub async fn restore_primary_template(
        &self,
        primary: &Primary,
        template: Value,
    ) -> Result<String, Error> {
        let patch = json_patch::Patch(vec![json_patch::PatchOperation::Replace(
            json_patch::ReplaceOperation {
                path: json_patch::jsonptr::PointerBuf::parse("/spec/template").map_err(|e| {
                    Error::Blocked {
                        reason: Reason::Internal,
                        message: e.to_string(),
                    }
                })?,
                value: template,
            },
        )]);
        let params = PatchParams::default();
        let name = match primary {
            Primary::Deployment(d) => {
                let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), self.namespace);
                let w = api
                    .patch(&d.name_any(), &params, &Patch::Json::<()>(patch))
                    .await
                    .map_err(|e| Error::kube("restore the primary's template", e))?;
                self.ctx.expect_generation(&w);
                format!("Deployment/{}/{}", self.namespace, d.name_any())
            }
            Primary::DaemonSet(d) => {
                let api: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), self.namespace);
                let w = api
                    .patch(&d.name_any(), &params, &Patch::Json::<()>(patch))
                    .await
                    .map_err(|e| Error::kube("restore the primary's template", e))?;
                self.ctx.expect_generation(&w);
                format!("DaemonSet/{}/{}", self.namespace, d.name_any())
            }
            // `drifted` never reports one.
            Primary::KnativeRevision(r) => return Ok(r.name_any()),
            Primary::StatefulSet(s) => return Ok(s.name_any()),
        };
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn primary(image: &str, recorded_image: &str) -> Primary {
        let template = |image: &str| {
            json!({"metadata": {"labels": {"app": "x-primary"}},
                   "spec": {"containers": [{"name": "app", "image": image}]}})
        };
        let recorded = template(recorded_image);
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "x-primary", "annotations": {
                TEMPLATE_HASH: template_hash(&recorded), TEMPLATE: recorded.to_string()}},
            "spec": {"selector": {"matchLabels": {"app": "x-primary"}}, "template": template(image)}
        }))
        .unwrap();
        Primary::Deployment(Arc::new(d))
    }

    #[test]
    fn an_edited_template_is_found_with_what_to_put_back() {
        assert_eq!(drifted(&primary("app:1", "app:1")), None);
        let back = drifted(&primary("app:hotfix", "app:1")).unwrap();
        assert_eq!(back["spec"]["containers"][0]["image"], "app:1");
    }

    /// The cache keeps a primary without its template, with the template's hash: the same
    /// answers as from the whole primary.
    #[test]
    fn a_primary_cached_without_its_template_is_judged_by_its_hash() {
        let index = crate::controller::caches::index::Index::default();
        let cached = |image: &str, recorded: &str| {
            let Primary::Deployment(d) = primary(image, recorded) else {
                unreachable!()
            };
            let mut d = Arc::unwrap_or_clone(d);
            d.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    kind: "Canary".into(),
                    name: "x".into(),
                    ..Default::default()
                },
            ]);
            trim::shape(&index, &mut d);
            assert!(trim::is_trimmed(&d));
            assert_eq!(d.spec.as_ref().unwrap().template, Default::default());
            Primary::Deployment(Arc::new(d))
        };
        assert_eq!(drifted(&cached("app:1", "app:1")), None);
        let back = drifted(&cached("app:hotfix", "app:1")).unwrap();
        assert_eq!(back["spec"]["containers"][0]["image"], "app:1");
        // Trimmed without a hash (someone else's copy of the marker): never drift.
        let Primary::Deployment(d) = cached("app:hotfix", "app:1") else {
            unreachable!()
        };
        let mut d = Arc::unwrap_or_clone(d);
        d.annotations_mut().remove(trim::TEMPLATE_HASH);
        assert_eq!(drifted(&Primary::Deployment(Arc::new(d))), None);
    }
}
