//! Which Canaries a changed object concerns, without scanning every Canary: the Canaries
//! indexed by target, by MetricTemplate and by used ConfigMap or Secret, kept in step with the
//! Canary watch.
//!
//! kube's reflector store has no secondary indexes; without one, every Deployment, Service,
//! ConfigMap or Secret event in the cluster walked the whole Canary list (at 10,000 Canaries
//! and a busy cluster, most of the controller's CPU). The index follows the watch's events:
//! a re-list (`Init` … `InitDone`) builds a fresh index that replaces the old one whole, so
//! Canaries deleted while the watch was down do not linger.
//!
//! ConfigMaps and Secrets are indexed by the Canaries whose targets use them, as each
//! reconcile finds them in the target's pod template: a change to one of the thousands of
//! other ConfigMaps and Secrets of a namespace wakes no Canary.
//!
//! It also says which namespaces serin works in (those of the Canaries and of the
//! MetricTemplates they reference), for the caches that hold only those (`scope`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use tokio::sync::{Notify, watch};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::{Canary, TargetKind};
use crate::workload::configs::ConfigKind;

type Refs = HashSet<ObjectRef<Canary>>;
/// A ConfigMap or Secret: namespace, kind, name.
type ConfigKey = (String, ConfigKind, String);

/// Which Canaries' targets use which ConfigMaps and Secrets.
#[derive(Debug, Default)]
struct ConfigUses {
    by_canary: HashMap<ObjectRef<Canary>, Vec<ConfigKey>>,
    by_config: HashMap<ConfigKey, Refs>,
}

impl ConfigUses {
    fn set(&mut self, canary: &ObjectRef<Canary>, configs: Vec<ConfigKey>) {
        self.forget(canary);
        if configs.is_empty() {
            return;
        }
        for config in &configs {
            self.by_config
                .entry(config.clone())
                .or_default()
                .insert(canary.clone());
        }
        self.by_canary.insert(canary.clone(), configs);
    }

    fn forget(&mut self, canary: &ObjectRef<Canary>) {
        for config in self.by_canary.remove(canary).unwrap_or_default() {
            drop_from(&mut self.by_config, config, canary);
        }
    }
}

/// What one Canary is indexed under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Keys {
    namespace: String,
    target: (TargetKind, String),
    /// (namespace, name) of each MetricTemplate its metrics reference.
    templates: Vec<(String, String)>,
}

impl Keys {
    /// The namespaces this Canary needs cached: its own and its templates', once each.
    fn namespaces(&self) -> HashSet<&str> {
        let templates = self.templates.iter().map(|(ns, _)| ns.as_str());
        std::iter::once(self.namespace.as_str())
            .chain(templates)
            .collect()
    }

    fn of(canary: &Canary) -> Keys {
        let namespace = canary.namespace().unwrap_or_default();
        let target = &canary.spec.target_ref;
        let templates = canary
            .spec
            .analysis()
            .map(|a| a.metrics())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.template_ref.as_ref())
            .map(|r| {
                let ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
                (ns, r.name.clone())
            })
            .collect();
        Keys {
            target: (target.kind, target.name.clone()),
            namespace,
            templates,
        }
    }
}

#[derive(Debug, Default)]
struct Maps {
    keys: HashMap<ObjectRef<Canary>, Keys>,
    targets: HashMap<(String, TargetKind, String), Refs>,
    templates: HashMap<(String, String), Refs>,
    /// How many Canaries need each namespace cached.
    wanted: HashMap<String, usize>,
}

impl Maps {
    /// Indexes `canary`; true when it brings a namespace no other Canary needed.
    fn insert(&mut self, canary: &Canary) -> bool {
        let key = ObjectRef::from_obj(canary);
        let keys = Keys::of(canary);
        // Before this Canary's old keys go: a changed Canary keeps its own namespace.
        let added = keys
            .namespaces()
            .iter()
            .any(|ns| !self.wanted.contains_key(*ns));
        self.remove(&key);
        for namespace in keys.namespaces() {
            *self.wanted.entry(namespace.to_string()).or_default() += 1;
        }
        let (kind, name) = keys.target.clone();
        self.targets
            .entry((keys.namespace.clone(), kind, name))
            .or_default()
            .insert(key.clone());
        for template in &keys.templates {
            self.templates
                .entry(template.clone())
                .or_default()
                .insert(key.clone());
        }
        self.keys.insert(key, keys);
        added
    }

