//! What every reconcile shares: the client, the flags, the caches, and the little memory the
//! controller keeps between reconciles (what it wrote last, so a stale cache is never mistaken
//! for the truth).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use crate::api::{Canary, CanaryStatus, MetricTemplate, Provider};
use crate::controller::caches::packed::Packed;
use crate::controller::notify::events::Events;
use crate::controller::runtime::telemetry::Telemetry;

/// The controller's flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh_provider: Provider,
    pub metrics_server: String,
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// `--canary-selector`: reconcile only the Canaries with these labels.
    pub canary_selector: Option<String>,
    /// `--max-progressing`, `--max-progressing-per-namespace`.
    pub concurrency: crate::controller::runtime::slots::Limits,
    pub selector_labels: Vec<String>,
    pub config_tracking: bool,
    pub include_label_prefixes: Vec<String>,
    pub min_interval: Duration,
    /// `--max-concurrent-reconciles` (0 = unbounded).
    pub max_concurrent_reconciles: u16,
    pub router: crate::controller::router::Options,
    /// Flagger's `-event-webhook`: receives the events of Canaries without event webhooks.
    pub event_webhook: Option<String>,
    /// Flagger's `-no-cross-namespace-refs`: refuse references to other namespaces.
    pub no_cross_namespace_refs: bool,
    /// `--cluster-name`: a `Cluster` field in every alert.
    pub cluster_name: Option<String>,
    /// The global notifier (`--slack-*`, `--msteams-*`), for Canaries without alerts.
    pub notifier: crate::controller::notify::alerts::GlobalFlags,
    /// Where every step reads the time of day (tests run it in virtual time).
    pub clock: crate::clock::Clock,
}

/// Reflector caches of what serin reads on every step.
#[derive(Clone)]
pub struct Stores {
    /// The workload kinds and Services: two to four per Canary, kept as their text (see
    /// `packed`); read them with `packed::get`.
    pub deployments: Store<Packed<Deployment>>,
    pub daemon_sets: Store<Packed<DaemonSet>>,
    pub stateful_sets: Store<Packed<StatefulSet>>,
    pub services: Store<Packed<Service>>,
    pub configmaps: Store<ConfigMap>,
    /// Empty without config tracking: Secrets are then not watched (see `rbac::CREDENTIALS`).
    pub secrets: Store<Secret>,
    pub templates: Store<MetricTemplate>,
    /// The Canaries this controller reconciles (release slots count them).
    pub canaries: Store<crate::api::Canary>,
    /// Whole copies of targets the Deployment cache holds trimmed (see `trim`).
    pub fetched: std::sync::Arc<crate::controller::caches::trim::Fetched>,
    /// The Canaries by target, namespace, template and used config (see `index`).
    pub index: std::sync::Arc<crate::controller::caches::index::Index>,
    /// The namespaces each scoped cache has listed (see `scope`).
    pub coverage: Vec<std::sync::Arc<crate::controller::caches::namespaces::Coverage>>,
}

impl Stores {
    /// Whether every cache has listed its objects once: deciding on a half-filled cache would
    /// report a target "not found" that exists. Checked without waiting: a reconcile that
    /// waited here could hold its Canary long after the caches fill (a waiter on a store's
    /// readiness is not reliably woken), so the caller requeues shortly instead.
    pub fn ready(&self) -> bool {
        self.unlisted().is_empty()
    }

    /// The caches (by kind) that have not listed their objects yet, with the Canaries'.
    pub fn unlisted(&self) -> Vec<&'static str> {
        fn listed<K>(store: &Store<K>) -> bool
        where
            K: kube::Resource + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
        }
        [
            ("Canary", listed(&self.canaries)),
            ("Deployment", listed(&self.deployments)),
            ("DaemonSet", listed(&self.daemon_sets)),
            ("StatefulSet", listed(&self.stateful_sets)),
            ("Service", listed(&self.services)),
            ("ConfigMap", listed(&self.configmaps)),
            ("Secret", listed(&self.secrets)),
            ("MetricTemplate", listed(&self.templates)),
        ]
        .into_iter()
        .filter_map(|(kind, listed)| (!listed).then_some(kind))
        .collect()
    }

    /// Whether the caches hold every object of `namespace`: not yet when its first Canary
    /// was just created, until the scoped caches have listed it.
    pub fn cover(&self, namespace: &str) -> bool {
        self.coverage.iter().all(|c| c.covers(namespace))
    }
}

/// The status serin wrote last for a Canary, with the resourceVersion the write produced.
#[derive(Clone, Debug)]
struct Written {
    resource_version: u64,
    /// Kept after the cache shows the write: a reconcile dispatched before it did holds an
    /// older copy, and decides on this one.
    status: CanaryStatus,
}

