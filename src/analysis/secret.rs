//! Reading a provider's credentials from a Secret, on every check as Flagger does, so a
//! rotated key is used at the next tick.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::analysis::provider::{QueryError, SecretData};

/// The decoded values of Secret `namespace/name`.
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
}
