#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `insecureSkipVerify`: a Prometheus behind a self-signed certificate is refused (with the
//! certificate named as the cause) unless the MetricTemplate skips verification.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serin::analysis::provider::prometheus::Prometheus;
use serin::analysis::provider::{ErrorKind, Http, Reading};
use serin::api::MetricProviderType;
use serin::api::metric_template::MetricTemplateProvider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// A throwaway self-signed certificate for 127.0.0.1 (P-256, valid until 2126), made with
// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500
// -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1`. Test data, not a secret.
const KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgqPY8/J/YcvH9rShp
MN6uU0B9CdXJG2y4wOfztfdiSCahRANCAAR9wGy5xkTmjUPIBy/XT/FTBYjtqHnf
+85Xh2ZZ85BVkEJ/Zc22sZ7bCw5AyORzveErLVETtdT+y1LeKqiyETzt
-----END PRIVATE KEY-----
";
const CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIBkTCCATagAwIBAgIUDsmG0zcNdqxxD6Ku9XrGBt1s0UgwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNjAyMjUwMFoYDzIxMjYxMTAy
MDIyNTAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR9wGy5xkTmjUPIBy/XT/FTBYjtqHnf+85Xh2ZZ85BVkEJ/Zc22sZ7b
Cw5AyORzveErLVETtdT+y1LeKqiyETzto2QwYjAdBgNVHQ4EFgQUKo9+A4wNE8/0
c/Y2PIu71t7zpNcwHwYDVR0jBBgwFoAUKo9+A4wNE8/0c/Y2PIu71t7zpNcwDwYD
VR0TAQH/BAUwAwEB/zAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMCA0kAMEYC
IQDUGXDVH8FBEOdUduEPZJ8YYQzIEY2MmgnTTniWZ1ZNOwIhAOP+g5ECadCXpGdb
Qh1Tu8XtvVZSeMTb0V2Eb44wH3Oo
-----END CERTIFICATE-----
";

/// An HTTPS server on 127.0.0.1 answering every request with `vector(1)`'s result.
async fn https_prometheus() -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    url
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
