//! The controller's AWS credentials, found as the AWS SDK Flagger links finds them (its
//! session's default chain; Flagger reads no Secret for CloudWatch), first match wins:
//!
//! 1. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//! 2. a web identity, as IRSA on EKS injects it: `AWS_ROLE_ARN` and
//!    `AWS_WEB_IDENTITY_TOKEN_FILE` (`AWS_ROLE_SESSION_NAME` optional), exchanged with STS
//!    `AssumeRoleWithWebIdentity` at `https://sts.<region>.amazonaws.com` (or
//!    `AWS_ENDPOINT_URL_STS`);
//! 3. container credentials, as EKS Pod Identity and ECS serve them:
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, with
//!    the token of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//! 4. the EC2 instance's role from IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, default
//!    `http://169.254.169.254`), unless `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Not read: the shared files (`~/.aws/credentials`, `AWS_PROFILE`), which a pod does not
//! have. Fetched credentials are cached until 5 minutes before they expire.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::super::cloud::Cloud;
use super::super::{Answer, ErrorKind, QueryError, remote_text};
use super::{aws_error, xml_text};

/// A signing identity.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The ECS agent's address, for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_HOST: &str = "http://169.254.170.2";
const IMDS: &str = "http://169.254.169.254";
/// The session name STS records when `AWS_ROLE_SESSION_NAME` is unset.
const SESSION_NAME: &str = "serin";

/// The controller's credentials, for signing in `region` (STS' regional endpoint).
pub async fn resolve(cloud: &Cloud, region: &str) -> Result<AwsCredentials, QueryError> {
    if let Some(credentials) = from_env(cloud)? {
        return Ok(credentials);
    }
    if let (Some(role), Some(file)) = (
        cloud.var("AWS_ROLE_ARN"),
        cloud.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
    ) {
        let key = format!("web-identity {role} {file}");
        return cached(cloud, &key, web_identity(cloud, region, role, file)).await;
    }
    if let Some(uri) = container_uri(cloud) {
        let key = format!("container {uri}");
        return cached(cloud, &key, container(cloud, &uri)).await;
    }
    let disabled = cloud
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled {
        return Err(no_credentials("AWS_EC2_METADATA_DISABLED is true"));
    }
    let imds = cloud
        .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or(IMDS)
        .trim_end_matches('/')
        .to_string();
    let key = format!("imds {imds}");
    cached(cloud, &key, instance_role(cloud, &imds))
        .await
        .map_err(|e| match e.kind {
            // Nothing answers off EC2: that is a missing configuration, not an outage.
            ErrorKind::Connect | ErrorKind::Timeout => {
                no_credentials(&format!("the EC2 instance metadata service: {e}"))
            }
            _ => e,
        })
}

fn no_credentials(last: &str) -> QueryError {
    QueryError::config(format!(
        "no AWS credentials for cloudwatch: the controller has no AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY, no IRSA web identity (AWS_ROLE_ARN, \
         AWS_WEB_IDENTITY_TOKEN_FILE), no container credentials, and {last}"
    ))
}

/// Static keys from the environment; one of the pair without the other is an error.
fn from_env(cloud: &Cloud) -> Result<Option<AwsCredentials>, QueryError> {
    match (
        cloud.var("AWS_ACCESS_KEY_ID"),
        cloud.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: cloud.var("AWS_SESSION_TOKEN").map(String::from),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(QueryError::config(
            "AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY",
        )),
        (None, Some(_)) => Err(QueryError::config(
            "AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID",
        )),
    }
}

/// The cached credentials under `key`, else `fetch`'s (cached until they expire).
async fn cached(
    cloud: &Cloud,
    key: &str,
    fetch: impl std::future::Future<Output = Result<(AwsCredentials, SystemTime), QueryError>>,
) -> Result<AwsCredentials, QueryError> {
    if let Some(credentials) = cloud.aws.get(key) {
        return Ok(credentials);
    }
    let (credentials, expires) = fetch.await?;
    cloud.aws.put(key, credentials.clone(), expires);
    Ok(credentials)
}

