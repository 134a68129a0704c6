//! Objects decoded without `metadata.managedFields`.
//!
//! The API server sends every object with its managed fields: one entry per field manager,
//! each a tree of every field that manager set. serin never reads them, and the caches drop
//! them, but decoding them was the largest single cost of the controller's CPU in a release
//! burst (a `perf` profile of 1,000 Canaries released at once: about a twelfth of the
//! samples, most of them allocations, for every watch event and every write's answer). A
//! [`Lean`] object skips them while the JSON is read: the parser steps over the value
//! without building it.
//!
//! Written here rather than taken from a crate: serde has no way to ignore a field of a
//! foreign type (k8s-openapi's `ObjectMeta`) without a deserializer that sits between the
//! parser and the type, which is what [`Skipping`] is.

use std::fmt;

use kube::Resource;
use serde::de::{
    DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
    value::{BorrowedStrDeserializer, StrDeserializer},
};
use serde::{Deserialize, Serialize};

/// The type-level half of `kube::Resource` for a wrapper of `K`: the same kind, group,
/// version and plural as `K`, so the wrapper is requested and cached as `K` is.
macro_rules! resource_of {
    ($k:ident) => {
        type DynamicType = $k::DynamicType;
        type Scope = $k::Scope;

        fn kind(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
            $k::kind(dt)
        }
        fn group(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
            $k::group(dt)
        }
        fn version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
            $k::version(dt)
        }
        fn api_version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
            $k::api_version(dt)
        }
        fn plural(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
            $k::plural(dt)
        }
    };
}
pub(crate) use resource_of;

/// `K`, decoded without its managed fields.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Lean<K>(pub K);

impl<K> Lean<K> {
    pub fn into_inner(self) -> K {
        self.0
    }
}

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(Skipping {
            inner: deserializer,
            level: Level::Object,
        })
        .map(Lean)
    }
}

impl<K: Resource> Resource for Lean<K> {
    resource_of!(K);

    fn meta(&self) -> &kube::api::ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
        self.0.meta_mut()
    }
}

/// A write's answer as serin reads it: the object's metadata (its resourceVersion and
/// generation), without managed fields. The rest of the answer (a Canary's whole spec and
/// status, a Deployment's template) is stepped over by the parser, not built and dropped:
/// a step writes a status, an event and often a workload, and decoding each answer whole
/// was a share of the step's CPU.
#[derive(Clone, Debug)]
pub struct Meta<K> {
    pub metadata: kube::api::ObjectMeta,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<'de, K> Deserialize<'de> for Meta<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Shape {
            #[serde(default)]
            metadata: kube::api::ObjectMeta,
        }
        let Lean(Shape { metadata }) = Lean::<Shape>::deserialize(deserializer)?;
        Ok(Meta {
            metadata,
            kind: std::marker::PhantomData,
        })
    }
}

impl<K: Resource> Resource for Meta<K> {
    resource_of!(K);

    fn meta(&self) -> &kube::api::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
        &mut self.metadata
    }
}

/// Where in the object a [`Skipping`] deserializer reads.
#[derive(Clone, Copy)]
enum Level {
    /// The object: its `metadata` is read by a `Metadata` one.
    Object,
    /// The metadata: `managedFields` is stepped over.
    Metadata,
}

/// A deserializer that hands the type its maps with some entries left out (see [`Level`]).
struct Skipping<D> {
    inner: D,
    level: Level,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_any(Skipper {
            inner: visitor,
            level: self.level,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_any(visitor)
    }

    // k8s-openapi reads `metadata` as an option: its `Some` is read through here again.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_option(Skipper {
            inner: visitor,
            level: self.level,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The visitor of a [`Skipping`] deserializer: a map is handed on with entries left out;
/// anything else as it is.
struct Skipper<V> {
    inner: V,
    level: Level,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Skipper<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(Entries {
            inner: map,
            level: self.level,
            metadata_next: false,
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: deserializer,
            level: self.level,
        })
    }
}

/// A map's entries less those its level leaves out.
struct Entries<A> {
    inner: A,
    level: Level,
    /// The key just read was the object's `metadata`.
    metadata_next: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Entries<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        loop {
            let Some(key) = self.inner.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            match self.level {
                Level::Object => self.metadata_next = key.as_str() == "metadata",
                Level::Metadata if key.as_str() == "managedFields" => {
                    self.inner.next_value::<IgnoredAny>()?;
                    continue;
                }
                Level::Metadata => {}
            }
            return match key {
                Key::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)),
                Key::Owned(k) => seed.deserialize(StrDeserializer::new(&k)),
            }
            .map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        if std::mem::take(&mut self.metadata_next) {
            self.inner.next_value_seed(MetadataSeed(seed))
        } else {
            self.inner.next_value_seed(seed)
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// Reads the object's metadata through a [`Skipping`] deserializer.
struct MetadataSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for MetadataSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Skipping {
            inner: deserializer,
            level: Level::Metadata,
        })
    }
}