    fn remove(&mut self, key: &ObjectRef<Canary>) {
        let Some(keys) = self.keys.remove(key) else {
            return;
        };
        for namespace in keys.namespaces() {
            if let Some(n) = self.wanted.get_mut(namespace) {
                *n -= 1;
                if *n == 0 {
                    self.wanted.remove(namespace);
                }
            }
        }
        let (kind, name) = keys.target;
        drop_from(&mut self.targets, (keys.namespace, kind, name), key);
        for template in keys.templates {
            drop_from(&mut self.templates, template, key);
        }
    }
}

/// Removes `key` from the set at `at`, and the set when it is empty.
fn drop_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Refs>, at: K, key: &ObjectRef<Canary>) {
    if let Some(set) = map.get_mut(&at) {
        set.remove(key);
        if set.is_empty() {
            map.remove(&at);
        }
    }
}

/// The index; shared by the watch (writer) and the event mappers (readers).
#[derive(Debug, Default)]
pub struct Index {
    /// Bumped whenever a namespace becomes wanted (see [`Index::namespaces_added`]).
    added: watch::Sender<u64>,
    /// Kept by the reconciles, not by the Canary watch (which only drops deleted Canaries).
    configs: RwLock<ConfigUses>,
    current: RwLock<Maps>,
    /// The index being rebuilt by a re-list.
    relisting: Mutex<Option<Maps>>,
    /// Whether the Canaries were listed once.
    listed: AtomicBool,
    listed_now: Notify,
}

impl Index {
    /// Follows one event of the Canary watch.
    pub fn apply(&self, event: &watcher::Event<Canary>) {
        // A poisoned lock means a panic elsewhere; the index then stops following (events
        // still reach the Canaries through the reconcile's own requeues).
        let (Ok(mut current), Ok(mut relisting)) = (self.current.write(), self.relisting.lock())
        else {
            return;
        };
        let added = match event {
            watcher::Event::Apply(canary) => current.insert(canary),
            watcher::Event::Delete(canary) => {
                let key = ObjectRef::from_obj(canary);
                if let Ok(mut configs) = self.configs.write() {
                    configs.forget(&key);
                }
                current.remove(&key);
                if let Some(fresh) = relisting.as_mut() {
                    fresh.remove(&key);
                }
                false
            }
            watcher::Event::Init => {
                *relisting = Some(Maps::default());
                false
            }
            watcher::Event::InitApply(canary) => match relisting.as_mut() {
                // Compared with the old index when the list ends.
                Some(fresh) => {
                    fresh.insert(canary);
                    false
                }
                None => current.insert(canary),
            },
            watcher::Event::InitDone => {
                let mut added = false;
                if let Some(fresh) = relisting.take() {
                    added = fresh
                        .wanted
                        .keys()
                        .any(|ns| !current.wanted.contains_key(ns));
                    if let Ok(mut configs) = self.configs.write() {
                        let gone: Vec<_> = (configs.by_canary.keys())
                            .filter(|c| !fresh.keys.contains_key(*c))
                            .cloned()
                            .collect();
                        gone.iter().for_each(|c| configs.forget(c));
                    }
                    *current = fresh;
                }
                self.listed.store(true, Ordering::Release);
                self.listed_now.notify_waiters();
                added
            }
        };
        if added {
            self.added.send_modify(|n| *n += 1);
        }
    }

    /// Records the ConfigMaps and Secrets `canary`'s target uses (found or not: one created
    /// later must wake the Canary too).
    pub fn uses_configs(
        &self,
        canary: &ObjectRef<Canary>,
        namespace: &str,
        configs: impl IntoIterator<Item = (ConfigKind, String)>,
    ) {
        let configs: Vec<ConfigKey> = configs
            .into_iter()
            .map(|(kind, name)| (namespace.to_string(), kind, name))
            .collect();
        let unchanged = self.configs.read().is_ok_and(|c| {
            c.by_canary
                .get(canary)
                .map_or(configs.is_empty(), |v| *v == configs)
        });
        if !unchanged && let Ok(mut uses) = self.configs.write() {
            uses.set(canary, configs);
        }
    }

