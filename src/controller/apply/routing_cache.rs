//! The routing objects as serin last knew them, so that a Canary with nothing to do costs the
//! API server nothing: no GET of its VirtualService every interval, no apply of an unchanged
//! render.
//!
//! Reads come from one watch per routing kind, started the first time a Canary routes through
//! that kind (a kind whose CRD is not installed is never watched unless a Canary asks for it).
//! A watch the controller may not run (RBAC without `list`/`watch`) stops, and its reads go on
//! as GETs. A cached copy of an object serin applied is trusted only once it shows that apply
//! (its resourceVersion is at least the one the apply answered); an object the cache does not
//! hold may have been created a moment ago. In both cases, and after a conflict, the object is
//! read with a GET. Applies carry the resourceVersion they were rendered from, so one made on
//! an outdated copy is refused rather than overwriting an edit unseen.
//!
//! An apply is skipped when serin would send exactly what it sent last (a digest of the
//! render) and the object has not changed since (same resourceVersion), or changed only
//! outside what serin sends (every field of the render holds its value in the live object:
//! another controller's status, someone's extra label). After a restart the memory is empty,
//! so each object is applied once: that also removes a field an older render set and the new
//! one no longer sends, which a comparison with the live object cannot see.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::controller::router::ObjectKey;

/// The digest of no render: after a write that was not an apply of a render.
const UNKNOWN_RENDER: u64 = 0;

/// What serin applied last to one routing object.
#[derive(Clone, Debug, PartialEq)]
struct Applied {
    /// The resourceVersion the apply answered (or a later one shown to hold the same render).
    resource_version: String,
    /// A digest of the render sent.
    render: u64,
}

/// The watches of routing kinds and the memory of serin's own applies.
pub struct RoutingCache {
    /// `None`: no watches (every read is a GET), as in unit tests with a mocked API.
    client: Option<Client>,
    /// `--namespace`: watch only there (a namespaced install may not list elsewhere).
    namespace: Option<String>,
    /// By kind, with whether it is cluster-scoped (its watch then covers every namespace).
    stores: Mutex<HashMap<(String, bool), Store<DynamicObject>>>,
    /// Shared with the watches, which forget an object once it is deleted: the memory holds
    /// live objects only.
    applied: Arc<Mutex<HashMap<String, Applied>>>,
}

impl RoutingCache {
    pub fn new(client: Client, namespace: Option<String>) -> RoutingCache {
        RoutingCache {
            client: Some(client),
            namespace,
            stores: Mutex::default(),
            applied: Arc::default(),
        }
    }

    /// Every read a GET, nothing remembered to skip an apply by.
    pub fn without_watches() -> RoutingCache {
        RoutingCache {
            client: None,
            namespace: None,
            stores: Mutex::default(),
            applied: Arc::default(),
        }
    }

