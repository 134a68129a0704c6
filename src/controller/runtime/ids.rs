//! Fresh identifiers that must differ per call: a promotion's id (so the primary rolls even to
//! an identical template) and session-affinity cookie values.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::Canary;

/// `bytes` bytes (at most 32), hex-encoded, from the Canary's uid and the current time in
/// nanoseconds: unique per Canary and call without a random source.
pub fn fresh(canary: &Canary, bytes: usize) -> String {
    let now = unique_nanos(Utc::now());
    let digest = Sha256::digest(format!("{}/{now}", canary.uid().unwrap_or_default()).as_bytes());
    hex::encode(&digest[..bytes.min(digest.len())])
}

/// `now` in nanoseconds, or a nanosecond after the last value this process gave if that is
/// not earlier: distinct on every call, in order of time. For names that must differ per
/// call (events, transitions) where two calls can fall in one tick of the clock (a coarse
/// clock, or virtual time in tests).
pub fn unique_nanos(now: DateTime<Utc>) -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let wanted = now.timestamp_nanos_opt().unwrap_or_default();
    let after = |last: i64| wanted.max(last.saturating_add(1));
    let last = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(after(last)))
        .unwrap_or(wanted);
    after(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_asked_length_and_differ_per_call() {
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "a", "namespace": "n", "uid": "u-1"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}}
        }))
        .unwrap();
        let a = fresh(&canary, 10);
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = fresh(&canary, 10);
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert_eq!(
            fresh(&canary, 64).len(),
            64,
            "capped at the digest's 32 bytes"
        );
    }
}
