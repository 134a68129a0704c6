//! Access tokens for Cloud Monitoring, as Flagger's Google client gets them:
//!
//! - the Secret's `serviceAccountKey` (`option.WithCredentialsJSON` in Flagger): a
//!   service-account key, whose RS256-signed JWT is exchanged at the key's `token_uri` for an
//!   access token (RFC 7523 bearer grant, scope `monitoring.read`);
//! - else Application Default Credentials: the service-account key file named by
//!   `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server's token for the instance's
//!   service account, which on GKE with Workload Identity is the Kubernetes service account's
//!   Google identity (`http://metadata.google.internal`, or `GCE_METADATA_HOST`). gcloud's
//!   user credentials file is not read (a pod has none); other credential types
//!   (`external_account`, `authorized_user`) are refused with a message.
//!
//! Tokens are cached until 5 minutes before they expire, by a hash of the key (or the
//! metadata server's address), so templates sharing a key share a token and no other.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::Deserialize;

use super::super::cloud::{Cloud, fingerprint};
use super::super::{Answer, ErrorKind, Http, QueryError, remote_text};

const SCOPE: &str = "https://www.googleapis.com/auth/monitoring.read";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "metadata.google.internal";
/// A JWT assertion's lifetime (Google accepts at most an hour).
const ASSERTION_LIFETIME: u64 = 3600;

/// Where a template's token comes from.
#[derive(Clone)]
pub enum Credential {
    /// The template's own key (its Secret's `serviceAccountKey`).
    Key(Arc<ServiceAccountKey>),
    /// The controller's identity (Application Default Credentials).
    Controller,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Key(key) => write!(f, "Key({})", key.client_email),
            Credential::Controller => f.write_str("Controller"),
        }
    }
}

/// An access token, and the cache entry it came from (forgotten when the API refuses it).
#[derive(Debug)]
pub struct Token {
    pub value: String,
    pub cache_key: String,
}

impl Credential {
    /// A key from a Secret's value; the error says what is wrong with it, never what it holds.
    pub fn key(json: &str) -> Result<Credential, String> {
        ServiceAccountKey::parse(json).map(|k| Credential::Key(Arc::new(k)))
    }

    /// A current access token (cached, or fetched now).
    pub async fn token(&self, cloud: &Cloud, http: &Http) -> Result<Token, QueryError> {
        match self {
            Credential::Key(key) => exchange(cloud, http, key, "serviceAccountKey").await,
            Credential::Controller => match cloud.var("GOOGLE_APPLICATION_CREDENTIALS") {
                Some(file) => {
                    let json = std::fs::read_to_string(file).map_err(|e| {
                        QueryError::config(format!(
                            "cannot read GOOGLE_APPLICATION_CREDENTIALS {file}: {e}"
                        ))
                    })?;
                    let key = ServiceAccountKey::parse(&json).map_err(|e| {
                        QueryError::config(format!("GOOGLE_APPLICATION_CREDENTIALS {file} {e}"))
                    })?;
                    exchange(cloud, http, &key, "GOOGLE_APPLICATION_CREDENTIALS").await
                }
                None => metadata(cloud).await,
            },
        }
    }
}

/// The fields of a service-account key serin uses.
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    key_pair: ring::signature::RsaKeyPair,
    fingerprint: String,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    type_: Option<String>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

impl ServiceAccountKey {
    fn parse(json: &str) -> Result<ServiceAccountKey, String> {
        // serde's message could quote the key: only its position is kept.
        let file: KeyFile = serde_json::from_str(json).map_err(|e| {
            format!(
                "is not a service-account key (JSON, line {} column {})",
                e.line(),
                e.column()
            )
        })?;
        match file.type_.as_deref() {
            None | Some("service_account") => {}
            Some(other) => {
                return Err(format!(
                    "is a {:?} credential; serin reads service-account keys (`\"type\": \
                     \"service_account\"`) only",
                    remote_text(other)
                ));
            }
        }
        let client_email = file
            .client_email
            .filter(|e| !e.is_empty())
            .ok_or("has no `client_email`")?;
        let pem = file
            .private_key
            .filter(|k| !k.is_empty())
            .ok_or("has no `private_key`")?;
        let der = pkcs8_der(&pem).ok_or("has a `private_key` that is not a PEM PRIVATE KEY")?;
        let key_pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("has a `private_key` that is not an RSA key ({e})"))?;
        let token_uri = file
            .token_uri
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        let usable = reqwest::Url::parse(token_uri.trim())
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if !usable {
            return Err(format!(
                "has a `token_uri` {:?} that is not an http(s) URL",
                remote_text(&token_uri)
            ));
        }
        let fingerprint = fingerprint(&[&client_email, &pem, &token_uri]);
        Ok(ServiceAccountKey {
            client_email,
            private_key_id: file.private_key_id.filter(|k| !k.is_empty()),
            token_uri: token_uri.trim().to_string(),
            key_pair,
            fingerprint,
        })
    }

    /// The signed JWT asking for [`SCOPE`], issued at `now` (Unix seconds).
    fn assertion(&self, now: u64) -> Result<String, QueryError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = serde_json::json!(kid);
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| QueryError::config("cannot sign the service-account JWT"))?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pkcs8_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)?
        .split("-----END PRIVATE KEY-----")
        .next()?;
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .ok()
}

