#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `insecureSkipVerify`: a Prometheus behind a self-signed certificate is refused (with the
//! certificate named as the cause) unless the MetricTemplate skips verification.

use std::time::Duration;

use serin::analysis::provider::prometheus::Prometheus;
use serin::analysis::provider::{ErrorKind, Http, Reading};
use serin::api::MetricProviderType;
use serin::api::metric_template::MetricTemplateProvider;

/// An HTTPS Prometheus on 127.0.0.1 answering every request with `vector(1)`'s result.
async fn https_prometheus() -> String {
    serin_testkit::tls::https_server(
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#,
    )
    .await
}

fn provider(url: &str, insecure: Option<bool>) -> MetricTemplateProvider {
    MetricTemplateProvider {
        type_: MetricProviderType::Prometheus,
        address: Some(url.to_string()),
        headers: None,
        secret_ref: None,
        region: None,
        insecure_skip_verify: insecure,
    }
}

#[tokio::test]
async fn self_signed_certificates_need_insecure_skip_verify() {
    let url = https_prometheus().await;
    let http = Http::new(Duration::from_secs(2)).unwrap();

    let verified = Prometheus::from_template(&provider(&url, None), None, "http://unused").unwrap();
    let err = verified.query(&http, "vector(1)").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect, "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");

    let skipping =
        Prometheus::from_template(&provider(&url, Some(true)), None, "http://unused").unwrap();
    assert_eq!(
        skipping.query(&http, "vector(1)").await,
        Ok(Reading::Value(1.0))
    );
    assert_eq!(skipping.is_online(&http).await, Ok(()));
}
