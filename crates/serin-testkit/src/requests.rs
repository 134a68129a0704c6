//! The controller's requests to the API server, counted by the controller itself
//! (`serin_api_requests_total{method,resource}` on its /metrics): what a release costs, and
//! that an idle controller costs nothing.

use std::collections::BTreeMap;

use std::time::Duration;

use crate::{Controller, LONG, Poll, World};

/// The sum of the samples of `name` (every label set) in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    samples(text, name).values().sum()
}

/// Each sample of `name`, by its label set (`""` without labels).
fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series[name.len()..].to_string(), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// The controller's API requests by method, and its reconciles.
#[derive(Clone)]
struct Counters {
    requests: BTreeMap<String, f64>,
    reconciles: f64,
}

impl Counters {
    fn total(&self) -> f64 {
        self.requests.values().sum()
    }
}

impl World {
    /// The controller's API requests so far by `{method,resource}` label set, the leader's
    /// Lease renewals left out.
    pub async fn api_requests(&self) -> BTreeMap<String, f64> {
        self.controller.counters().await.requests
    }

    /// The controller's reconciles so far (all Canaries): a barrier for windows measured in
    /// reconciles rather than in time.
    pub async fn reconciles(&self) -> f64 {
        self.controller.counters().await.reconciles
    }

    /// See [`Controller::assert_idle_makes_no_api_requests`], for every Canary the controller
    /// watches.
    pub async fn assert_idle_makes_no_api_requests(&self) {
        let watched = self.watched_canaries();
        let canaries = watched.list(&Default::default()).await.unwrap().items.len();
        self.controller
            .assert_idle_makes_no_api_requests(canaries)
            .await;
    }
}

impl Controller {
    async fn counters(&self) -> Counters {
        let url = format!("http://127.0.0.1:{}/metrics", self.port().await);
        let (status, text) = crate::http::request("GET", &url, None).await;
        assert_eq!(status, 200, "{text}");
        Counters {
            // The leader's Lease renewals are the one request an idle controller makes by
            // design (with leader election only): not a Canary's cost.
            requests: samples(&text, "serin_api_requests_total")
                .into_iter()
                .filter(|(labels, _)| !labels.contains("resource=\"leases\""))
                .collect(),
            reconciles: metric_sum(&text, "serin_reconcile_duration_seconds_count"),
        }
    }

    /// Asserts that the controller, once settled, reconciles each of its `canaries` six more
    /// times (in all) without one API request. Settled: two reconciles per Canary in a row
    /// made none (what a release or an initialization still delivers, and its removal from
    /// the status, is done). The reconciles are the barrier that proves the absence: each
    /// would have made its requests by then.
    pub async fn assert_idle_makes_no_api_requests(&self, canaries: usize) {
        let rounds = |n: f64| n * canaries.max(1) as f64;
        // Settling: a quiet stretch of two rounds, started again by every request.
        let poll = Poll::new(LONG).every(Duration::from_millis(200));
        let mut mark = self.counters().await;
        let mut last = String::new();
        loop {
            let now = self.counters().await;
            if now.total() != mark.total() {
                last = format!(
                    "{:?} after {} reconciles",
                    made(&mark, &now),
                    now.reconciles - mark.reconciles
                );
                mark = now.clone();
            } else if now.reconciles >= mark.reconciles + rounds(2.0) {
                break;
            }
            assert!(
                !poll.expired(),
                "{} reconciles without an API request: not within {LONG:?}; the last requests: \
                 {last}\n{}",
                rounds(2.0),
                self.logs(60)
            );
            poll.next().await;
        }
        let before = self.counters().await;
        let poll = Poll::new(LONG).every(Duration::from_millis(200));
        let after = loop {
            let now = self.counters().await;
            if now.reconciles >= before.reconciles + rounds(6.0) {
                break now;
            }
            assert!(
                !poll.expired(),
                "six reconciles per Canary: not within {LONG:?}"
            );
            poll.next().await;
        };
        assert!(before.total() > 0.0, "the controller counts its requests");
        let made = made(&before, &after);
        assert!(
            made.is_empty(),
            "API requests while idle: {made:?}\n{}",
            self.logs(60)
        );
    }
}

/// The requests by label set between two counts.
fn made(before: &Counters, after: &Counters) -> BTreeMap<String, f64> {
    requests_between(&before.requests, &after.requests)
}

/// The requests by label set between two counts of [`World::api_requests`], those that
/// moved only.
pub fn requests_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(labels, n)| (labels.clone(), n - before.get(labels).unwrap_or(&0.0)))
        .filter(|(_, n)| *n != 0.0)
        .collect()
}
