//! Reading a provider's or alert's credentials from a Secret, on every use as Flagger does,
//! so a rotated key is used at the next tick; and the opt-in label (`--secret-label`) such a
//! Secret must carry.

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::analysis::provider::{QueryError, SecretData};

/// `--secret-label KEY[=VALUE]`: the label a Secret must carry to be used as a metric
/// provider's or an alert provider's credentials. Without it, a tenant who may create
/// MetricTemplates or AlertProviders can have serin read any Secret of their namespace (a
/// service account token, another app's database password) and send it to an address of their
/// choosing; with it, only the Secrets a namespace's owner labelled for serin are used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequiredLabel {
    pub key: String,
    /// `None`: any value.
    pub value: Option<String>,
}

impl std::str::FromStr for RequiredLabel {
    type Err = String;

    fn from_str(s: &str) -> Result<RequiredLabel, String> {
        let (key, value) = match s.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().to_string())),
            None => (s.trim(), None),
        };
        if key.is_empty() {
            return Err(format!(
                "{s:?}: a label key is needed, as KEY or KEY=VALUE (e.g. serin.io/credentials=true)"
            ));
        }
        Ok(RequiredLabel {
            key: key.to_string(),
            value,
        })
    }
}

impl std::fmt::Display for RequiredLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

impl RequiredLabel {
    /// `Ok` when `secret` carries the label; else why not, naming the Secret, the label and
    /// the fix.
    pub fn check(&self, secret: &Secret) -> Result<(), String> {
        let found = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(&self.key));
        let carries = match (&self.value, found) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(wanted), Some(value)) => wanted == value,
        };
        if carries {
            return Ok(());
        }
        let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        let label = match &self.value {
            Some(_) => self.to_string(),
            None => format!("{}=<any value>", self.key),
        };
        Err(format!(
            "Secret {namespace}/{name} lacks the label {label}, which this controller \
             (--secret-label) requires of every Secret used as provider or alert credentials: \
             label it (kubectl label secret -n {namespace} {name} {self}) if it is meant for \
             serin, or reference another Secret"
        ))
    }
}

static REQUIRED: OnceLock<Option<RequiredLabel>> = OnceLock::new();

/// Sets the process' requirement (the controller does, from `--secret-label`, before any
/// Secret is read). One policy for the whole process, as the outbound policy: every reader of
/// credentials (metric checks, alert routing) obeys it without being handed it. A second call
/// is ignored.
pub fn require_label(label: Option<RequiredLabel>) {
    let _ = REQUIRED.set(label);
}

/// The installed requirement, if any.
pub fn required_label() -> Option<&'static RequiredLabel> {
    REQUIRED.get().and_then(Option::as_ref)
}

/// Whether `secret` may be used as credentials under the process' requirement.
pub fn usable(secret: &Secret) -> Result<(), String> {
    required_label().map_or(Ok(()), |label| label.check(secret))
}

/// The decoded values of Secret `namespace/name`, read with a GET (namespaced: the Secret the
/// MetricTemplate names), if it may be used as credentials.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<SecretData, QueryError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(name)
        .await
        .map_err(|e| QueryError::config(format!("cannot read Secret {namespace}/{name}: {e}")))?;
    usable(&secret).map_err(QueryError::config)?;
    Ok(decode(&secret))
}

/// `data` (already base64-decoded by k8s-openapi) and `stringData` (only ever present on
/// objects read from files), values trimmed.
pub fn decode(secret: &Secret) -> SecretData {
    let mut out = SecretData::new();
    for (key, value) in secret.data.iter().flatten() {
        out.insert(
            key.clone(),
            String::from_utf8_lossy(&value.0).trim().to_string(),
        );
    }
    for (key, value) in secret.string_data.iter().flatten() {
        out.insert(key.clone(), value.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn values_are_decoded_and_trimmed() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(b"abc\n".to_vec()),
            )])),
            string_data: Some(BTreeMap::from([(
                "username".to_string(),
                " u ".to_string(),
            )])),
            ..Secret::default()
        };
        let data = decode(&secret);
        assert_eq!(data["token"], "abc");
        assert_eq!(data["username"], "u");
    }

    fn labelled(labels: &[(&str, &str)]) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("team-a".into());
        secret.metadata.name = Some("datadog".into());
        secret.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        secret
    }

    #[test]
    fn a_required_label_admits_only_secrets_that_carry_it() {
        let label: RequiredLabel = "serin.io/credentials=true".parse().unwrap();
        assert_eq!(label.to_string(), "serin.io/credentials=true");
        assert!(
            label
                .check(&labelled(&[("serin.io/credentials", "true")]))
                .is_ok()
        );
        for wrong in [&[][..], &[("serin.io/credentials", "false")][..]] {
            let e = label.check(&labelled(wrong)).unwrap_err();
            assert!(
                e.contains("Secret team-a/datadog")
                    && e.contains("serin.io/credentials=true")
                    && e.contains("kubectl label secret -n team-a datadog"),
                "{e}"
            );
        }
        let any: RequiredLabel = "serin.io/credentials".parse().unwrap();
        assert!(
            any.check(&labelled(&[("serin.io/credentials", "")]))
                .is_ok()
        );
        assert!(
            any.check(&labelled(&[]))
                .unwrap_err()
                .contains("<any value>")
        );
        assert!("=true".parse::<RequiredLabel>().is_err());
    }
}