/// The status serin wrote last per Canary uid: the reconciles' status writes and the outbox's
/// removals of delivered announcements (which run in the background, so shared).
#[derive(Clone, Debug, Default)]
pub struct WrittenStatuses {
    statuses: std::sync::Arc<Mutex<HashMap<String, Written>>>,
    writers: std::sync::Arc<Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>>,
}

impl WrittenStatuses {
    /// Records a write that produced `version`, unless a later write is known already (the
    /// outbox's removals answer in any order with the reconciles' writes).
    pub fn record(&self, uid: &str, version: u64, status: CanaryStatus) {
        let Ok(mut map) = self.statuses.lock() else {
            return;
        };
        if map.get(uid).is_some_and(|w| w.resource_version > version) {
            return;
        }
        map.insert(
            uid.to_string(),
            Written {
                resource_version: version,
                status,
            },
        );
    }

    /// The status serin last wrote for `uid` and the resourceVersion it produced, when the
    /// copy a reconcile holds (at resourceVersion `cached`) is older. `None` when that copy
    /// holds the write or a later one.
    pub fn newer_than(&self, uid: &str, cached: Option<u64>) -> Option<(u64, CanaryStatus)> {
        let map = self.statuses.lock().ok()?;
        let written = map.get(uid)?;
        if cached.is_some_and(|c| c >= written.resource_version) {
            return None;
        }
        Some((written.resource_version, written.status.clone()))
    }

    /// Held while writing the status of Canary `uid`: a step's write and the outbox's removal
    /// of delivered announcements (each records the resourceVersion it produced) take turns,
    /// so the one that follows is conditional on the version the other produced. Unordered,
    /// a step's write raced a removal and was refused as stale about once per Canary per
    /// release (a 409, a GET, the write again).
    pub async fn writing(&self, uid: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = self
            .writers
            .lock()
            .ok()?
            .entry(uid.to_string())
            .or_default()
            .clone();
        Some(lock.lock_owned().await)
    }

    /// `canary` as the watch delivered it to the cache: whether it is serin's own last status
    /// write, which is no news to the reconcile that wrote it (that one scheduled its next
    /// look already).
    pub fn cached(&self, canary: &Canary) -> bool {
        let (Some(uid), Some(version)) = (canary.uid(), canary.resource_version()) else {
            return false;
        };
        let Ok(version) = version.parse::<u64>() else {
            return false;
        };
        self.statuses
            .lock()
            .ok()
            .and_then(|map| map.get(&uid).map(|w| w.resource_version == version))
            .unwrap_or(false)
    }

    /// A deleted Canary: its last status and its writers' turn.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.statuses.lock() {
            map.remove(uid);
        }
        if let Ok(mut map) = self.writers.lock() {
            map.remove(uid);
        }
    }
}

/// Per-Canary exponential backoff of reconcile errors.
#[derive(Debug, Default)]
pub struct Retries {
    failures: Mutex<HashMap<String, u32>>,
}

impl Retries {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    /// The delay before retrying the Canary `uid` after one more failure.
    pub fn next(&self, uid: &str) -> Duration {
        let Ok(mut map) = self.failures.lock() else {
            return Self::FIRST;
        };
        let n = map.entry(uid.to_string()).or_default();
        let delay = Self::FIRST
            .checked_mul(1u32 << (*n).min(16))
            .map_or(Self::MAX, |d| d.min(Self::MAX));
        *n = n.saturating_add(1);
        delay
    }

    /// A reconcile of `uid` completed: the next failure starts from the first delay again.
    pub fn reset(&self, uid: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(uid);
        }
    }
}

pub struct Context {
    pub client: Client,
    pub retries: Retries,
    pub config: Config,
    pub stores: Stores,
    pub events: Events,
    pub alerts: crate::controller::notify::alerts::Alerts,
    pub http: reqwest::Client,
    pub analyzer: crate::analysis::Analyzer,
    pub telemetry: std::sync::Arc<Telemetry>,
    /// Last status written per Canary uid.
    pub written: WrittenStatuses,
    /// Lowest generation the cache must show for a workload serin changed: until it does,
    /// the workload counts as not ready.
    pub expected: Mutex<HashMap<ObjectRef<DynamicObject>, i64>>,
    /// resourceVersion of each Canary (by uid) once serin cleared its command annotation: a
    /// cached copy older than that still shows the command, which was carried out.
    pub commands_cleared: Mutex<HashMap<String, u64>>,
    /// Transitions whose events and alerts this process delivers or has delivered.
    pub deliveries: crate::controller::notify::outbox::Deliveries,
    /// The client of the outbox's bookkeeping, not rate-limited (`controller::Clients`).
    pub outbox: Client,
    /// Webhooks and metric analyses still running after their reconcile gave up waiting.
    pub background: crate::controller::reconcile::background::Background,
    /// Release slots granted by this process (see `concurrency`).
    pub slots: crate::controller::runtime::slots::Slots,
    /// The routing objects' watches and serin's last apply of each (see `routing_cache`).
    pub routing: crate::controller::apply::routing_cache::RoutingCache,
    /// One lock per release group (see `reconcile::group`).
    pub groups: crate::controller::reconcile::group::Locks,
}

