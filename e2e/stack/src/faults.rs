//! Fault injection and request accounting.
//!
//! A fault rule matches requests by verb (`get`, `list`, `watch`, `create`, `update`,
//! `patch`, `delete`, `deletecollection` or `*`), resource (plural or `*`) and, optionally,
//! a substring of the client's User-Agent (so a test can fault the controller's requests and
//! not its own reads), and may add
//! latency, fail a fraction of them (`errorRate` with `status` 429, 500 or 503; 429 carries
//! `Retry-After: 1`), or force the next `conflicts` updates/patches to answer 409; a rule
//! with `dropWatchesAfterEvents: N` makes watches close after N events.

use crate::scenario::opt_duration_str;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    #[serde(default = "star")]
    pub verb: String,
    #[serde(default = "star")]
    pub resource: String,
    /// Only requests whose User-Agent contains this (empty: every client).
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, with = "opt_duration_str")]
    pub latency: Option<Duration>,
    /// The next N updates and patches of matching resources answer 409 Conflict.
    #[serde(default)]
    pub conflicts: u32,
    /// Watches close after sending this many events (whatever the verb and resource).
    #[serde(default)]
    pub drop_watches_after_events: Option<u64>,
}

impl Default for FaultRule {
    /// Matches everything and does nothing; set the fields that matter.
    fn default() -> Self {
        FaultRule {
            verb: star(),
            resource: star(),
            user_agent: String::new(),
            error_rate: 0.0,
            status: default_status(),
            latency: None,
            conflicts: 0,
            drop_watches_after_events: None,
        }
    }
}

fn star() -> String {
    "*".into()
}

fn default_status() -> u16 {
    503
}

impl FaultRule {
    fn matches(&self, verb: &str, resource: &str, user_agent: &str) -> bool {
        (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
            && user_agent.contains(&self.user_agent)
    }
}

/// What the server must do to a request before handling it.
#[derive(Debug, Default)]
pub struct Decision {
    pub delay: Duration,
    pub fail: Option<u16>,
    pub conflict: bool,
}

/// Fault rules, watch-drop controls and request counters; shared by the API server, the
/// admin server and library users.
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    counts: Mutex<HashMap<(String, String, u16), u64>>,
    drop_tx: watch::Sender<u64>,
    /// Watches close after sending this many events (0: never).
    drop_after: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rules: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
            drop_tx: watch::channel(0).0,
            drop_after: AtomicU64::new(0),
        }
    }
}

impl Faults {
    /// Adds rules (the scenario file's `faults`, or `POST /faults`).
    pub fn add(&self, rules: Vec<FaultRule>) {
        if let Some(n) = rules.iter().find_map(|r| r.drop_watches_after_events) {
            self.drop_watches_after(n);
        }
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(rules);
    }

    /// Removes every rule and the watch drop setting.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.drop_after.store(0, Ordering::SeqCst);
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What to do to a `verb` on `resource` from a client that sent `user_agent`.
    pub fn decide(&self, verb: &str, resource: &str, user_agent: &str) -> Decision {
        let mut d = Decision::default();
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for r in rules
            .iter_mut()
            .filter(|r| r.matches(verb, resource, user_agent))
        {
            d.delay += r.latency.unwrap_or_default();
            if d.fail.is_none() && r.error_rate > 0.0 && fastrand::f64() < r.error_rate {
                d.fail = Some(r.status);
            }
            if r.conflicts > 0 && matches!(verb, "update" | "patch") && !d.conflict {
                r.conflicts -= 1;
                d.conflict = true;
            }
        }
        d
    }

    /// Closes every open watch now.
    pub fn drop_watches(&self) {
        self.drop_tx.send_modify(|g| *g += 1);
    }

    /// Makes watches close after sending `n` events (0 turns this off).
    pub fn drop_watches_after(&self, n: u64) {
        self.drop_after.store(n, Ordering::SeqCst);
    }

    pub fn drop_after(&self) -> u64 {
        self.drop_after.load(Ordering::SeqCst)
    }

    pub fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_tx.subscribe()
    }

    pub fn count(&self, verb: &str, resource: &str, code: u16) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((verb.to_string(), resource.to_string(), code))
            .or_default() += 1;
    }

    /// Requests answered for a verb and resource, whatever their status code.
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .filter(|((v, r, _), _)| v == verb && r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total_requests(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// Prometheus text exposition of the counters.
    pub fn metrics(&self, objects: usize, watches: i64) -> String {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let sorted: BTreeMap<_, _> = c.iter().collect();
        let mut out = String::from(
            "# HELP serin_stack_requests_total API requests answered, by verb, resource and status code.\n\
             # TYPE serin_stack_requests_total counter\n",
        );
        for ((verb, resource, code), n) in sorted {
            out.push_str(&format!(
                "serin_stack_requests_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP serin_stack_objects Objects stored.\n# TYPE serin_stack_objects gauge\nserin_stack_objects {objects}\n\
             # HELP serin_stack_watches Open watches.\n# TYPE serin_stack_watches gauge\nserin_stack_watches {watches}\n"
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_with_a_user_agent_faults_only_that_client() {
        let faults = Faults::default();
        faults.add(vec![FaultRule {
            user_agent: "serin/".into(),
            error_rate: 1.0,
            status: 500,
            ..FaultRule::default()
        }]);
        assert_eq!(
            faults.decide("get", "canaries", "serin/0.1.0").fail,
            Some(500)
        );
        assert_eq!(faults.decide("get", "canaries", "kube-rs/1.0").fail, None);
        assert_eq!(faults.decide("get", "canaries", "").fail, None);
    }

    #[test]
    fn conflicts_are_counted_down_on_writes_only() {
        let faults = Faults::default();
        faults.add(vec![FaultRule {
            conflicts: 1,
            ..FaultRule::default()
        }]);
        assert!(!faults.decide("get", "canaries", "serin/0.1.0").conflict);
        assert!(faults.decide("patch", "canaries", "serin/0.1.0").conflict);
        assert!(!faults.decide("patch", "canaries", "serin/0.1.0").conflict);
    }
}
