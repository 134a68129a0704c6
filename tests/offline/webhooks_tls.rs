#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `disableTLS` on a webhook: a hook behind a self-signed certificate fails verification
//! unless the hook disables it, as in Flagger.

use serde_json::json;
use serin::api::Canary;
use serin::controller::probes::webhooks::{Call, call};
use serin_core::Phase;

#[tokio::test]
async fn a_self_signed_hook_needs_disable_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = serin_testkit::tls::https_server(r#"{"ok":true}"#).await;
    let canary = |disable_tls: bool| -> Canary {
        serin_testkit::canary("podinfo")
            .namespace("test")
            .without("provider")
            .without("progressDeadlineSeconds")
            .analysis(
                json!({"interval": "1m", "threshold": 5, "iterations": 2, "webhooks": [
                {"name": "gate", "type": "confirm-rollout", "url": url, "timeout": "5s",
                 "disableTLS": disable_tls}]}),
            )
            .parse()
    };
    let http = reqwest::Client::new();
    for (disable_tls, expect_ok) in [(false, false), (true, true)] {
        let c = canary(disable_tls);
        let hook = &c.spec.analysis().unwrap().webhooks()[0];
        let at = Call {
            canary: &c,
            phase: Phase::Initialized,
            checksum: "x",
        };
        let result = call(&http, hook, at).await;
        assert_eq!(
            result.is_ok(),
            expect_ok,
            "disableTLS {disable_tls}: {result:?}"
        );
        if let Err(reason) = result {
            assert!(
                reason.to_lowercase().contains("certificate"),
                "the reason names the certificate: {reason}"
            );
        }
    }
}
