//! Objects cached as JSON text, with only their identity decoded.
//!
//! k8s-openapi's types keep every optional field inline and every label, annotation and
//! selector in a `BTreeMap`, whose first node holds room for eleven entries (544 bytes for a
//! one-entry map of strings, measured with a counting allocator). Decoded, a Service serin
//! renders took about 3.3 KiB of the cache and a target Deployment about 7.5 KiB, several
//! times their JSON; with two Deployments and three Services per Canary, the workload caches
//! were about half of what each Canary cost the controller's memory. A [`Packed`] object keeps
//! its JSON text and decodes only the metadata the reflector and the wake-up mapping read
//! (name, namespace, uid, resourceVersion, generation, owner references); a step decodes the
//! objects it reads ([`get`]), tens of microseconds a reconcile.

use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::lean::{Lean, resource_of};
use crate::controller::error::Error;

/// `K` as its JSON text, with the metadata read without decoding it.
pub struct Packed<K> {
    /// What is read of every cached object: its identity, version and owners.
    pub metadata: ObjectMeta,
    json: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource<DynamicType = ()> + Serialize> Packed<K> {
    /// The object as its text. Serializing a decoded k8s-openapi object cannot fail; if it
    /// ever did, the copy keeps its identity and decodes as an error ([`Packed::unpack`]), so
    /// a step reading it fails and is retried instead of acting on a wrong object.
    pub fn pack(object: &K) -> Self {
        let meta = object.meta();
        let metadata = ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            generation: meta.generation,
            owner_references: meta.owner_references.clone(),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            ..ObjectMeta::default()
        };
        let json = serde_json::to_string(object).unwrap_or_default();
        Packed {
            metadata,
            json: json.into_boxed_str(),
            kind: PhantomData,
        }
    }
}

impl<K: DeserializeOwned> Packed<K> {
    /// The whole object.
    ///
    /// # Errors
    /// When the text does not decode as `K` (it was written from one: a bug to report).
    pub fn unpack(&self) -> serde_json::Result<K> {
        serde_json::from_str(&self.json)
    }
}

impl<K: Resource<DynamicType = ()> + Serialize> From<K> for Packed<K> {
    fn from(object: K) -> Self {
        Packed::pack(&object)
    }
}

/// The object `namespace/name` of a packed cache, decoded.
///
/// # Errors
/// [`Error::Cache`] when the cached text does not decode.
pub fn get<K>(
    store: &Store<Packed<K>>,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + 'static,
{
    let Some(packed) = store.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(None);
    };
    packed
        .unpack()
        .map(|k| Some(Arc::new(k)))
        .map_err(|e| Error::Cache {
            object: format!("{} {namespace}/{name}", K::kind(&())),
            source: e,
        })
}

// Written by hand: derived impls would ask the same of `K`, which the marker does not hold.
impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Packed {
            metadata: self.metadata.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Packed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("metadata", &self.metadata)
            .field("bytes", &self.json.len())
            .finish()
    }
}

/// Read as `K` is (without its managed fields), then packed: the controller's wake-up
/// mapping asks its triggers to be decodable.
impl<'de, K> Deserialize<'de> for Packed<K>
where
    K: Resource<DynamicType = ()> + Serialize + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Lean::<K>::deserialize(deserializer).map(|lean| Packed::pack(&lean.0))
    }
}

impl<K: Resource> Resource for Packed<K> {
    resource_of!(K);

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    fn service() -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "web-primary", "namespace": "apps", "uid": "u-1",
                "resourceVersion": "12", "labels": {"app": "web-primary"},
                "annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"},
                "ownerReferences": [{"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                    "name": "web", "uid": "c-1", "controller": true}]
            },
            "spec": {"selector": {"app": "web-primary"}, "clusterIP": "10.0.0.7",
                     "ports": [{"name": "http", "port": 80, "targetPort": 9898}]}
        }))
        .unwrap()
    }

    #[test]
    fn unpacks_to_the_object_it_packed_and_keeps_its_identity_decoded() {
        let whole = service();
        let packed = Packed::pack(&whole);
        assert_eq!(packed.unpack().unwrap(), whole);
        let meta = &packed.metadata;
        assert_eq!(meta.name.as_deref(), Some("web-primary"));
        assert_eq!(meta.namespace.as_deref(), Some("apps"));
        assert_eq!(meta.resource_version.as_deref(), Some("12"));
        assert_eq!(meta.owner_references, whole.metadata.owner_references);
        // The maps are in the text only.
        assert_eq!(meta.labels, None);
        assert_eq!(meta.annotations, None);
    }

    #[test]
    fn a_store_of_packed_objects_is_read_whole_and_names_what_does_not_decode() {
        let (store, mut writer) = reflector::store::<Packed<Service>>();
        writer.apply_watcher_event(&watcher::Event::Apply(Packed::pack(&service())));
        let read = get(&store, "apps", "web-primary").unwrap().unwrap();
        assert_eq!(*read, service());
        assert!(get(&store, "apps", "other").unwrap().is_none());
        // Text that does not decode (never written by `pack`) is an error naming the object.
        let mut broken = Packed::pack(&service());
        broken.json = "{\"spec\": 7}".into();
        writer.apply_watcher_event(&watcher::Event::Apply(broken));
        let err = get(&store, "apps", "web-primary").unwrap_err();
        assert!(
            err.to_string().contains("Service apps/web-primary"),
            "{err}"
        );
    }

    #[test]
    fn decodes_from_a_watch_without_managed_fields() {
        let mut object = serde_json::to_value(service()).unwrap();
        object["metadata"]["managedFields"] = json!([{"manager": "kubectl"}]);
        let packed: Packed<Service> = serde_json::from_value(object).unwrap();
        assert_eq!(packed.unpack().unwrap(), service());
        assert!(!packed.json.contains("managedFields"));
        // Of another kind than `K`: refused as a whole decode would be.
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": "web"}});
        assert!(serde_json::from_value::<Packed<Service>>(deployment.clone()).is_err());
        assert!(serde_json::from_value::<Packed<Deployment>>(deployment).is_ok());
    }
}
