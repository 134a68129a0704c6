//! Deployments cached without their pod template: all but the targets of Canaries.
//!
//! serin watches every Deployment of the cluster (a Canary may target any of them), but reads
//! the pod template only of its targets. In a cluster where most Deployments have nothing to
//! do with a release, their templates were most of the cache (about 3 KiB each); a primary's
//! template was a third of what each Canary cost it. The watch drops the template of every
//! Deployment that no Canary targets when its event arrives, and marks the copy; a primary
//! keeps its template's hash for the drift check ([`TEMPLATE_HASH`]). A Canary that starts
//! targeting a Deployment cached that way reads it once from the API ([`Fetched`]) until the
//! watch brings it whole (its next change, now that the index knows the Canary).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{Api, Client, ResourceExt};

use super::index::Index;
use crate::api::TargetKind;
use crate::controller::apply::primary_drift;

/// Marks a cached copy whose pod template was dropped. Only ever in serin's cache: nothing
/// cached is written back.
pub const TRIMMED: &str = "serin.flagger.app/cache-trimmed";

/// Only in serin's cache, on a trimmed primary: the hash of the pod template it ran when its
/// event arrived, which is all the drift check reads of it.
pub const TEMPLATE_HASH: &str = "serin.flagger.app/cache-template-hash";

/// The Deployment as the cache keeps it: whole when a Canary targets it, else trimmed. A
/// primary (owned by a Canary) keeps its template's hash instead of the template: its
/// readiness reads the status, its scaling the replicas, and the drift check the hash, while
/// the template was a third of what a Canary cost the caches.
pub fn shape(index: &Index, deployment: &mut Deployment) {
    let meta = &deployment.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    if !index
        .by_target(namespace, TargetKind::Deployment, name)
        .is_empty()
    {
        return;
    }
    // A primary whose promoted template is recorded on it: the drift check's hash.
    let primary = crate::controller::canary_owners(meta).next().is_some()
        && deployment
            .annotations()
            .contains_key(primary_drift::TEMPLATE_HASH);
    let hash = match deployment.spec.as_ref() {
        Some(spec) if primary => primary_drift::running_hash(&spec.template),
        _ => None,
    };
    trim(deployment);
    if let Some(hash) = hash {
        deployment
            .annotations_mut()
            .insert(TEMPLATE_HASH.to_string(), hash);
    }
}

/// Drops the pod template of a Deployment, and marks it.
pub fn trim(deployment: &mut Deployment) {
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template = PodTemplateSpec::default();
    }
    deployment
        .annotations_mut()
        .insert(TRIMMED.to_string(), "true".to_string());
}

pub fn is_trimmed(deployment: &Deployment) -> bool {
    deployment.annotations().contains_key(TRIMMED)
}

/// Whole copies of targets the cache holds trimmed, each kept while the cache's copy is
/// unchanged (same resourceVersion): one GET per change, not per reconcile.
#[derive(Debug, Default)]
pub struct Fetched {
    whole: Mutex<HashMap<(String, String), WholeCopy>>,
}

/// A whole Deployment read while the cache held the trimmed copy of `cached_version`.
#[derive(Debug)]
struct WholeCopy {
    cached_version: Option<String>,
    whole: Arc<Deployment>,
}

