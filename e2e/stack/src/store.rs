//! The object store: every object of every resource, one global resourceVersion, and a
//! bounded log of change events that watches replay from.

use crate::registry::Registry;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, broadcast};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change. `object` is the stored object (for DELETED: its last state, with
/// the resourceVersion of the deletion, as the API server reports it).
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub key: String,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The state before this change (MODIFIED and DELETED), so filtered watches can turn a
    /// change into ADDED or DELETED when the object enters or leaves their selector.
    pub previous: Option<Arc<Value>>,
}

/// Objects of one resource, ordered by (namespace, name) so namespace lists are ranges and
/// `continue` tokens are positions.
pub type Bucket = BTreeMap<(String, String), Arc<Value>>;

pub struct Inner {
    pub rv: u64,
    pub registry: Registry,
    pub objects: HashMap<String, Bucket>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Highest resourceVersion no longer in `history` (watches from older versions get 410).
    compacted: u64,
    /// Set by writes that may concern the garbage collector (deletions, owner changes).
    pub wants_gc: bool,
    tx: broadcast::Sender<Arc<Event>>,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    /// Woken after deletions and owner changes; the garbage collector waits on it.
    pub gc_wake: Notify,
}

impl Store {
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(16_384);
        let inner = Inner {
            rv: 1,
            registry: Registry::with_builtins(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            compacted: 0,
            wants_gc: false,
            tx: tx.clone(),
        };
        Store {
            inner: Mutex::new(inner),
            tx,
            gc_wake: Notify::new(),
        }
    }

    /// Locks the store. A panic while holding the lock would poison it; the data is still
    /// consistent (every mutation commits in one step), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// What a watch must send first: replayed history, or 410 when it is gone.
pub enum Replay {
    Events(Vec<Arc<Event>>),
    Gone,
}

/// The object `ns`/`name` of a resource's bucket (none: the resource has no objects).
pub fn find<'a>(bucket: Option<&'a Bucket>, ns: &str, name: &str) -> Option<&'a Arc<Value>> {
    bucket?.get(&(ns.to_string(), name.to_string()))
}

/// The objects of a resource's bucket in one namespace (a range of the bucket) or, with
/// `ns` None, all of them.
pub fn in_namespace<'a>(
    bucket: Option<&'a Bucket>,
    ns: Option<&'a str>,
) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
    let Some(bucket) = bucket else {
        return Box::new(std::iter::empty());
    };
    match ns {
        None => Box::new(bucket.values()),
        Some(ns) => Box::new(
            bucket
                .range((ns.to_string(), String::new())..)
                .take_while(move |((n, _), _)| n == ns)
                .map(|(_, v)| v),
        ),
    }
}

impl Inner {
    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<&Arc<Value>> {
        find(self.objects.get(key), ns, name)
    }

    /// Objects of a resource, in one namespace or (ns = None) all of them.
    pub fn iter_ns<'a>(
        &'a self,
        key: &str,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
        in_namespace(self.objects.get(key), ns)
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` (setting its resourceVersion) and emits ADDED or MODIFIED.
    pub fn put(&mut self, key: &str, mut obj: Value) -> Arc<Value> {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let (ns, name) = ns_name(&obj);
        let obj = Arc::new(obj);
        let previous = self
            .objects
            .entry(key.to_string())
            .or_default()
            .insert((ns.clone(), name), obj.clone());
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(Event {
            rv,
            key: key.to_string(),
            kind,
            object: obj.clone(),
            previous,
        });
        obj
    }

    /// Removes an object and emits DELETED carrying a fresh resourceVersion.
    pub fn remove(&mut self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let last = Arc::new(last);
        self.emit(Event {
            rv,
            key: key.to_string(),
            kind: EventType::Deleted,
            object: last.clone(),
            previous: Some(old),
        });
        Some(last)
    }

    fn emit(&mut self, event: Event) {
        let event = Arc::new(event);
        if self.history.len() >= self.history_cap
            && let Some(old) = self.history.pop_front()
        {
            self.compacted = old.rv;
        }
        self.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Events after `since` for a watch, or Gone if some of them were compacted away.
    pub fn replay(&self, since: u64, key: &str) -> Replay {
        if since < self.compacted {
            return Replay::Gone;
        }
        let start = self.history.partition_point(|e| e.rv <= since);
        Replay::Events(
            self.history
                .range(start..)
                .filter(|e| e.key == key)
                .cloned()
                .collect(),
        )
    }

    /// Drops the event history older than the latest `keep` events (admin: force 410s).
    pub fn compact(&mut self, keep: usize) {
        while self.history.len() > keep {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        if keep == 0 {
            self.compacted = self.rv;
        }
    }

    pub fn object_count(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }
}

pub fn ns_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}
