//! What an idle controller costs the API server, counted by the controller itself
//! (`serin_api_requests_total{method}` on its /metrics).

use std::collections::BTreeMap;

use crate::{LONG, World, wait_until};

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
    async fn counters(&self) -> Counters {
        let (status, text) = self.controller_http("/metrics").await;
        assert_eq!(status, 200, "{text}");
        Counters {
            requests: samples(&text, "serin_api_requests_total"),
            reconciles: metric_sum(&text, "serin_reconcile_duration_seconds_count"),
        }
    }

    /// Asserts that the controller, once settled, reconciles its Canaries six more times
    /// without one API request. Settled: two reconciles in a row made none (what a release
    /// or an initialization still delivers, and its removal from the status, is done). The
    /// six reconciles are the barrier that proves the absence: each would have made its
    /// requests by then.
    pub async fn assert_idle_makes_no_api_requests(&self) {
        let first = self.counters().await;
        let mark = std::cell::Cell::new((first.total(), first.reconciles));
        wait_until(LONG, "two reconciles without an API request", || async {
            let now = self.counters().await;
            let (requests, reconciled) = mark.get();
            if now.total() != requests {
                mark.set((now.total(), now.reconciles));
            }
            now.total() == requests && now.reconciles >= reconciled + 2.0
        })
        .await;
        let before = self.counters().await;
        let after = std::cell::RefCell::new(None);
        wait_until(LONG, "six more reconciles", || async {
            let now = self.counters().await;
            let done = now.reconciles >= before.reconciles + 6.0;
            *after.borrow_mut() = Some(now);
            done
        })
        .await;
        let after = after.into_inner().expect("counted at least once");
        let made: BTreeMap<&String, f64> = after
            .requests
            .iter()
            .map(|(method, n)| (method, n - before.requests.get(method).unwrap_or(&0.0)))
            .filter(|(_, n)| *n != 0.0)
            .collect();
        assert!(before.total() > 0.0, "the controller counts its requests");
        assert!(made.is_empty(), "API requests while idle: {made:?}");
    }
}