impl Fetched {
    /// `cached` itself when whole; else the whole Deployment, from memory or from the API.
    ///
    /// # Errors
    /// The GET's, when it fails.
    pub async fn whole(
        &self,
        client: &Client,
        cached: Arc<Deployment>,
    ) -> Result<Option<Arc<Deployment>>, kube::Error> {
        if !is_trimmed(&cached) {
            // Every reconcile of a whole target passes here: no key built unless a copy may
            // have been kept.
            if let Ok(mut whole) = self.whole.lock()
                && !whole.is_empty()
            {
                whole.remove(&(cached.namespace().unwrap_or_default(), cached.name_any()));
            }
            return Ok(Some(cached));
        }
        let key = (cached.namespace().unwrap_or_default(), cached.name_any());
        let version = cached.resource_version();
        if let Ok(whole) = self.whole.lock()
            && let Some(copy) = whole.get(&key)
            && copy.cached_version == version
        {
            return Ok(Some(copy.whole.clone()));
        }
        let api: Api<Deployment> = Api::namespaced(client.clone(), &key.0);
        let Some(mut full) = api.get_opt(&key.1).await? else {
            return Ok(None);
        };
        full.metadata.managed_fields = None;
        let full = Arc::new(full);
        if let Ok(mut whole) = self.whole.lock() {
            let copy = WholeCopy {
                cached_version: version,
                whole: full.clone(),
            };
            whole.insert(key, copy);
        }
        Ok(Some(full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;
    use serde_json::{Value, json};
    use serin_stack::{Stack, StackConfig};

    fn deployment(name: &str, image: &str, owner: Option<&str>) -> Value {
        let owners = owner.map(|o| {
            json!([{"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": o,
                    "uid": "u-1", "controller": true}])
        });
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name},
                         "ownerReferences": owners},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}},
            "status": {"readyReplicas": 3}
        })
    }

    fn image(d: &Deployment) -> Option<String> {
        d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
            .image
            .clone()
    }

    #[test]
    fn only_what_a_canary_targets_or_owns_keeps_its_template() {
        let index = Index::default();
        let canary = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "service": {"port": 80}}
        }))
        .unwrap();
        index.apply(&watcher::Event::Apply(canary));
        let shaped = |value: Value| {
            let mut d: Deployment = serde_json::from_value(value).unwrap();
            shape(&index, &mut d);
            d
        };
        let target = shaped(deployment("web", "web:1", None));
        let primary = shaped(deployment("web-primary", "web:1", Some("web")));
        let other = shaped(deployment("db", "db:1", None));
        assert_eq!(image(&target).as_deref(), Some("web:1"));
        assert!(!is_trimmed(&target));
        // A primary keeps no template either; with no promoted template recorded on it,
        // no hash (the drift check does not look at it).
        assert!(is_trimmed(&primary));
        assert!(!primary.annotations().contains_key(TEMPLATE_HASH));
        assert_eq!(primary.spec.as_ref().unwrap().replicas, Some(3));
        // The rest: no template, but what readiness and the index read.
        assert!(is_trimmed(&other));
        let spec = other.spec.as_ref().unwrap();
        assert_eq!(spec.template, PodTemplateSpec::default());
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(other.labels().get("app").map(String::as_str), Some("db"));
        assert_eq!(other.status.as_ref().unwrap().ready_replicas, Some(3));
    }

    /// A trimmed copy is read whole once per change of the cached copy; a whole copy is
    /// used as it is.
    #[tokio::test]
    async fn a_trimmed_target_is_read_once_per_change() {
        let stack = Stack::start(StackConfig::default()).await.expect("stack");
        let client = stack.client().await.expect("client");
        let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
        stack
            .create(deployment("db", "db:1", None))
            .expect("create");
        let trimmed = |mut d: Deployment| {
            trim(&mut d);
            Arc::new(d)
        };
        let fetched = Fetched::default();
        let v1 = trimmed(api.get("db").await.unwrap());
        let first = fetched.whole(&client, v1.clone()).await.unwrap().unwrap();
        assert_eq!(image(&first).as_deref(), Some("db:1"));
        assert!(!is_trimmed(&first));
        let again = fetched.whole(&client, v1).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "read again without a change");

        let mut changed = api.get("db").await.unwrap();
        changed
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("db:2".into());
        let changed = api
            .replace("db", &Default::default(), &changed)
            .await
            .unwrap();
        let v2 = trimmed(changed.clone());
        let second = fetched.whole(&client, v2).await.unwrap().unwrap();
        assert_eq!(image(&second).as_deref(), Some("db:2"));

        let whole = Arc::new(changed);
        let used = fetched
            .whole(&client, whole.clone())
            .await
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&whole, &used));
        stack.shutdown().await;
    }
}