impl Context {
    /// Remembers the generation serin's write produced (`written`, as the API answered).
    pub fn expect_generation<K: Resource<DynamicType = ()>>(&self, written: &K) {
        let key = ObjectRef::from_obj(written).erase();
        if let (Some(g), Ok(mut map)) = (written.meta().generation, self.expected.lock()) {
            map.insert(key, g);
        }
    }

    /// `true` when the cache (`cached`) has not yet seen serin's last write of this object.
    pub fn is_stale<K: Resource<DynamicType = ()>>(&self, cached: &K) -> bool {
        let Ok(mut map) = self.expected.lock() else {
            return false;
        };
        let key = ObjectRef::from_obj(cached).erase();
        match map.get(&key) {
            Some(want) if cached.meta().generation.unwrap_or(0) < *want => true,
            Some(_) => {
                map.remove(&key);
                false
            }
            None => false,
        }
    }
}

/// `ObjectRef` of a namespaced object in a cache.
pub fn key<K: kube::Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectRef<K> {
    ObjectRef::new(name).within(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_one_second_to_five_minutes_per_canary() {
        let r = Retries::default();
        let delays: Vec<u64> = (0..11).map(|_| r.next("a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(r.next("b").as_secs(), 1, "per Canary");
        r.reset("a");
        assert_eq!(r.next("a").as_secs(), 1, "reset by a completed reconcile");
    }

    /// A step's status write and an announcement removal of the same Canary take turns;
    /// other Canaries' writers do not wait.
    #[test]
    fn writers_of_one_canary_take_turns() {
        use futures::FutureExt;
        let written = WrittenStatuses::default();
        let first = written.writing("a").now_or_never().flatten().expect("free");
        assert!(
            written.writing("a").now_or_never().is_none(),
            "the second writer of a waits"
        );
        assert!(written.writing("b").now_or_never().flatten().is_some());
        drop(first);
        assert!(written.writing("a").now_or_never().flatten().is_some());
        // A deleted Canary's turn goes with it.
        let held = written.writing("a").now_or_never().flatten();
        written.forget("a");
        assert!(written.writing("a").now_or_never().flatten().is_some());
        drop(held);
    }

    #[test]
    fn only_serins_own_last_write_is_recognised_as_its_own() {
        let written = WrittenStatuses::default();
        let at =
            |uid: &str, version: &str| {
                let mut canary = Canary::new("podinfo", serde_json::from_value(serde_json::json!({
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}
            })).unwrap());
                canary.metadata.uid = Some(uid.into());
                canary.metadata.resource_version = Some(version.into());
                canary
            };
        assert!(!written.cached(&at("a", "7")), "nothing written yet");
        written.record("a", 7, CanaryStatus::default());
        assert!(written.cached(&at("a", "7")));
        assert!(!written.cached(&at("a", "8")), "someone's later change");
        assert!(!written.cached(&at("b", "7")), "another Canary");
        assert!(!written.cached(&at("a", "x7")), "not a number");
    }

    #[test]
    fn a_written_status_is_current_for_a_copy_older_than_the_write() {
        let written = WrittenStatuses::default();
        let status = |spec: &str| CanaryStatus {
            last_applied_spec: Some(spec.into()),
            ..CanaryStatus::default()
        };
        written.record("a", 7, status("written"));
        let (version, newer) = written.newer_than("a", Some(6)).unwrap();
        assert_eq!(
            (version, newer.last_applied_spec.as_deref()),
            (7, Some("written"))
        );
        assert!(written.newer_than("a", Some(7)).is_none(), "caught up");
        assert!(written.newer_than("b", Some(1)).is_none(), "another Canary");
        // An answer that arrives late does not replace a later write.
        written.record("a", 5, status("older"));
        assert_eq!(written.newer_than("a", Some(6)).unwrap().0, 7);
    }
}
