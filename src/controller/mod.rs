//! `serin controller`: watches Canaries and drives each release through the engine.
//!
//! - [`reconcile`]: one step of one Canary (observe → decide → apply → status → events).
//! - [`apply`]: the I/O of the engine's effects on workloads and Services.
//! - [`router`]: per-provider routing objects (the seam for meshes and ingresses).
//! - [`webhooks`], [`metric_analysis`]: the probes the engine asks for.
//! - [`target`]: the released workload and its primary, read from the caches.
//! - [`events`], [`conditions`], [`telemetry`]: what a platform engineer sees.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{Canary, MetricTemplate, TargetKind};

pub mod alerts;
pub mod apply;
pub mod commands;
pub mod conditions;
pub mod context;
pub mod error;
pub mod event_webhooks;
pub mod events;
pub mod leader;
pub mod metric_analysis;
pub mod reconcile;
pub mod router;
pub mod target;
pub mod telemetry;
pub mod throttle;
pub mod token;
pub mod webhooks;

pub use context::{Config, Context, Stores};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A cache of `K` and the stream of its changes, to be driven by the controller.
fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api::<K>(client, namespace), config)
        // serin never reads managedFields, often the largest part of an object's metadata.
        .modify(|object: &mut K| object.meta_mut().managed_fields = None);
    let stream = reflector(writer, events)
        .default_backoff()
        .touched_objects();
    (reader, stream)
}

/// Secrets serin may read: all but Helm's release records (`helm.sh/release.v1`, up to 1 MiB
/// each and usually the most numerous Secrets of a cluster), which no pod mounts and no
/// provider references.
const SECRETS_SERIN_READS: &str = "type!=helm.sh/release.v1";

/// Canaries in `namespace` whose target is `kind/name`, or that own the object.
fn canaries_for(
    canaries: &Store<Canary>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: TargetKind,
) -> Vec<ObjectRef<Canary>> {
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let owners: Vec<&str> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "Canary")
        .map(|o| o.name.as_str())
        .collect();
    canaries
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|c| {
            let r = &c.spec.target_ref;
            (r.kind == kind && r.name == name) || owners.contains(&c.name_any().as_str())
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Every Canary of a namespace (a ConfigMap or Secret changed: cheap to look, rare).
fn canaries_in(canaries: &Store<Canary>, namespace: Option<String>) -> Vec<ObjectRef<Canary>> {
    canaries
        .state()
        .iter()
        .filter(|c| c.namespace() == namespace)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Reports ready once the caches are synced, then Flagger's `flagger_canary_total` every 10 s.
async fn count_canaries(
    canaries: Store<Canary>,
    ctx: Arc<Context>,
    health: Arc<telemetry::server::Health>,
) {
    while !ctx.stores.ready() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
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

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    config: Config,
    telemetry: Arc<telemetry::Telemetry>,
    health: Arc<telemetry::server::Health>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let ns = config.namespace.clone();
    let ns = ns.as_deref();
    let (deployments, deployment_events) = cached::<Deployment>(&client, ns, Default::default());
    let (daemon_sets, daemon_set_events) = cached::<DaemonSet>(&client, ns, Default::default());
    let (services, service_events) = cached::<Service>(&client, ns, Default::default());
    let (configmaps, configmap_events) = cached::<ConfigMap>(&client, ns, Default::default());
    let secrets_read = watcher::Config::default().fields(SECRETS_SERIN_READS);
    let (secrets, secret_events) = cached::<Secret>(&client, ns, secrets_read);
    // Templates may be referenced across namespaces; a controller confined to one namespace
    // (and its RBAC) sees only that namespace's templates.
    let (templates, template_events) = cached::<MetricTemplate>(&client, ns, Default::default());

    let stores = Stores {
        deployments,
        daemon_sets,
        services,
        configmaps,
        secrets,
        templates,
    };
    let ctx = context(&client, config, telemetry, stores)?;

    let controller = Controller::new(api::<Canary>(&client, ns), watcher::Config::default());
    let canaries = controller.store();
    let by_deployment = canaries.clone();
    let by_daemon_set = canaries.clone();
    let by_service = canaries.clone();
    let by_configmap = canaries.clone();
    let by_secret = canaries.clone();
    let by_template = canaries.clone();
    tokio::spawn(count_canaries(canaries.clone(), ctx.clone(), health));
    controller
        .watches_stream(deployment_events, move |d: Deployment| {
            canaries_for(&by_deployment, &d.metadata, TargetKind::Deployment)
        })
        .watches_stream(daemon_set_events, move |d: DaemonSet| {
            canaries_for(&by_daemon_set, &d.metadata, TargetKind::DaemonSet)
        })
        .watches_stream(service_events, move |s: Service| {
            canaries_for(&by_service, &s.metadata, TargetKind::Service)
        })
        .watches_stream(configmap_events, move |c: ConfigMap| {
            canaries_in(&by_configmap, c.namespace())
        })
        .watches_stream(secret_events, move |s: Secret| {
            canaries_in(&by_secret, s.namespace())
        })
        .watches_stream(template_events, move |t: MetricTemplate| {
            canaries_using_template(&by_template, &t)
        })
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

/// The Canaries whose metrics reference this MetricTemplate.
fn canaries_using_template(canaries: &Store<Canary>, t: &MetricTemplate) -> Vec<ObjectRef<Canary>> {
    let (ns, name) = (t.namespace(), t.name_any());
    canaries
        .state()
        .iter()
        .filter(|c| {
            c.spec.analysis().is_some_and(|a| {
                a.metrics().iter().any(|m| {
                    m.template_ref.as_ref().is_some_and(|r| {
                        r.name == name && r.namespace.clone().or_else(|| c.namespace()) == ns
                    })
                })
            })
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// What every reconcile shares: HTTP client, metric analysis (over the template and Secret
/// caches), events and alerts.
fn context(
    client: &Client,
    config: Config,
    telemetry: Arc<telemetry::Telemetry>,
    stores: Stores,
) -> anyhow::Result<Arc<Context>> {
    let rustls_provider = rustls::crypto::ring::default_provider().install_default();
    if rustls_provider.is_err() {
        tracing::debug!("a TLS crypto provider was already installed");
    }
    let http = reqwest::Client::builder()
        .user_agent(concat!("serin/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let analyzer = crate::analysis::Analyzer::new(
        client.clone(),
        config.metrics_server.clone(),
        config.mesh_provider,
    )?
    .with_caches(stores.templates.clone(), stores.secrets.clone());
    let event_hooks = event_webhooks::EventHooks::start(http.clone(), config.event_webhook.clone());
    let notifier = config.notifier.clone();
    Ok(Arc::new(Context {
        analyzer,
        client: client.clone(),
        config,
        stores,
        events: events::Events::new(client.clone(), Some(event_hooks)),
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
    }))
}