/// STS `AssumeRoleWithWebIdentity` with the token file's content (read on every exchange:
/// the kubelet rotates it).
async fn web_identity(
    cloud: &Cloud,
    region: &str,
    role: &str,
    file: &str,
) -> Result<(AwsCredentials, SystemTime), QueryError> {
    let token = std::fs::read_to_string(file).map_err(|e| {
        QueryError::config(format!(
            "cannot read AWS_WEB_IDENTITY_TOKEN_FILE {file}: {e}"
        ))
    })?;
    let endpoint = match cloud.var("AWS_ENDPOINT_URL_STS") {
        Some(url) => url.to_string(),
        None => format!("https://sts.{region}.amazonaws.com/"),
    };
    let session = cloud.var("AWS_ROLE_SESSION_NAME").unwrap_or(SESSION_NAME);
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role)
        .append_pair("RoleSessionName", session)
        .append_pair("WebIdentityToken", token.trim())
        .finish();
    // STS is named by the controller's environment, like the metadata services.
    let request = cloud
        .client()
        .post(&endpoint)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form);
    let what = format!("STS AssumeRoleWithWebIdentity ({endpoint})");
    let answer = cloud.send(&what, request).await?;
    if !answer.status.is_success() {
        return Err(aws_error("STS AssumeRoleWithWebIdentity", &answer));
    }
    let field = |tag: &str| {
        xml_text(&answer.body, tag)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                QueryError::new(
                    ErrorKind::Decode,
                    format!(
                        "STS AssumeRoleWithWebIdentity answered without <{tag}>: {}",
                        answer.describe_body()
                    ),
                )
            })
    };
    let credentials = AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
    };
    let expires = expiration(&field("Expiration")?);
    Ok((credentials, expires))
}

/// The container credentials endpoint, if the environment names one.
fn container_uri(cloud: &Cloud) -> Option<String> {
    if let Some(full) = cloud.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        return Some(full.to_string());
    }
    cloud
        .var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .map(|relative| format!("{ECS_HOST}{relative}"))
}

/// The JSON credentials of the container endpoint (and of IMDS), as the SDKs read them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

fn read_json_credentials(
    what: &str,
    answer: &Answer,
) -> Result<(AwsCredentials, SystemTime), QueryError> {
    if !answer.status.is_success() {
        return Err(answer.status_error(what));
    }
    let json: JsonCredentials = answer.json(what)?;
    if let Some(code) = json.code.as_deref().filter(|c| *c != "Success") {
        return Err(QueryError::new(
            ErrorKind::Unauthorized,
            format!(
                "{what} answered {}: {}",
                remote_text(code),
                remote_text(json.message.as_deref().unwrap_or(""))
            ),
        ));
    }
    let (Some(id), Some(secret)) = (json.access_key_id, json.secret_access_key) else {
        return Err(QueryError::new(
            ErrorKind::Decode,
            format!("{what} answered without AccessKeyId and SecretAccessKey"),
        ));
    };
    let expires = json.expiration.as_deref().map_or_else(
        || SystemTime::now() + Duration::from_secs(15 * 60),
        expiration,
    );
    Ok((
        AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: json.token.filter(|t| !t.is_empty()),
        },
        expires,
    ))
}

/// EKS Pod Identity or ECS: `GET` the endpoint with its authorization token, if any.
async fn container(cloud: &Cloud, uri: &str) -> Result<(AwsCredentials, SystemTime), QueryError> {
    let token = match cloud.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
            QueryError::config(format!(
                "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"
            ))
        })?),
        None => cloud
            .var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
            .map(String::from),
    };
    let mut request = cloud.client().get(uri).header("Accept", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", token.trim());
    }
    let what = format!("the container credentials endpoint {uri}");
    let answer = cloud.send(&what, request).await?;
    read_json_credentials(&what, &answer)
}

/// IMDSv2: a session token, the instance's role name, then the role's credentials.
async fn instance_role(
    cloud: &Cloud,
    imds: &str,
) -> Result<(AwsCredentials, SystemTime), QueryError> {
    let what = format!("the EC2 instance metadata service {imds}");
    let session = cloud
        .send(
            &what,
            cloud
                .client()
                .put(format!("{imds}/latest/api/token"))
                .header("X-aws-ec2-metadata-token-ttl-seconds", "21600"),
        )
        .await?;
    if !session.status.is_success() {
        return Err(session.status_error(&what));
    }
    let token = session.body.trim().to_string();
    let base = format!("{imds}/latest/meta-data/iam/security-credentials/");
    let roles = cloud
        .send(
            &what,
            cloud
                .client()
                .get(&base)
                .header("X-aws-ec2-metadata-token", &token),
        )
        .await?;
    if roles.status == reqwest::StatusCode::NOT_FOUND {
        return Err(QueryError::config(format!(
            "{what}: the instance has no IAM role"
        )));
    }
    if !roles.status.is_success() {
        return Err(roles.status_error(&what));
    }
    let role = roles
        .body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .filter(|r| {
            r.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
        })
        .ok_or_else(|| {
            QueryError::new(
                ErrorKind::Decode,
                format!("{what} named no usable IAM role: {}", roles.describe_body()),
            )
        })?
        .to_string();
    let answer = cloud
        .send(
            &what,
            cloud
                .client()
                .get(format!("{base}{role}"))
                .header("X-aws-ec2-metadata-token", &token),
        )
        .await?;
    read_json_credentials(&what, &answer)
}

/// An RFC 3339 expiration; unparseable: 15 minutes from now (fetched again soon).
fn expiration(text: &str) -> SystemTime {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .and_then(|at| u64::try_from(at.timestamp()).ok())
        .map_or_else(
            || SystemTime::now() + Duration::from_secs(15 * 60),
            |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        )
}
