//! The Canary watch, one object at a time. A typed watch decodes a whole list at once: one
//! Canary that does not decode (written before a CRD change, or through a looser schema than
//! serin's) would fail every list, and the watch would retry it forever with no Canary in the
//! cluster reconciled. Here each object is decoded on its own; one that does not decode is
//! left out of the cache (as if deleted), logged, and reported on the object itself with a
//! Warning event naming the field, once per version of it; every other Canary goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::api::DynamicObject;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serin_core::EventType;

use crate::api::Canary;
use crate::controller::caches::lean::Lean;
use crate::controller::context::Context;
use crate::controller::notify::events::Events;

/// Versions already reported, by uid: a re-list does not report the same object again.
#[derive(Debug, Default)]
struct Reported(Mutex<HashMap<String, String>>);

/// Watches Canaries (in `namespace`, or all; those matching `selector`, or all) and decodes
/// each one alone.
pub fn watch(
    client: &Client,
    namespace: Option<&str>,
    selector: Option<&str>,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<watcher::Event<Canary>, watcher::Error>> + Send + use<> {
    let config = match selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let reported = Arc::new(Reported::default());
    let report = move |object: DynamicObject, why: String| {
        let (ctx, reported) = (ctx.clone(), reported.clone());
        async move { report(&object, &why, &ctx.events, &reported).await }
    };
    each(
        tolerant_api::<Canary>(client, namespace),
        config,
        stub,
        report,
    )
}

/// The API of `K`'s objects, each decoded on its own (in `namespace`, or all).
pub fn tolerant_api<K>(client: &Client, namespace: Option<&str>) -> Api<Tolerant<K>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// An object as the API server sent it: decoded as `K` (without its managed fields), or,
/// when it does not decode, its identity and why not. Decoding one object can fail without
/// failing the list or the watch event it came in.
#[derive(Clone, Debug)]
pub enum Tolerant<K> {
    /// Boxed: a Canary is large, and the event is moved through the watch's stages.
    Decoded(Box<K>),
    Undecodable {
        object: Box<DynamicObject>,
        why: String,
    },
}

impl<'de, K: serde::de::DeserializeOwned> serde::Deserialize<'de> for Tolerant<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read once into a JSON tree (less the managed fields), then decoded from it: the
        // tree is what a failed decode is explained from.
        let value = Lean::<serde_json::Value>::deserialize(deserializer)?.0;
        if let Ok(decoded) = K::deserialize(&value) {
            return Ok(Tolerant::Decoded(Box::new(decoded)));
        }
        let why = why_not::<K>(&value);
        let object = DynamicObject::deserialize(&value).map_err(serde::de::Error::custom)?;
        let object = Box::new(object);
        Ok(Tolerant::Undecodable { object, why })
    }
}

impl<K: kube::Resource<DynamicType = ()>> kube::Resource for Tolerant<K> {
    crate::controller::caches::lean::resource_of!(K);

    fn meta(&self) -> &kube::api::ObjectMeta {
        match self {
            Tolerant::Decoded(k) => k.meta(),
            Tolerant::Undecodable { object, .. } => &object.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
        match self {
            Tolerant::Decoded(k) => k.meta_mut(),
            Tolerant::Undecodable { object, .. } => &mut object.metadata,
        }
    }
}

/// A watch of `api` that decodes each object into `K` on its own. One that does not decode
/// goes to `report` and is left out: skipped while listing, a deletion (`stub`) when it
/// replaces one that decoded, so that no stale copy stays cached.
pub fn each<K, R, Fut>(
    api: Api<Tolerant<K>>,
    config: watcher::Config,
    stub: fn(&DynamicObject) -> Option<K>,
    report: R,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K, R, Fut>
where
    K: kube::Resource<DynamicType = ()>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + 'static,
    R: Fn(DynamicObject, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    watcher(api, config).filter_map(move |event| {
        let report = report.clone();
        async move {
            match event {
                Err(e) => Some(Err(e)),
                Ok(event) => decoded(event, stub, report).await.map(Ok),
            }
        }
    })
}

/// The event with its object decoded; one that does not decode becomes a deletion (it leaves
/// the cache) or, while listing, nothing.
async fn decoded<K, R, Fut>(
    event: watcher::Event<Tolerant<K>>,
    stub: fn(&DynamicObject) -> Option<K>,
    report: R,
) -> Option<watcher::Event<K>>
where
    R: Fn(DynamicObject, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use watcher::Event;
    match event {
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
        Event::InitApply(Tolerant::Decoded(object)) => Some(Event::InitApply(*object)),
        Event::InitApply(Tolerant::Undecodable { object, why }) => {
            report(*object, why).await;
            None
        }
        Event::Apply(Tolerant::Decoded(object)) => Some(Event::Apply(*object)),
        Event::Apply(Tolerant::Undecodable { object, why }) => {
            let gone = stub(&object).map(Event::Delete);
            report(*object, why).await;
            gone
        }
        Event::Delete(Tolerant::Decoded(object)) => Some(Event::Delete(*object)),
        Event::Delete(Tolerant::Undecodable { object, .. }) => stub(&object).map(Event::Delete),
    }
}

/// What is wrong with an object that does not decode: the path of the field and serde's word.
fn why_not<K: serde::de::DeserializeOwned>(value: &serde_json::Value) -> String {
    match serde_path_to_error::deserialize::<_, K>(value) {
        Ok(_) => "it decodes on a second reading".to_string(),
        Err(e) => {
            let path = e.path().to_string();
            format!("{path}: {}", e.into_inner())
        }
    }
}

/// A Canary with the object's identity and nothing else: what an event about it, or its
/// removal from the cache, needs.
fn stub(object: &DynamicObject) -> Option<Canary> {
    let mut canary: Canary = serde_json::from_value(serde_json::json!({
        "apiVersion": crate::api::API_VERSION, "kind": "Canary",
        "metadata": {},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ""}}
    }))
    .ok()?;
    canary.metadata = object.metadata.clone();
    Some(canary)
}

