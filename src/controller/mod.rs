//! `serin controller`: watches Canaries and drives each release through the engine.
//!
//! - [`reconcile`]: one step of one Canary (observe → decide → apply → record), with the
//!   target it reads, the commands it obeys and the conditions it writes.
//! - [`probes`]: what the engine asks about before it moves: metric checks and webhooks.
//! - [`apply`] and [`router`]: the engine's effects on workloads, Services and routing objects.
//! - [`notify`]: what reaches people: the outbox, events, event webhooks and alerts.
//! - [`caches`]: the watches and what they keep (the Canary watch, the namespaces cached,
//!   the index of Canaries by target).
//! - [`runtime`]: what keeps the process going: leader election, the API rate limit, release
//!   slots, identifiers and serin's own metrics.

use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{Canary, MetricTemplate, TargetKind};
use crate::workload::configs::ConfigKind;

pub mod apply;
pub mod caches;
pub mod context;
pub mod error;
pub mod notify;
pub mod probes;
pub mod reconcile;
pub mod router;
pub mod runtime;

use caches::index::Index;
use caches::lean::Lean;
use caches::packed::Packed;
use caches::{canary_watch, namespaces, trim};
pub use context::{Config, Context, Stores};
use notify::{alerts, event_webhooks, events};
use runtime::telemetry;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Which objects of a kind the controller caches.
struct Caching<'a> {
    /// `--namespace`: the one namespace watched, or all.
    namespace: Option<&'a str>,
    /// The Canaries; the watch starts once they are listed.
    index: &'a Arc<Index>,
    /// Of a cluster-wide watch, keep only the namespaces the Canaries need (`scope`).
    scoped: bool,
}

/// A cache of `K`, what it covers, and the stream of its changes, to be driven by the
/// controller. `shape` trims each object before it is cached as a `C`: `K` itself, or
/// [`Packed`] (its JSON text) for the kinds there are several of per Canary.
fn cached<K, C>(
    client: &Client,
    caching: Caching<'_>,
    config: watcher::Config,
    shape: impl FnMut(&mut K) + Send + 'static,
    each: Option<fn(&kube::api::DynamicObject) -> Option<K>>,
) -> (
    Store<C>,
    Arc<namespaces::Coverage>,
    impl futures::Stream<Item = Result<C, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    C: Resource<DynamicType = ()> + From<K> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let Caching {
        namespace,
        index,
        scoped,
    } = caching;
    let (coverage, events) = if scoped && namespace.is_none() {
        let (coverage, events) =
            namespaces::watch(api::<Lean<K>>(client, None), config, index.clone());
        (coverage, events.map_ok(unwrapped).boxed())
    } else {
        // After the Canaries all the same: a target listed first would be cached trimmed.
        let index = index.clone();
        let events = match each {
            // A tenant's kind: one object that does not decode must not fail every list.
            Some(stub) => {
                let api = canary_watch::tolerant_api::<K>(client, namespace);
                canary_watch::each(api, config, stub, skipped::<K>).boxed()
            }
            None => watcher(api::<Lean<K>>(client, namespace), config)
                .map_ok(unwrapped)
                .boxed(),
        }
        .default_backoff();
        let events = futures::stream::once(async move {
            index.synced().await;
            events
        })
        .flatten();
        (Arc::new(namespaces::Coverage::everything()), events.boxed())
    };
    // Both watches above decode without managedFields (`Lean`, `Tolerant`): nothing to drop.
    let events = events.modify(shape).map_ok(|event| mapped(event, C::from));
    let covered = coverage.clone();
    let stream = reflector(writer, events)
        .inspect_ok(move |event| covered.applied(event))
        .touched_objects();
    (reader, coverage, errors_kept_out::<K, _>(stream))
}

/// A watch event of a [`Lean`] object as one of the object itself.
fn unwrapped<K>(event: watcher::Event<Lean<K>>) -> watcher::Event<K> {
    mapped(event, Lean::into_inner)
}