/// The token for `key`: cached, or exchanged at its `token_uri` (a tenant's address when
/// the key is a Secret's: sent through the outbound policy, as every tenant request).
async fn exchange(
    cloud: &Cloud,
    http: &Http,
    key: &ServiceAccountKey,
    source: &str,
) -> Result<Token, QueryError> {
    let cache_key = format!("key {}", key.fingerprint);
    if let Some(value) = cloud.google.get(&cache_key) {
        return Ok(Token { value, cache_key });
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let assertion = key.assertion(now)?;
    // The assertion is base64url and dots: nothing in it needs escaping.
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    );
    let request = http
        .client(false)
        .post(&key.token_uri)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .body(form);
    let what = format!("the token endpoint of the {source} ({})", key.token_uri);
    let answer = http.send(&what, request).await?;
    let (value, expires) = read_token(&what, &answer)?;
    cloud.google.put(&cache_key, value.clone(), expires);
    Ok(Token { value, cache_key })
}

/// The metadata server's token for the instance's (or Workload Identity's) service account.
async fn metadata(cloud: &Cloud) -> Result<Token, QueryError> {
    let host = cloud.var("GCE_METADATA_HOST").unwrap_or(METADATA_HOST);
    let cache_key = format!("metadata {host}");
    if let Some(value) = cloud.google.get(&cache_key) {
        return Ok(Token { value, cache_key });
    }
    let url = format!(
        "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={SCOPE}"
    );
    let what = format!("the metadata server {host}");
    let request = cloud.client().get(&url).header("Metadata-Flavor", "Google");
    let answer = cloud.send(&what, request).await.map_err(|e| match e.kind {
        // Nothing answers off GCE and GKE: a missing configuration, not an outage.
        ErrorKind::Connect | ErrorKind::Timeout => QueryError::config(format!(
            "no Google credentials for stackdriver: the Secret has no `serviceAccountKey`, the \
             controller no GOOGLE_APPLICATION_CREDENTIALS, and {e}"
        )),
        _ => e,
    })?;
    if answer.status.is_success() && answer.header("metadata-flavor") != Some("Google") {
        return Err(QueryError::config(format!(
            "{what} answered without `Metadata-Flavor: Google`: not a Google metadata server"
        )));
    }
    let (value, expires) = read_token(&what, &answer)?;
    cloud.google.put(&cache_key, value.clone(), expires);
    Ok(Token { value, cache_key })
}

/// An OAuth 2.0 token answer: the token and when it expires. A refused grant is refused
/// credentials; the endpoint's `error_description` says why.
pub(crate) fn read_token(what: &str, answer: &Answer) -> Result<(String, SystemTime), QueryError> {
    #[derive(Deserialize)]
    struct TokenAnswer {
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<f64>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    if !answer.status.is_success() {
        let body: Option<TokenAnswer> = serde_json::from_str(&answer.body).ok();
        let oauth = body.as_ref().and_then(|b| b.error.as_deref());
        let kind = match answer.status.as_u16() {
            // RFC 6749: a refused grant or client is 400 or 401.
            400 | 401 | 403 if oauth.is_some() || answer.status.as_u16() != 400 => {
                ErrorKind::Unauthorized
            }
            429 => ErrorKind::RateLimited,
            s if s >= 500 => ErrorKind::Unavailable,
            _ => ErrorKind::Status,
        };
        let message = match (
            oauth,
            body.as_ref().and_then(|b| b.error_description.as_deref()),
        ) {
            (Some(error), Some(description)) => format!(
                "{what} answered {} {}: {}",
                answer.status,
                remote_text(error),
                remote_text(description)
            ),
            _ => answer.status_error(what).message,
        };
        return Err(QueryError::new(kind, message));
    }
    let body: TokenAnswer = answer.json(what)?;
    let value = body.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
        QueryError::new(
            ErrorKind::Decode,
            format!("{what} answered without an access_token"),
        )
    })?;
    let lifetime = body
        .expires_in
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(300), |s| {
            Duration::try_from_secs_f64(s.min(86_400.0)).unwrap_or(Duration::from_secs(300))
        });
    Ok((value, SystemTime::now() + lifetime))
}