async fn report(object: &DynamicObject, why: &str, events: &Events, reported: &Reported) {
    let (uid, version) = (object.uid().unwrap_or_default(), object.resource_version());
    let new = reported.0.lock().is_ok_and(|mut seen| {
        let version = version.unwrap_or_default();
        seen.insert(uid, version.clone()) != Some(version)
    });
    let name = format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    tracing::warn!(canary = %name, error = %why, "Canary does not decode; skipped");
    if !new {
        return;
    }
    let Some(canary) = stub(object) else {
        return;
    };
    let message = format!(
        "serin cannot read this Canary ({why}): it is skipped until it is fixed (an object \
         written before a CRD upgrade, or through a looser schema than serin's); the other \
         Canaries are not affected. `serin check` on the manifest names the field and the fix"
    );
    events.publish(&canary, EventType::Warning, &message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object<K: serde::de::DeserializeOwned>(spec: serde_json::Value) -> Tolerant<K> {
        let text = serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1",
                         "resourceVersion": "7",
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": spec
        })
        .to_string();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_canary_that_does_not_decode_names_the_field() {
        let good = object::<Canary>(serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898}, "analysis": {"interval": "1m"}}));
        let Tolerant::Decoded(good) = good else {
            panic!("decodes: {good:?}");
        };
        assert_eq!(good.metadata.managed_fields, None, "decoded lean");
        let bad = object::<Canary>(serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": "ninety"}, "analysis": {"interval": "1m"}}));
        let Tolerant::Undecodable { object, why } = bad else {
            panic!("does not decode: {bad:?}");
        };
        assert!(why.starts_with("spec.service.port"), "{why}");
        let stub = stub(&object).unwrap();
        assert_eq!(stub.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(stub.metadata.name.as_deref(), Some("podinfo"));
    }

    #[tokio::test]
    async fn an_object_that_stops_decoding_leaves_the_cache_and_is_reported() {
        use crate::api::MetricTemplate;
        use watcher::Event;
        let template = |query: serde_json::Value| -> Tolerant<MetricTemplate> {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                "metadata": {"name": "rate", "namespace": "test"},
                "spec": {"provider": {"type": "prometheus"}, "query": query}
            }))
            .unwrap()
        };
        let stub = |o: &DynamicObject| -> Option<MetricTemplate> {
            let mut t: MetricTemplate = serde_json::from_value(serde_json::json!({
                "metadata": {}, "spec": {"provider": {"type": "prometheus"}, "query": ""}}))
            .ok()?;
            t.metadata = o.metadata.clone();
            Some(t)
        };
        let reports = std::sync::Mutex::new(Vec::new());
        let report = |_: DynamicObject, why: String| {
            reports.lock().unwrap().push(why);
            async {}
        };
        let good = decoded::<MetricTemplate, _, _>(
            Event::InitApply(template(serde_json::json!("up"))),
            stub,
            report,
        )
        .await;
        assert!(matches!(good, Some(Event::InitApply(t)) if t.spec.query == "up"));
        let bad = || template(serde_json::json!({"not": "a string"}));
        let listed = decoded::<MetricTemplate, _, _>(Event::InitApply(bad()), stub, report).await;
        assert!(listed.is_none(), "skipped while listing");
        let changed = decoded::<MetricTemplate, _, _>(Event::Apply(bad()), stub, report).await;
        assert!(
            matches!(changed, Some(Event::Delete(t)) if t.metadata.name.as_deref() == Some("rate")),
            "a stale copy is removed"
        );
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 2);
        assert!(reports[0].starts_with("spec.query"), "{reports:?}");
    }
}