    /// The object as the cache holds it, when the cache can be trusted with it: it has seen
    /// serin's last apply. `None`: read it with a GET.
    pub fn cached(&self, key: &ObjectKey) -> Option<DynamicObject> {
        let store = self.store(key)?;
        if !matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))) {
            return None;
        }
        let mut reference = ObjectRef::new_with(&key.name, key.resource.clone());
        if let Some(ns) = &key.namespace {
            reference = reference.within(ns);
        }
        let cached = store.get(&reference)?;
        let seen = match self.last(key) {
            Some(last) => at_least(cached.resource_version().as_deref(), &last.resource_version),
            // An object serin only reads (the apex Ingress), or has not applied since it
            // started: any copy will do, since an apply on top of an outdated one is refused.
            None => true,
        };
        seen.then(|| (*cached).clone())
    }

    /// Whether applying `render` would change nothing: serin sent the same render last, and
    /// `live` still holds it.
    pub fn unchanged(&self, key: &ObjectKey, render: &DynamicObject, live: &DynamicObject) -> bool {
        let Some(last) = self.last(key) else {
            return false;
        };
        let Some(live_version) = live.resource_version() else {
            return false;
        };
        if last.render == UNKNOWN_RENDER || last.render != digest(render) {
            return false;
        }
        if live_version == last.resource_version {
            return true;
        }
        let (Ok(render), Ok(live_value)) =
            (serde_json::to_value(render), serde_json::to_value(live))
        else {
            return false;
        };
        if !contains(&live_value, &render) {
            return false;
        }
        // The live object moved on outside what serin sends: remember where it is now.
        self.remember(key, live_version, last.render);
        true
    }

    /// Records an apply of `render` that the API server answered with `answer`.
    pub fn applied(&self, key: &ObjectKey, render: &DynamicObject, answer: &DynamicObject) {
        match answer.resource_version() {
            Some(version) => self.remember(key, version, digest(render)),
            None => self.forget(key),
        }
    }

    /// Records another write of serin's to the object (a merge patch): the cache is trusted
    /// again once it shows it, and the next render is applied (this write's effect on it is
    /// not known).
    pub fn wrote(&self, key: &ObjectKey, answer: &DynamicObject) {
        match answer.resource_version() {
            Some(version) => self.remember(key, version, UNKNOWN_RENDER),
            None => self.forget(key),
        }
    }

    fn remember(&self, key: &ObjectKey, resource_version: String, render: u64) {
        if let Ok(mut applied) = self.applied.lock() {
            applied.insert(
                id(key),
                Applied {
                    resource_version,
                    render,
                },
            );
        }
    }

    fn forget(&self, key: &ObjectKey) {
        if let Ok(mut applied) = self.applied.lock() {
            applied.remove(&id(key));
        }
    }

    fn last(&self, key: &ObjectKey) -> Option<Applied> {
        self.applied.lock().ok()?.get(&id(key)).cloned()
    }

    /// The store of the key's kind, its watch started on first use.
    fn store(&self, key: &ObjectKey) -> Option<Store<DynamicObject>> {
        let client = self.client.as_ref()?;
        let cluster_scoped = key.namespace.is_none();
        let mut stores = self.stores.lock().ok()?;
        let slot = (kind_id(&key.resource), cluster_scoped);
        if let Some(store) = stores.get(&slot) {
            return Some(store.clone());
        }
        let api = match (&self.namespace, cluster_scoped) {
            (Some(ns), false) => Api::namespaced_with(client.clone(), ns, &key.resource),
            _ => Api::all_with(client.clone(), &key.resource),
        };
        let store = watch(api, key.resource.clone(), self.applied.clone());
        stores.insert(slot, store.clone());
        Some(store)
    }
}

/// Starts the watch of one routing kind; managed fields are dropped (never read, often half
/// of an object's size).
fn watch(
    api: Api<DynamicObject>,
    resource: ApiResource,
    applied: Arc<Mutex<HashMap<String, Applied>>>,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let kind = kind_id(&resource);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let e = match item {
                Ok(watcher::Event::Delete(gone)) => {
                    let id = object_id(&resource, gone.namespace().as_deref(), &gone.name_any());
                    if let Ok(mut applied) = applied.lock() {
                        applied.remove(&id);
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(e) => e,
            };
            if forbidden(&e) {
                tracing::warn!(
                    kind,
                    "may not list and watch this routing kind: reading its objects with a \
                     GET per reconcile instead (grant list and watch to stop these requests)"
                );
                return;
            }
            // A CRD not installed yet, or a dropped connection: the backoff retries.
            tracing::debug!(kind, error = %e, "routing watch failed");
        }
    });
    store
}

fn forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(k) | watcher::Error::WatchStartFailed(k) => {
            matches!(k, kube::Error::Api(s) if s.code == 403)
        }
        watcher::Error::WatchFailed(k) => matches!(k, kube::Error::Api(s) if s.code == 403),
        _ => false,
    }
}

fn kind_id(resource: &ApiResource) -> String {
    format!("{}/{}", resource.api_version, resource.kind)
}

fn id(key: &ObjectKey) -> String {
    object_id(&key.resource, key.namespace.as_deref(), &key.name)
}

fn object_id(resource: &ApiResource, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{}/{name}", kind_id(resource), namespace.unwrap_or(""))
}

/// Whether a cached resourceVersion shows the write that answered `seen`. resourceVersions
/// are opaque to clients, but every API server serin runs on (etcd's revisions) issues
/// increasing integers; anything else is trusted only when equal.
fn at_least(cached: Option<&str>, seen: &str) -> bool {
    let Some(cached) = cached else {
        return false;
    };
    match (cached.parse::<u64>(), seen.parse::<u64>()) {
        (Ok(c), Ok(s)) => c >= s,
        _ => cached == seen,
    }
}

