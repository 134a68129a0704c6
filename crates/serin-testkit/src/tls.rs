//! A local HTTPS server behind a self-signed certificate, for the tests of
//! `insecureSkipVerify` (metric providers) and `disableTLS` (webhooks).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// An HTTPS server on 127.0.0.1 answering every request with 200 and the JSON `body`.
pub async fn https_server(body: &'static str) -> String {
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