/// A watch event with `f` applied to its object.
fn mapped<A, B>(event: watcher::Event<A>, f: impl FnOnce(A) -> B) -> watcher::Event<B> {
    use watcher::Event;
    match event {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// The stream without its errors, each logged. The controller polls all its watches as one
/// stream and backs the whole of it off on any error, so one watch's error (a 410 Gone after
/// etcd compaction, a dropped connection) would stop every cache from following its watch,
/// for longer at each further error: after a compaction, minutes with every cache frozen.
/// Each watch backs off on its own errors already (`default_backoff`), so here they are only
/// logged.
fn errors_kept_out<K: Resource<DynamicType = ()>, T: Send + 'static>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static {
    let kind = K::kind(&());
    stream.filter_map(move |item| {
        let kept = match item {
            Ok(object) => Some(Ok(object)),
            Err(e) => {
                let expired = matches!(&e, watcher::Error::WatchError(s) if s.code == 410);
                if expired {
                    tracing::info!(%kind, "watch expired (410 Gone); listing again");
                } else {
                    tracing::warn!(%kind, error = %e, "watch failed; retrying");
                }
                None
            }
        };
        futures::future::ready(kept)
    })
}

/// A MetricTemplate with the object's identity and nothing else, for its removal from the
/// cache when it stops decoding.
fn template_stub(object: &kube::api::DynamicObject) -> Option<MetricTemplate> {
    let mut template: MetricTemplate = serde_json::from_value(serde_json::json!({
        "apiVersion": crate::api::API_VERSION, "kind": "MetricTemplate", "metadata": {},
        "spec": {"provider": {"type": "prometheus"}, "query": ""}
    }))
    .ok()?;
    template.metadata = object.metadata.clone();
    Some(template)
}

/// An object of a cached kind that does not decode: logged, and left out of the cache.
async fn skipped<K: Resource<DynamicType = ()>>(object: kube::api::DynamicObject, why: String) {
    tracing::warn!(
        kind = %K::kind(&()),
        namespace = object.namespace().unwrap_or_default(),
        name = object.name_any(),
        error = %why,
        "object does not decode; skipped"
    );
}

/// An empty cache that nothing fills, marked as listed so that it never holds the controller
/// back: for a kind the controller's settings leave unwatched.
fn unwatched<K>() -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// Caches an object as the watch delivers it (less `managedFields`).
fn as_delivered<K>(_: &mut K) {}

/// Secrets serin may read: all but Helm's release records (`helm.sh/release.v1`, up to 1 MiB
/// each and usually the most numerous Secrets of a cluster), which no pod mounts and no
/// provider references.
const SECRETS_SERIN_READS: &str = "type!=helm.sh/release.v1";

/// Canaries in the object's namespace whose target is `kind/name`, or that own the object
/// (the primary, the generated Services).
fn canaries_for(
    index: &Index,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: TargetKind,
) -> Vec<ObjectRef<Canary>> {
    concerned(meta, |namespace, name| {
        index.by_target(namespace, kind, name)
    })
}

/// Canaries whose targets use the ConfigMap or Secret, or that own it (a `-primary` copy).
fn config_users(
    index: &Index,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: ConfigKind,
) -> Vec<ObjectRef<Canary>> {
    concerned(meta, |namespace, name| {
        index.using_config(namespace, kind, name)
    })
}

/// The Canaries `indexed` finds for the object's namespace and name, and those that own it.
fn concerned(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    indexed: impl FnOnce(&str, &str) -> Vec<ObjectRef<Canary>>,
) -> Vec<ObjectRef<Canary>> {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let mut refs = indexed(namespace, name);
    for owner in canary_owners(meta) {
        refs.push(ObjectRef::new(&owner.name).within(namespace));
    }
    refs
}

/// The object's owner references to Canaries (a `-primary` copy has one).
pub(crate) fn canary_owners(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> impl Iterator<Item = &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "Canary")
}

/// How long the caches may take to fill before the controller says which have not.
const STARTUP_WARNING: std::time::Duration = std::time::Duration::from_secs(30);