/// A digest of what would be sent (serde_json writes maps in key order: the same render
/// gives the same bytes).
fn digest(render: &DynamicObject) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(render)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Whether every field of `part` holds the same value in `whole`. Arrays are compared whole:
/// an apply replaces a list, so an extra or reordered entry is a difference.
fn contains(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p
            .iter()
            .all(|(k, v)| v.is_null() || w.get(k).is_some_and(|wv| contains(wv, v))),
        _ => whole == part,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ObjectKey {
        ObjectKey {
            resource: ApiResource {
                group: "networking.istio.io".into(),
                version: "v1".into(),
                api_version: "networking.istio.io/v1".into(),
                kind: "VirtualService".into(),
                plural: "virtualservices".into(),
            },
            namespace: Some("test".into()),
            name: "podinfo".into(),
        }
    }

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn render(weight: u32) -> DynamicObject {
        object(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": "test", "labels": {"app": "podinfo"}},
            "spec": {"http": [{"route": [{"weight": 100 - weight}, {"weight": weight}]}]}
        }))
    }

    fn live(weight: u32, version: &str, extra: Value) -> DynamicObject {
        let mut value = serde_json::to_value(render(weight)).unwrap();
        value["metadata"]["resourceVersion"] = json!(version);
        for (k, v) in extra.as_object().unwrap() {
            value["metadata"][k] = v.clone();
        }
        object(value)
    }

    #[test]
    fn an_unchanged_render_of_an_unchanged_object_is_not_applied_again() {
        let cache = RoutingCache::without_watches();
        let answer = live(10, "7", json!({}));
        assert!(
            !cache.unchanged(&key(), &render(10), &answer),
            "nothing was applied yet: apply once"
        );
        cache.applied(&key(), &render(10), &answer);
        assert!(cache.unchanged(&key(), &render(10), &answer));
        assert!(
            !cache.unchanged(&key(), &render(20), &answer),
            "a new weight is applied"
        );
    }

    #[test]
    fn a_change_outside_the_render_is_no_reason_to_apply() {
        let cache = RoutingCache::without_watches();
        cache.applied(&key(), &render(10), &live(10, "7", json!({})));
        let labelled = live(10, "9", json!({"labels": {"app": "podinfo", "team": "a"}}));
        assert!(cache.unchanged(&key(), &render(10), &labelled));
        assert_eq!(cache.last(&key()).unwrap().resource_version, "9");
    }

    #[test]
    fn a_change_inside_the_render_is_applied_over() {
        let cache = RoutingCache::without_watches();
        cache.applied(&key(), &render(10), &live(10, "7", json!({})));
        // Someone set the weights by hand, or dropped serin's label.
        assert!(!cache.unchanged(&key(), &render(10), &live(50, "8", json!({}))));
        let unlabelled = live(10, "8", json!({"labels": {}}));
        assert!(!cache.unchanged(&key(), &render(10), &unlabelled));
    }

    #[test]
    fn a_cached_copy_counts_once_it_shows_the_last_apply() {
        assert!(at_least(Some("12"), "12"));
        assert!(at_least(Some("13"), "12"));
        assert!(!at_least(Some("11"), "12"), "the cache has not seen it yet");
        assert!(!at_least(None, "12"));
        assert!(at_least(Some("a"), "a"));
        assert!(!at_least(Some("b"), "a"));
    }

    #[test]
    fn lists_are_compared_whole() {
        let whole = json!({"a": [1, 2], "b": {"c": 1, "d": 2}});
        assert!(contains(&whole, &json!({"b": {"c": 1}})));
        assert!(!contains(&whole, &json!({"a": [1]})));
        assert!(!contains(&whole, &json!({"b": {"e": 1}})));
        assert!(contains(&whole, &json!({"e": null})), "null: not sent");
    }

    #[test]
    fn without_watches_nothing_is_cached() {
        let cache = RoutingCache::without_watches();
        cache.applied(&key(), &render(10), &live(10, "7", json!({})));
        assert!(cache.cached(&key()).is_none());
    }
}
