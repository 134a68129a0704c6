//! The Canary watch, one object at a time. A typed watch decodes a whole list at once: one
//! Canary that does not decode (written before a CRD change, or through a looser schema than
//! serin's) would fail every list, and the watch would retry it forever with no Canary in the
//! cluster reconciled. Here each object is decoded on its own; one that does not decode is
//! left out of the cache (as if deleted), logged, and reported on the object itself with a
//! Warning event naming the field, once per version of it; every other Canary goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serin_core::EventType;

use crate::api::Canary;
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
        dynamic_api::<Canary>(client, namespace),
        config,
        stub,
        report,
    )
}

/// The API of `K`'s objects as dynamic objects (in `namespace`, or all).
pub fn dynamic_api<K: kube::Resource<DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A watch of `api` that decodes each object into `K` on its own. One that does not decode
/// goes to `report` and is left out: skipped while listing, a deletion (`stub`) when it
/// replaces one that decoded, so that no stale copy stays cached.
pub fn each<K, R, Fut>(
    api: Api<DynamicObject>,
    config: watcher::Config,
    stub: fn(&DynamicObject) -> Option<K>,
    report: R,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K, R, Fut>
where
    K: serde::de::DeserializeOwned + Send + 'static,
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
    event: watcher::Event<DynamicObject>,
    stub: fn(&DynamicObject) -> Option<K>,
    report: R,
) -> Option<watcher::Event<K>>
where
    K: serde::de::DeserializeOwned,
    R: Fn(DynamicObject, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use watcher::Event;
    match event {
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
        Event::InitApply(object) => match decode(&object) {
            Ok(decoded) => Some(Event::InitApply(decoded)),
            Err(why) => {
                report(object, why).await;
                None
            }
        },
        Event::Apply(object) => match decode(&object) {
            Ok(decoded) => Some(Event::Apply(decoded)),
            Err(why) => {
                let gone = stub(&object).map(Event::Delete);
                report(object, why).await;
                gone
            }
        },
        Event::Delete(object) => decode(&object)
            .ok()
            .or_else(|| stub(&object))
            .map(Event::Delete),
    }
}

/// The object decoded, or what is wrong with it: the path of the field and serde's word.
pub fn decode<K: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<K, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize::<_, K>(value).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner())
    })
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

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1",
                         "resourceVersion": "7"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn a_canary_that_does_not_decode_names_the_field() {
        let good = object(serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898}, "analysis": {"interval": "1m"}}));
        assert!(decode::<Canary>(&good).is_ok());
        let bad = object(serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": "ninety"}, "analysis": {"interval": "1m"}}));
        let why = decode::<Canary>(&bad).unwrap_err();
        assert!(why.starts_with("spec.service.port"), "{why}");
        let stub = stub(&bad).unwrap();
        assert_eq!(stub.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(stub.metadata.name.as_deref(), Some("podinfo"));
    }

    #[tokio::test]
    async fn an_object_that_stops_decoding_leaves_the_cache_and_is_reported() {
        use crate::api::MetricTemplate;
        use watcher::Event;
        let template = |query: serde_json::Value| -> DynamicObject {
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