/// A map key, borrowed from the text when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(k) => k,
            Key::Owned(k) => k,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use serde_json::json;

    /// `K` decoded from JSON text as the watches decode it.
    fn from_str<K: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<K> {
        serde_json::from_str::<Lean<K>>(text).map(Lean::into_inner)
    }

    fn with_managed_fields() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
                "labels": {"app": "web", "managedFields": "a label, kept"},
                "annotations": {"note": "x"}
            },
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}
        })
    }

    #[test]
    fn managed_fields_are_left_out_and_everything_else_is_read() {
        let text = with_managed_fields().to_string();
        let lean: Deployment = from_str(&text).unwrap();
        let whole: Deployment = serde_json::from_str(&text).unwrap();
        assert!(
            whole.metadata.managed_fields.is_some(),
            "the input has them"
        );
        assert_eq!(lean.metadata.managed_fields, None);
        let mut expected = whole;
        expected.metadata.managed_fields = None;
        assert_eq!(lean, expected);
        assert_eq!(
            lean.metadata.labels.unwrap().get("managedFields").cloned(),
            Some("a label, kept".to_string()),
            "only the metadata's own field is left out"
        );
    }

    #[test]
    fn keys_with_escapes_and_type_errors_read_as_before() {
        // An escaped key cannot be borrowed from the text.
        let text = r#"{"apiVersion":"apps/v1","kind":"Deployment","metad\u0061ta":{"name":"web","managedFields":[]},"spec":null}"#;
        let lean: Deployment = from_str(text).unwrap();
        assert_eq!(lean.metadata.name.as_deref(), Some("web"));
        assert_eq!(lean.metadata.managed_fields, None);
        let mut bad = with_managed_fields();
        bad["spec"]["replicas"] = json!("three");
        let err = from_str::<Deployment>(&bad.to_string()).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        // Through serde_json's Value as well as its text reader.
        let lean: Lean<Deployment> = serde_json::from_value(with_managed_fields()).unwrap();
        assert_eq!(lean.0.metadata.managed_fields, None);
        assert_eq!(lean.0.spec.unwrap().replicas, Some(3));
    }

    #[test]
    fn an_answer_read_as_its_metadata_keeps_all_of_it_but_managed_fields() {
        let mut object = with_managed_fields();
        object["status"] = json!({"observedGeneration": 4, "conditions": [{"type": "x"}]});
        object["metadata"]["generation"] = json!(4);
        let meta: Meta<Deployment> = serde_json::from_str(&object.to_string()).unwrap();
        let whole: Deployment = from_str(&object.to_string()).unwrap();
        assert_eq!(meta.metadata, whole.metadata);
        assert_eq!(meta.metadata.managed_fields, None);
        assert_eq!(meta.resource_version().as_deref(), Some("7"));
        // Whatever else the answer holds is not read, so it cannot fail the write.
        object["spec"] = json!("not a spec");
        let meta: Meta<Deployment> = serde_json::from_str(&object.to_string()).unwrap();
        assert_eq!(meta.metadata.generation, Some(4));
        // An answer without metadata reads as empty metadata, not as an error.
        let bare: Meta<Deployment> = serde_json::from_str(r#"{"kind":"Deployment"}"#).unwrap();
        assert_eq!(bare.metadata, kube::api::ObjectMeta::default());
    }
}