/// Reports ready once the caches are synced, then Flagger's `flagger_canary_total` every 10 s.
async fn count_canaries(
    canaries: Store<Canary>,
    ctx: Arc<Context>,
    health: Arc<telemetry::server::Health>,
) {
    // A controller whose caches never fill reconciles nothing and, at debug level too, says
    // nothing: which lists are still missing is said every half minute, at warn.
    let started = tokio::time::Instant::now();
    let mut warned = started;
    while !ctx.stores.ready() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if warned.elapsed() >= STARTUP_WARNING {
            warned = tokio::time::Instant::now();
            tracing::warn!(unlisted = ?ctx.stores.unlisted(), waited = ?started.elapsed(),
                "caches not filled yet: no Canary is reconciled until each kind is listed \
                 (check the API server's health and serin's RBAC for these kinds)");
        }
    }
    health.set_ready();
    loop {
        let mut per_ns = std::collections::BTreeMap::<String, i64>::new();
        for c in canaries.state() {
            *per_ns.entry(c.namespace().unwrap_or_default()).or_default() += 1;
        }
        ctx.telemetry.canaries(&per_ns);
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

/// The controller's Kubernetes clients.
pub struct Clients {
    /// Rate-limited by `--kubeconfig-qps` and `--kubeconfig-burst`: everything else.
    pub api: Client,
    /// Not rate-limited: the outbox's removals of delivered announcements (at most two small
    /// status patches per transition). Queued behind bulk work, they would widen the window
    /// in which a controller killed after sending an alert sends it again after its restart.
    pub outbox: Client,
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    clients: Clients,
    config: Config,
    telemetry: Arc<telemetry::Telemetry>,
    health: Arc<telemetry::server::Health>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Clients {
        api: client,
        outbox,
    } = clients;
    // The index of Canaries, filled by the Canary watch below; the Deployment cache consults
    // it to keep pod templates only where a Canary needs them.
    let index = Arc::new(Index::default());
    // The Canary cache: filled by the Canary watch below, read by the reconciles.
    let (canaries, canary_writer) = reflector::store();
    let (stores, changes) = watch_what_canaries_use(&client, &config, &index, canaries.clone());
    let ns = config.namespace.clone();
    let selector = config.canary_selector.clone();
    let ctx = context(&client, outbox, config, telemetry, stores)?;

    // The Canary watch, its cache, and the index the other watches look Canaries up in.
    let indexing = index.clone();
    let canary_events = reflector(
        canary_writer,
        canary_watch::watch(&client, ns.as_deref(), selector.as_deref(), ctx.clone())
            .inspect_ok(move |event| indexing.apply(event)),
    )
    .default_backoff()
    .applied_objects();
    // serin's own status writes wake no reconcile: the one that wrote decided its next look.
    let written = ctx.written.clone();
    let woken = ctx.telemetry.triggers("Canary");
    let canary_events = canary_events.try_filter(move |canary| {
        let news = !written.cached(canary);
        if news {
            woken.inc();
        }
        futures::future::ready(news)
    });
    let canary_events = errors_kept_out::<Canary, _>(canary_events);
    let concurrency = ctx.config.max_concurrent_reconciles;
    let controller = Controller::for_stream(canary_events, canaries.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        // A freed release slot: the releases waiting for one, at once.
        .reconcile_on(ctx.slots.wakes());
    tokio::spawn(count_canaries(canaries, ctx.clone(), health));
    changes
        .wake(controller, &index, &ctx.telemetry)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
    tracing::info!("controller stopped");
    Ok(())
}

/// A watch's changes, as the controller takes them.
type ChangeStream<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The changes of everything a Canary uses, each to wake the Canaries it concerns.
struct Changes {
    deployments: ChangeStream<Packed<Deployment>>,
    daemon_sets: ChangeStream<Packed<DaemonSet>>,
    stateful_sets: ChangeStream<Packed<StatefulSet>>,
    services: ChangeStream<Packed<Service>>,
    configmaps: ChangeStream<ConfigMap>,
    secrets: ChangeStream<Secret>,
    templates: ChangeStream<MetricTemplate>,
}

impl Changes {
    /// `controller`, woken by each change for the Canaries it concerns (from `index`); each
    /// wake counted by the kind that changed (`serin_reconcile_triggers_total`).
    fn wake(
        self,
        controller: Controller<Canary>,
        index: &Arc<Index>,
        telemetry: &telemetry::Telemetry,
    ) -> Controller<Canary> {
        let [
            by_deployment,
            by_daemon_set,
            by_stateful_set,
            by_service,
            by_configmap,
            by_secret,
            by_template,
        ] = std::array::from_fn(|_| index.clone());
        let counted = |kind: &str| {
            let counter = telemetry.triggers(kind);
            move |refs: Vec<ObjectRef<Canary>>| {
                counter.inc_by(refs.len() as u64);
                refs
            }
        };
        let [
            deployment,
            daemon_set,
            stateful_set,
            service,
            configmap,
            secret,
            template,
        ] = [
            "Deployment",
            "DaemonSet",
            "StatefulSet",
            "Service",
            "ConfigMap",
            "Secret",
            "MetricTemplate",
        ]
        .map(counted);
        controller
            .watches_stream(self.deployments, move |d: Packed<Deployment>| {
                deployment(canaries_for(
                    &by_deployment,
                    &d.metadata,
                    TargetKind::Deployment,
                ))
            })
            .watches_stream(self.daemon_sets, move |d: Packed<DaemonSet>| {
                daemon_set(canaries_for(
                    &by_daemon_set,
                    &d.metadata,
                    TargetKind::DaemonSet,
                ))
            })
            .watches_stream(self.stateful_sets, move |s: Packed<StatefulSet>| {
                stateful_set(canaries_for(
                    &by_stateful_set,
                    &s.metadata,
                    TargetKind::StatefulSet,
                ))
            })
            .watches_stream(self.services, move |s: Packed<Service>| {
                service(canaries_for(&by_service, &s.metadata, TargetKind::Service))
            })
            // A changed ConfigMap or Secret concerns the Canaries whose targets use it (as
            // their reconciles found), and the Canary whose `-primary` copy it is.
            .watches_stream(self.configmaps, move |c: ConfigMap| {
                configmap(config_users(
                    &by_configmap,
                    &c.metadata,
                    ConfigKind::ConfigMap,
                ))
            })
            .watches_stream(self.secrets, move |s: Secret| {
                secret(config_users(&by_secret, &s.metadata, ConfigKind::Secret))
            })
            .watches_stream(self.templates, move |t: MetricTemplate| {
                template(
                    by_template.using_template(&t.namespace().unwrap_or_default(), &t.name_any()),
                )
            })
    }
}

/// The caches of the workloads, Services, ConfigMaps, Secrets and MetricTemplates Canaries
/// use (beside `canaries`, the Canary cache), and the streams of their changes.
fn watch_what_canaries_use(
    client: &Client,
    config: &Config,
    index: &Arc<Index>,
    canaries: Store<Canary>,
) -> (Stores, Changes) {
    let ns = config.namespace.as_deref();
    let concerns = index.clone();
    let scoped = || Caching {
        namespace: ns,
        index,
        scoped: true,
    };
    let (deployments, deployments_cover, deployment_events) = cached::<Deployment, _>(
        client,
        scoped(),
        Default::default(),
        move |d| trim::shape(&concerns, d),
        None,
    );
    let (daemon_sets, daemon_sets_cover, daemon_set_events) =
        cached::<DaemonSet, _>(client, scoped(), Default::default(), as_delivered, None);
    let (stateful_sets, stateful_sets_cover, stateful_set_events) =
        cached::<StatefulSet, _>(client, scoped(), Default::default(), as_delivered, None);
    let (services, services_cover, service_events) =
        cached::<Service, _>(client, scoped(), Default::default(), as_delivered, None);
    let (configmaps, configmaps_cover, configmap_events) =
        cached::<ConfigMap, _>(client, scoped(), Default::default(), as_delivered, None);
    // Secrets are watched only for config tracking. Without it nothing needs them all:
    // the one a MetricTemplate or AlertProvider names is read when used, and the RBAC
    // grants no list or watch of Secrets (`rbac::CREDENTIALS`).
    let (secrets, secrets_cover, secret_events) = if config.config_tracking {
        let secrets_read = watcher::Config::default().fields(SECRETS_SERIN_READS);
        let (store, cover, events) =
            cached::<Secret, _>(client, scoped(), secrets_read, as_delivered, None);
        (store, cover, events.boxed())
    } else {
        (
            unwatched::<Secret>(),
            Arc::new(namespaces::Coverage::everything()),
            futures::stream::empty().boxed(),
        )
    };
    // Templates may be referenced across namespaces; a controller confined to one namespace
    // (and its RBAC) sees only that namespace's templates. Few and small: all are cached.
    let every_template = Caching {
        scoped: false,
        ..scoped()
    };
    let (templates, _, template_events) = cached::<MetricTemplate, _>(
        client,
        every_template,
        Default::default(),
        as_delivered,
        Some(template_stub),
    );
    let stores = Stores {
        canaries,
        deployments,
        daemon_sets,
        stateful_sets,
        services,
        configmaps,
        secrets,
        templates,
        fetched: Default::default(),
        index: index.clone(),
        coverage: vec![
            deployments_cover,
            daemon_sets_cover,
            stateful_sets_cover,
            services_cover,
            configmaps_cover,
            secrets_cover,
        ],
    };
    let changes = Changes {
        deployments: deployment_events.boxed(),
        daemon_sets: daemon_set_events.boxed(),
        stateful_sets: stateful_set_events.boxed(),
        services: service_events.boxed(),
        configmaps: configmap_events.boxed(),
        secrets: secret_events,
        templates: template_events.boxed(),
    };
    (stores, changes)
}

/// What every reconcile shares: HTTP client, metric analysis (over the template and Secret
/// caches), events and alerts.
fn context(
    client: &Client,
    outbox: Client,
    config: Config,
    telemetry: Arc<telemetry::Telemetry>,
    stores: Stores,
) -> anyhow::Result<Arc<Context>> {
    let http = crate::outbound::client_builder().build()?;
    let analyzer = crate::analysis::Analyzer::new(
        client.clone(),
        config.metrics_server.clone(),
        config.mesh_provider,
    )?
    .with_clock(config.clock)
    // Without config tracking the Secret store is empty: credentials are read with a GET.
    .with_caches(
        stores.templates.clone(),
        config.config_tracking.then(|| stores.secrets.clone()),
    );
    let event_hooks = event_webhooks::EventHooks::start(http.clone(), config.event_webhook.clone());
    let notifier = config.notifier.clone();
    let events = events::Events::new(client.clone(), Some(event_hooks)).with_clock(config.clock);
    let routing = apply::routing_cache::RoutingCache::new(client.clone(), config.namespace.clone());
    Ok(Arc::new(Context {
        routing,
        groups: Default::default(),
        slots: Default::default(),
        analyzer,
        client: client.clone(),
        config,
        stores,
        events,
        alerts: alerts::Alerts::start(
            client.clone(),
            http.clone(),
            alerts::Destination::global(&notifier),
            telemetry.clone(),
        ),
        http,
        telemetry: telemetry.clone(),
        written: Default::default(),
        expected: Default::default(),
        retries: Default::default(),
        commands_cleared: Default::default(),
        deliveries: Default::default(),
        outbox,
        background: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    /// Without config tracking the Secret cache is never filled: it must not hold back the
    /// readiness that waits for every cache's first list.
    #[test]
    fn an_unwatched_cache_is_ready_and_empty() {
        let store = unwatched::<Secret>();
        assert!(matches!(
            store.wait_until_ready().now_or_never(),
            Some(Ok(()))
        ));
        assert!(store.state().is_empty());
    }
}
