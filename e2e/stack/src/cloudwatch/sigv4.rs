//! AWS Signature Version 4, checked as AWS checks it, from the documented algorithm (an
//! implementation of its own, so a client's signer is tested against the specification and
//! not against itself): the credential scope, the date, the canonical request of the signed
//! headers, the signature.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The keys the emulator accepts.
pub struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
}

/// Why a request is refused: an AWS error code and its message.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// What a request carries that SigV4 covers.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Every header, names lower-cased.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Checks a request's `Authorization` against `keys`.
pub fn verify(request: &Signed<'_>, keys: &Keys<'_>) -> Result<(), Refused> {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(authorization) = header("authorization") else {
        return Err(refused(
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let Some(fields) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(refused(
            "IncompleteSignature",
            "Unsupported AWS 'algorithm': expected AWS4-HMAC-SHA256",
        ));
    };
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    let (Some(credential), Some(signed_headers), Some(signature)) = (
        field("Credential"),
        field("SignedHeaders"),
        field("Signature"),
    ) else {
        return Err(refused(
            "IncompleteSignature",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminal] = scope.as_slice() else {
        return Err(refused(
            "IncompleteSignature",
            format!("Credential {credential} is not KEY/DATE/REGION/SERVICE/aws4_request"),
        ));
    };
    if *key_id != keys.access_key_id {
        return Err(refused(
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ));
    }
    if let Some(token) = keys.session_token
        && header("x-amz-security-token") != Some(token)
    {
        return Err(refused(
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ));
    }
    let Some(amz_date) = header("x-amz-date") else {
        return Err(refused(
            "IncompleteSignature",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header",
        ));
    };
    let Ok(at) = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ") else {
        return Err(refused(
            "IncompleteSignature",
            format!("X-Amz-Date {amz_date} is not YYYYMMDD'T'HHMMSS'Z'"),
        ));
    };
    let skew = (request.now - at.and_utc()).num_seconds().abs();
    if skew > 5 * 60 {
        return Err(refused(
            "SignatureDoesNotMatch",
            format!("Signature expired: {amz_date} is now earlier or later than 5 minutes away"),
        ));
    }
    if !amz_date.starts_with(date) || *terminal != "aws4_request" || *service != keys.service {
        return Err(refused(
            "SignatureDoesNotMatch",
            format!(
                "Credential should be scoped to a valid date, service and terminal: {credential}"
            ),
        ));
    }
    if *region != keys.region {
        return Err(refused(
            "SignatureDoesNotMatch",
            format!(
                "Credential should be scoped to a valid region. Wrong region {region}, expecting \
                 {}",
                keys.region
            ),
        ));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") {
        return Err(refused(
            "SignatureDoesNotMatch",
            "'Host' must be a signed header",
        ));
    }
    let canonical = canonical_request(request, &names);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = [*date, region, service, "aws4_request"].iter().fold(
        format!("AWS4{}", keys.secret_access_key).into_bytes(),
        |key, part| hmac(&key, part.as_bytes()),
    );
    let expected = hex(&hmac(&key, to_sign.as_bytes()));
    if expected != signature {
        return Err(refused(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ));
    }
    Ok(())
}

/// The `Authorization` of `request` signed with `keys` over all of its headers, at its
/// `x-amz-date` (the stack's own tests' requests; a client is checked by [`verify`]).
pub fn authorization(request: &Signed<'_>, keys: &Keys<'_>) -> String {
    let amz_date = request
        .headers
        .iter()
        .find(|(n, _)| n == "x-amz-date")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let date = amz_date.get(..8).unwrap_or_default();
    let mut names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let canonical = canonical_request(request, &names);
    let scope = format!("{date}/{}/{}/aws4_request", keys.region, keys.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = [date, keys.region, keys.service, "aws4_request"]
        .iter()
        .fold(
            format!("AWS4{}", keys.secret_access_key).into_bytes(),
            |key, part| hmac(&key, part.as_bytes()),
        );
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={}",
        keys.access_key_id,
        names.join(";"),
        hex(&hmac(&key, to_sign.as_bytes()))
    )
}

/// The canonical request: method, URI, sorted query, the signed headers' trimmed values,
/// their names, the body's hash.
fn canonical_request(request: &Signed<'_>, names: &[&str]) -> String {
    let mut query: Vec<(String, String)> = form_urlencoded::parse(request.query.as_bytes())
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let headers: String = names
        .iter()
        .map(|name| {
            let values: Vec<String> = request
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            format!("{name}:{}\n", values.join(","))
        })
        .collect();
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    format!(
        "{}\n{path}\n{}\n{headers}\n{}\n{}",
        request.method,
        query.join("&"),
        names.join(";"),
        hex(&Sha256::digest(request.body))
    )
}

/// RFC 3986 encoding of everything but the unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS' own example (the Signature Version 4 test suite's `get-vanilla`): the canonical
    /// request, string to sign and signature this checker computes must be AWS'.
    #[test]
    fn the_aws_test_suite_vanilla_request_verifies() {
        let headers = vec![
            ("host".to_string(), "example.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
            (
                "authorization".to_string(),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                    .to_string(),
            ),
        ];
        let now = chrono::NaiveDateTime::parse_from_str("20150830T123600Z", "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        let request = Signed {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
            now,
        };
        let keys = Keys {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            service: "service",
        };
        assert_eq!(verify(&request, &keys), Ok(()));
        let wrong = Keys {
            secret_access_key: "not-the-secret",
            ..keys
        };
        assert_eq!(
            verify(&request, &wrong).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        let later = Signed {
            now: now + chrono::Duration::minutes(10),
            ..request
        };
        let keys = Keys {
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ..wrong
        };
        assert!(
            verify(&later, &keys)
                .unwrap_err()
                .message
                .contains("expired")
        );
    }
}
