//! Fresh identifiers that must differ per call: a promotion's id (so the primary rolls even to
//! an identical template) and session-affinity cookie values.

use chrono::Utc;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::Canary;

/// `bytes` bytes (at most 32), hex-encoded, from the Canary's uid and the current time in
/// nanoseconds: unique per Canary and call without a random source.
pub fn fresh(canary: &Canary, bytes: usize) -> String {
    let now = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let digest = Sha256::digest(format!("{}/{now}", canary.uid().unwrap_or_default()).as_bytes());
    hex::encode(&digest[..bytes.min(digest.len())])
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