    /// The Canaries whose targets use the ConfigMap or Secret `namespace/name`.
    pub fn using_config(
        &self,
        namespace: &str,
        kind: ConfigKind,
        name: &str,
    ) -> Vec<ObjectRef<Canary>> {
        let Ok(uses) = self.configs.read() else {
            return Vec::new();
        };
        let key = (namespace.to_string(), kind, name.to_string());
        uses.by_config
            .get(&key)
            .map(|refs| refs.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a Canary needs objects of `namespace` cached: it is in that namespace, or
    /// references a MetricTemplate there.
    pub fn wants(&self, namespace: &str) -> bool {
        self.current
            .read()
            .is_ok_and(|m| m.wanted.contains_key(namespace))
    }

    /// The namespaces [`Index::wants`].
    pub fn wanted(&self) -> HashSet<String> {
        self.current
            .read()
            .map(|m| m.wanted.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Changes whenever a namespace becomes wanted: a cache that holds only the wanted
    /// namespaces then has to list that one.
    pub fn namespaces_added(&self) -> watch::Receiver<u64> {
        self.added.subscribe()
    }

    /// Resolves once the Canaries were listed (at once after that).
    pub async fn synced(&self) {
        loop {
            // Registered before the check, so a notification in between is not missed.
            let notified = self.listed_now.notified();
            if self.listed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn read(&self, f: impl FnOnce(&Maps) -> Option<&Refs>) -> Vec<ObjectRef<Canary>> {
        let Ok(maps) = self.current.read() else {
            return Vec::new();
        };
        f(&maps)
            .map(|refs| refs.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The Canaries whose `targetRef` is `kind/name` in `namespace`.
    pub fn by_target(
        &self,
        namespace: &str,
        kind: TargetKind,
        name: &str,
    ) -> Vec<ObjectRef<Canary>> {
        self.read(|m| {
            m.targets
                .get(&(namespace.to_string(), kind, name.to_string()))
        })
    }

    /// The Canaries whose metrics reference the MetricTemplate `namespace/name`.
    pub fn using_template(&self, namespace: &str, name: &str) -> Vec<ObjectRef<Canary>> {
        self.read(|m| m.templates.get(&(namespace.to_string(), name.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary(name: &str, target: &str, template: Option<(&str, Option<&str>)>) -> Canary {
        let metrics = match template {
            Some((t, ns)) => json!([{"name": "m", "templateRef": {"name": t, "namespace": ns}}]),
            None => json!([]),
        };
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "service": {"port": 80}, "analysis": {"metrics": metrics}}
        }))
        .unwrap()
    }

    fn names(refs: Vec<ObjectRef<Canary>>) -> Vec<String> {
        let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    #[test]
    fn follows_applies_changes_and_deletes() {
        let index = Index::default();
        index.apply(&watcher::Event::Apply(canary(
            "a",
            "app",
            Some(("t", None)),
        )));
        index.apply(&watcher::Event::Apply(canary(
            "b",
            "app",
            Some(("t", Some("shared"))),
        )));
        let by = |name| names(index.by_target("test", TargetKind::Deployment, name));
        assert_eq!(by("app"), ["a", "b"]);
        assert_eq!(names(index.using_template("test", "t")), ["a"]);
        assert_eq!(names(index.using_template("shared", "t")), ["b"]);
        assert!(index.wants("test"));
        assert!(
            index
                .by_target("test", TargetKind::DaemonSet, "app")
                .is_empty()
        );

        // A changed target moves the Canary; its old keys go.
        index.apply(&watcher::Event::Apply(canary("a", "other", None)));
        assert_eq!(by("app"), ["b"]);
        assert_eq!(by("other"), ["a"]);
        assert!(index.using_template("test", "t").is_empty());

        index.apply(&watcher::Event::Delete(canary("b", "app", None)));
        assert!(by("app").is_empty());
        assert!(index.wants("test"), "a is left");
    }

    #[test]
    fn a_relist_replaces_the_index_whole() {
        let index = Index::default();
        index.apply(&watcher::Event::Apply(canary("gone", "app", None)));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(canary("kept", "app", None)));
        // The old index answers until the re-list is complete.
        let by = || names(index.by_target("test", TargetKind::Deployment, "app"));
        assert_eq!(by(), ["gone"]);
        index.apply(&watcher::Event::InitDone);
        assert_eq!(
            by(),
            ["kept"],
            "deleted while the watch was down: not indexed"
        );
    }

    #[test]
    fn wants_the_namespaces_of_canaries_and_of_their_templates() {
        let index = Index::default();
        let mut added = index.namespaces_added();
        assert!(!index.wants("test"));
        index.apply(&watcher::Event::Apply(canary(
            "a",
            "app",
            Some(("t", Some("shared"))),
        )));
        assert!(index.wants("test") && index.wants("shared"));
        assert!(!index.wants("other"));
        assert!(added.has_changed().unwrap(), "a new namespace is announced");
        added.borrow_and_update();

        // The same Canary again, or a second one in a wanted namespace: nothing new.
        index.apply(&watcher::Event::Apply(canary(
            "a",
            "app",
            Some(("t", Some("shared"))),
        )));
        index.apply(&watcher::Event::Apply(canary("b", "web", None)));
        assert!(!added.has_changed().unwrap());

        // A template moved elsewhere: that namespace is new; the old one is let go.
        index.apply(&watcher::Event::Apply(canary(
            "a",
            "app",
            Some(("t", Some("central"))),
        )));
        assert!(added.has_changed().unwrap());
        added.borrow_and_update();
        assert!(index.wants("central") && !index.wants("shared"));

        // Namespaces stay wanted while any Canary needs them.
        index.apply(&watcher::Event::Delete(canary("a", "app", None)));
        assert!(index.wants("test") && !index.wants("central"));
        index.apply(&watcher::Event::Delete(canary("b", "web", None)));
        assert!(index.wanted().is_empty());

        // A re-list that brings a namespace announces it when it is complete.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(canary("c", "app", None)));
        assert!(!added.has_changed().unwrap());
        index.apply(&watcher::Event::InitDone);
        assert!(added.has_changed().unwrap());
        assert!(index.wants("test"));
    }

    #[test]
    fn configs_wake_the_canaries_whose_targets_use_them() {
        let index = Index::default();
        let (a, b) = (canary("a", "app", None), canary("b", "web", None));
        index.apply(&watcher::Event::Apply(a.clone()));
        index.apply(&watcher::Event::Apply(b.clone()));
        let (ra, rb) = (ObjectRef::from_obj(&a), ObjectRef::from_obj(&b));
        let shared = || (ConfigKind::ConfigMap, "shared".to_string());
        index.uses_configs(
            &ra,
            "test",
            [shared(), (ConfigKind::Secret, "a-tls".into())],
        );
        index.uses_configs(&rb, "test", [shared()]);
        let using = |kind, name| names(index.using_config("test", kind, name));
        assert_eq!(using(ConfigKind::ConfigMap, "shared"), ["a", "b"]);
        assert_eq!(using(ConfigKind::Secret, "a-tls"), ["a"]);
        assert!(using(ConfigKind::ConfigMap, "a-tls").is_empty(), "by kind");
        assert!(
            index
                .using_config("other", ConfigKind::ConfigMap, "shared")
                .is_empty()
        );

        // A target that stops using one lets it go.
        index.uses_configs(&ra, "test", [shared()]);
        assert!(using(ConfigKind::Secret, "a-tls").is_empty());
        // A deleted Canary is forgotten; so is one a re-list no longer shows.
        index.apply(&watcher::Event::Delete(a));
        assert_eq!(using(ConfigKind::ConfigMap, "shared"), ["b"]);
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitDone);
        assert!(using(ConfigKind::ConfigMap, "shared").is_empty());
    }

    /// The Deployment watch waits on this: a target listed before its Canary is indexed
    /// would be cached trimmed.
    #[tokio::test]
    async fn synced_once_the_canaries_were_listed() {
        let index = std::sync::Arc::new(Index::default());
        let waiting = tokio::spawn({
            let index = index.clone();
            async move { index.synced().await }
        });
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(canary("a", "web", None)));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "synced before the list ended");
        index.apply(&watcher::Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("synced when the list ended")
            .unwrap();
        // And at once from then on.
        tokio::time::timeout(std::time::Duration::from_millis(100), index.synced())
            .await
            .expect("at once");
    }
}
