//! The controller's own cloud identity, for the providers whose credentials Flagger takes from
//! its process rather than a Secret: CloudWatch (the AWS SDK's default credential chain) and
//! Stackdriver without a `serviceAccountKey` (Google's Application Default Credentials).
//!
//! The environment is read once, when the analyzer is built ([`Cloud::from_env`]); tests pass
//! their own ([`Cloud::with_vars`]). Credentials fetched from it (STS, the container and
//! instance metadata services, Google's metadata server) and access tokens exchanged for
//! service-account keys are cached until shortly before they expire, for every check to share.
//!
//! Its HTTP client is for endpoints the controller's environment names, never a tenant: the
//! metadata services are link-local, which the tenants' outbound policy refuses, and they hand
//! out the controller's credentials. It follows no redirects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{Answer, ErrorKind, LimitedReadError, MAX_BODY_BYTES, QueryError, read_limited};

/// Credentials that expire within this margin are fetched again.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long the client waits for a credential endpoint (the metadata services answer in
/// milliseconds; off EC2 or GCE nothing answers at all).
const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The prefixes of the environment variables read: the AWS SDKs' and Google's, and serin's own.
const PREFIXES: [&str; 4] = ["AWS_", "GOOGLE_", "GCE_", "SERIN_"];

/// The controller's environment and the credentials fetched with it.
pub struct Cloud {
    vars: BTreeMap<String, String>,
    client: reqwest::Client,
    pub(super) aws: Cache<super::cloudwatch::AwsCredentials>,
    pub(super) google: Cache<String>,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the values include secret keys.
        f.debug_struct("Cloud")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Cloud {
    /// The process' environment (the `AWS_*`, `GOOGLE_*`, `GCE_*` and `SERIN_*` variables).
    pub fn from_env() -> anyhow::Result<Cloud> {
        Cloud::with_vars(
            std::env::vars().filter(|(name, _)| PREFIXES.iter().any(|p| name.starts_with(p))),
        )
    }

    /// These variables instead of the process' (tests).
    pub fn with_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> anyhow::Result<Cloud> {
        use anyhow::Context;
        // The provider every serin client uses (reqwest is built without one of its own).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("serin/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("cannot build the cloud credentials' HTTP client")?;
        Ok(Cloud {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            client,
            aws: Cache::default(),
            google: Cache::default(),
        })
    }

    /// A variable of the environment, trimmed; `None` when unset or empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The client for credential endpoints named by the environment.
    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request to a credential endpoint and reads its answer (bounded), naming `what`
    /// in errors. Not for tenant addresses: see the module documentation.
    pub(super) async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, QueryError> {
        let response = request.send().await.map_err(|e| transport(what, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = read_limited(response, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                LimitedReadError::TooLarge => QueryError::new(
                    ErrorKind::TooLarge,
                    format!("{what} answered more than {} KiB", MAX_BODY_BYTES / 1024),
                ),
                LimitedReadError::Transport(e) => transport(what, &e),
            })?;
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

fn transport(what: &str, error: &reqwest::Error) -> QueryError {
    let cause = crate::error_chain(error);
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_builder() {
        ErrorKind::Config
    } else {
        ErrorKind::Connect
    };
    QueryError::new(kind, format!("{what}: {cause}"))
}

/// Values by key until they expire.
pub(super) struct Cache<T> {
    entries: Mutex<HashMap<String, (T, SystemTime)>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Cache<T> {
    /// The value under `key`, unless it expires within [`REFRESH_MARGIN`].
    pub fn get(&self, key: &str) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (value, expires) = entries.get(key)?;
        let fresh = SystemTime::now()
            .checked_add(REFRESH_MARGIN)
            .is_some_and(|soon| soon < *expires);
        fresh.then(|| value.clone())
    }

    pub fn put(&self, key: &str, value: T, expires: SystemTime) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Keys are credentials (a few per cluster): dropping the stale ones bounds the map.
        let now = SystemTime::now();
        entries.retain(|_, (_, at)| *at > now);
        entries.insert(key.to_string(), (value, expires));
    }

    /// Forgets `key` (a token the provider refused).
    pub fn forget(&self, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
    }
}

/// The hex SHA-256 of `parts` (cache keys of credentials, which never hold them in clear).
pub(super) fn fingerprint(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.len().to_le_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cloud_variables_are_kept_and_empty_ones_are_unset() {
        let cloud = Cloud::with_vars([("AWS_REGION", " eu-west-1 "), ("AWS_PROFILE", "")]).unwrap();
        assert_eq!(cloud.var("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(cloud.var("AWS_PROFILE"), None);
        assert_eq!(cloud.var("HOME"), None);
        let debug = format!("{cloud:?}");
        assert!(
            debug.contains("AWS_REGION") && !debug.contains("eu-west-1"),
            "{debug}"
        );
    }

    #[test]
    fn cached_values_are_served_until_shortly_before_they_expire() {
        let cache = Cache::<String>::default();
        let now = SystemTime::now();
        cache.put("soon", "a".into(), now + Duration::from_secs(60));
        cache.put("later", "b".into(), now + Duration::from_secs(3600));
        assert_eq!(cache.get("soon"), None);
        assert_eq!(cache.get("later").as_deref(), Some("b"));
        cache.forget("later");
        assert_eq!(cache.get("later"), None);
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }
}
