#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `insecureSkipVerify`: a Prometheus behind a self-signed certificate is refused (with the
//! certificate named as the cause) unless the MetricTemplate skips verification. The
//! certificate comes from the `openssl` command line, generated per run.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serin::analysis::provider::prometheus::Prometheus;
use serin::analysis::provider::{ErrorKind, Http, Reading};
use serin::api::MetricProviderType;
use serin::api::metric_template::MetricTemplateProvider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTPS server on 127.0.0.1 answering every request with `vector(1)`'s result.
async fn https_prometheus() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_file_iter(&cert)
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_file(&key).unwrap(),
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
    (url, dir)
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
    let (url, _dir) = https_prometheus().await;
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
