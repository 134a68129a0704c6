//! The caches of Deployments, DaemonSets, Services, ConfigMaps and Secrets hold only the
//! namespaces serin works in: those of the Canaries and of the MetricTemplates they reference
//! (`Index::wants`). Most objects of a cluster live elsewhere; cached, they cost the controller
//! memory in proportion to the cluster rather than to its Canaries.
//!
//! The watches stay cluster-wide (one connection per kind, not one per namespace) and drop
//! what they deliver from other namespaces before it is cached. When a Canary brings a new
//! namespace, its objects already exist and no event will bring them, so the watch lists
//! again (debounced: a burst of new Canaries costs one list). A cache's [`Coverage`] says
//! which namespaces it has listed: until it covers a Canary's namespace, a missing object
//! there may exist, and the Canary's reconcile waits rather than read the miss as absent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::controller::caches::index::Index;

/// How long a watch waits after a namespace is added before it lists again, so that the
/// Canaries created together (an `kubectl apply` of many namespaces) cost one list.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// The namespaces a cache has listed while they were wanted.
#[derive(Debug, Default)]
pub struct Coverage {
    /// `None`: the cache is not scoped (a controller confined to one namespace).
    complete: RwLock<Option<HashSet<String>>>,
    /// The wanted namespaces when the list in progress started.
    listing: Mutex<Option<HashSet<String>>>,
}

impl Coverage {
    /// A cache that holds whatever its watch delivers.
    pub fn everything() -> Coverage {
        Coverage::default()
    }

    /// A cache that holds nothing until its first list.
    fn scoped() -> Coverage {
        Coverage {
            complete: RwLock::new(Some(HashSet::new())),
            listing: Mutex::new(None),
        }
    }

    /// Whether every object of `namespace` is in the cache (once the cache is ready).
    pub fn covers(&self, namespace: &str) -> bool {
        self.complete
            .read()
            .is_ok_and(|c| c.as_ref().is_none_or(|set| set.contains(namespace)))
    }

    fn covers_all(&self, namespaces: &HashSet<String>) -> bool {
        namespaces.iter().all(|ns| self.covers(ns))
    }

    fn list_started(&self, wanted: HashSet<String>) {
        if let Ok(mut listing) = self.listing.lock() {
            *listing = Some(wanted);
        }
    }

    /// Called once the cache holds the list's objects.
    fn list_done(&self) {
        let listed = self.listing.lock().ok().and_then(|mut l| l.take());
        if let (Some(listed), Ok(mut complete)) = (listed, self.complete.write()) {
            *complete = Some(listed);
        }
    }

    /// Follows the watch events a reflector has applied to the cache.
    pub fn applied<K>(&self, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone) {
            self.list_done();
        }
    }
}

/// A watch of `api` that delivers only the objects of namespaces `index` wants (and every
/// deletion), and lists again when a namespace is added. Starts once the Canaries are listed.
/// Pass its events through a reflector and then to [`Coverage::applied`].
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    index: Arc<Index>,
) -> (
    Arc<Coverage>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let coverage = Arc::new(Coverage::scoped());
    let start = Scoped {
        api,
        config,
        added: index.namespaces_added(),
        index,
        coverage: coverage.clone(),
        events: None,
        listing: false,
        relist_when_listed: false,
    };
    let stream = futures::stream::unfold(start, |mut scoped| async move {
        if scoped.events.is_none() {
            scoped.index.synced().await;
            scoped.restart();
        }
        let event = scoped.next().await?;
        Some((event, scoped))
    });
    (coverage, stream)
}

struct Scoped<K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static> {
    api: Api<K>,
    config: watcher::Config,
    index: Arc<Index>,
    added: watch::Receiver<u64>,
    coverage: Arc<Coverage>,
    events: Option<BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>>,
    /// Between a list's `Init` and its `InitDone`.
    listing: bool,
    /// A namespace was added during the list: list again once it is done, rather than
    /// restart it (Canaries created steadily would otherwise keep a long list from ending).
    relist_when_listed: bool,
}

impl<K> Scoped<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    /// A fresh watch, which starts with a list.
    fn restart(&mut self) {
        self.added.borrow_and_update();
        self.listing = false;
        let events = watcher(self.api.clone(), self.config.clone()).default_backoff();
        self.events = Some(events.boxed());
    }

    /// Lists again unless every wanted namespace is covered already.
    fn relist_if_uncovered(&mut self) {
        if !self.coverage.covers_all(&self.index.wanted()) {
            tracing::debug!("a namespace with Canaries was added; listing again");
            self.restart();
        }
    }

    /// The next event to cache; `None` when the watch ended.
    async fn next(&mut self) -> Option<Result<watcher::Event<K>, watcher::Error>> {
        loop {
            if self.relist_when_listed && !self.listing {
                self.relist_when_listed = false;
                self.relist_if_uncovered();
            }
            let events = self.events.as_mut()?;
            let event = tokio::select! {
                biased;
                Ok(()) = self.added.changed() => None,
                event = events.next() => Some(event?),
            };
            let Some(event) = event else {
                if self.listing {
                    self.relist_when_listed = true;
                } else {
                    tokio::time::sleep(DEBOUNCE).await;
                    self.relist_if_uncovered();
                }
                continue;
            };
            match event {
                Ok(watcher::Event::Init) => {
                    self.listing = true;
                    self.coverage.list_started(self.index.wanted());
                    return Some(Ok(watcher::Event::Init));
                }
                // Cached by the reflector, and the coverage updated, before the next poll.
                Ok(watcher::Event::InitDone) => {
                    self.listing = false;
                    return Some(Ok(watcher::Event::InitDone));
                }
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) if !self.wanted(&o) => {
                }
                other => return Some(other),
            }
        }
    }

    fn wanted(&self, object: &K) -> bool {
        let namespace = object.meta().namespace.as_deref().unwrap_or_default();
        self.index.wants(namespace)
    }
}
