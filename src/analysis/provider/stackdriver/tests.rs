use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use super::*;
use crate::api::MetricProviderType;
use serin_stack::testing::fake_http::{FakeServer, Request, Response};

const MQL: &str = "fetch k8s_container | metric 'istio.io/service/server/request_count'";

fn provider(address: Option<&str>) -> MetricTemplateProvider {
    let mut provider = super::super::template_at(MetricProviderType::Stackdriver, "");
    provider.address = address.map(String::from);
    provider
}

fn series(value: serde_json::Value) -> serde_json::Value {
    json!({"timeSeriesDescriptor": {}, "timeSeriesData": [
        {"labelValues": [], "pointData": [
            {"values": [value], "timeInterval": {"endTime": "2024-05-29T16:26:40Z"}},
            {"values": [{"doubleValue": 99.0}], "timeInterval": {"endTime": "2024-05-29T16:25:40Z"}}
        ]}
    ]})
}

/// One server for the token endpoint (`/token`) and the API, answering the API with
/// `responses` in turn (then the last again).
async fn server(responses: Vec<Response>) -> FakeServer {
    let responses = std::sync::Mutex::new(responses.into_iter());
    let last = std::sync::Mutex::new(None::<Response>);
    FakeServer::start(move |r: &Request| {
        if r.path == "/token" {
            return Response::json(
                200,
                json!({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"}),
            );
        }
        let next = responses.lock().unwrap().next();
        let mut last = last.lock().unwrap();
        if let Some(r) = next {
            *last = Some(r);
        }
        last.clone().unwrap()
    })
    .await
}

fn keyed(server: &FakeServer, cloud: &Arc<Cloud>) -> Stackdriver {
    let key = serin_stack::testing::stackdriver_key(&format!("{}/token", server.url));
    let secret = SecretData::from([
        (PROJECT.to_string(), "my-project".to_string()),
        (SERVICE_ACCOUNT_KEY.to_string(), key),
    ]);
    Stackdriver::from_template(
        &provider(Some(&server.url)),
        Some(("ns/gcp", &secret)),
        cloud,
    )
    .unwrap()
}

fn no_env() -> Arc<Cloud> {
    Arc::new(Cloud::with_vars(Vec::<(String, String)>::new()).unwrap())
}

async fn run(sd: &Stackdriver, budget: Duration) -> Result<Reading, QueryError> {
    let http = Http::new(Duration::from_millis(500)).unwrap();
    let query = Query {
        text: MQL,
        interval: Duration::from_secs(60),
        now: chrono::Utc::now(),
        deadline: Instant::now() + budget,
    };
    sd.query(&http, query).await
}

async fn answered(body: serde_json::Value) -> Result<Reading, QueryError> {
    let server = server(vec![Response::json(200, body)]).await;
    run(&keyed(&server, &no_env()), Duration::ZERO).await
}

/// The claims of a JWT after checking its RS256 signature with the TEST key's public key.
fn verified_claims(jwt: &str) -> serde_json::Value {
    let pem = serin_stack::testing::stackdriver_public_key();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let (input, signature) = jwt.rsplit_once('.').unwrap();
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
        .verify(input.as_bytes(), &b64(signature))
        .expect("signed with the service-account key");
    let claims = input.split('.').nth(1).unwrap();
    serde_json::from_slice(&b64(claims)).unwrap()
}

#[tokio::test]
async fn exchanges_a_signed_jwt_once_and_reads_the_newest_point() {
    let server = server(vec![Response::json(
        200,
        series(json!({"doubleValue": 0.25})),
    )])
    .await;
    let sd = keyed(&server, &no_env());
    assert_eq!(run(&sd, Duration::ZERO).await, Ok(Reading::Value(0.25)));
    assert_eq!(run(&sd, Duration::ZERO).await, Ok(Reading::Value(0.25)));
    let requests = server.requests();
    let tokens: Vec<&Request> = requests.iter().filter(|r| r.path == "/token").collect();
    assert_eq!(tokens.len(), 1, "the token is cached");
    let form: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(tokens[0].body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let claims = verified_claims(&form["assertion"]);
    assert_eq!(
        claims["iss"],
        "serin-test@serin-test-project.iam.gserviceaccount.com"
    );
    assert_eq!(claims["aud"], format!("{}/token", server.url));
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/monitoring.read"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    let query = requests.iter().find(|r| r.path != "/token").unwrap();
    assert_eq!(query.method, "POST");
    assert_eq!(query.path, "/v3/projects/my-project/timeSeries:query");
    assert_eq!(query.headers["authorization"], "Bearer ya29.test");
    let body: serde_json::Value = serde_json::from_str(&query.body).unwrap();
    assert_eq!(body, json!({"query": MQL}));
}

#[tokio::test]
async fn typed_values_are_read_as_numbers_or_refused() {
    assert_eq!(
        answered(series(json!({"int64Value": "42"}))).await,
        Ok(Reading::Value(42.0))
    );
    assert_eq!(
        answered(series(json!({"doubleValue": "Infinity"}))).await,
        Ok(Reading::Value(f64::INFINITY))
    );
    assert!(matches!(
        answered(series(json!({"doubleValue": "NaN"}))).await,
        Ok(Reading::NoData(why)) if why.contains("NaN")
    ));
    for value in [
        json!({"distributionValue": {"count": "3"}}),
        json!({"boolValue": true}),
        json!({"stringValue": "x"}),
    ] {
        let err = answered(series(value)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query, "{err}");
    }
    for value in [json!({"doubleValue": {}}), json!({"int64Value": "1.5"})] {
        let err = answered(series(value)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Decode, "{err}");
    }
}

#[tokio::test]
async fn no_series_no_points_no_values_are_no_data() {
    for (body, needle) in [
        (json!({"timeSeriesDescriptor": {}}), "no time series"),
        (
            json!({"partialErrors": [{"code": 3, "message": "some series were dropped"}]}),
            "dropped",
        ),
        (
            json!({"timeSeriesData": [{"labelValues": []}]}),
            "no points",
        ),
        (
            json!({"timeSeriesData": [{"pointData": [{"values": []}]}]}),
            "no values",
        ),
    ] {
        let reading = answered(body).await;
        assert!(
            matches!(&reading, Ok(Reading::NoData(why)) if why.contains(needle)),
            "{reading:?}"
        );
    }
}

#[tokio::test]
async fn empty_pages_are_followed_to_the_first_time_series() {
    let server = server(vec![
        Response::json(200, json!({"nextPageToken": "p2"})),
        Response::json(200, series(json!({"doubleValue": 7.0}))),
    ])
    .await;
    let reading = run(&keyed(&server, &no_env()), Duration::ZERO).await;
    assert_eq!(reading, Ok(Reading::Value(7.0)));
    let pages: Vec<serde_json::Value> = server
        .requests()
        .iter()
        .filter(|r| r.path != "/token")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(pages[1]["pageToken"], "p2");
}

fn google(code: u16, status: &str, message: &str) -> Response {
    Response::json(
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

#[tokio::test]
async fn errors_carry_googles_status_and_a_refused_token_is_forgotten() {
    for (response, kind, needle) in [
        (
            google(
                400,
                "INVALID_ARGUMENT",
                "Line 3: unknown table operation 'frobnicate'",
            ),
            ErrorKind::Query,
            "INVALID_ARGUMENT: Line 3",
        ),
        (
            google(
                403,
                "PERMISSION_DENIED",
                "Permission monitoring.timeSeries.list denied",
            ),
            ErrorKind::Unauthorized,
            "PERMISSION_DENIED",
        ),
        (
            Response::text(502, "text/html", "<html>502. That's an error.</html>"),
            ErrorKind::Unavailable,
            "an HTML page",
        ),
        (
            Response::text(200, "text/html", "<html>sign in</html>"),
            ErrorKind::Decode,
            "not its JSON",
        ),
    ] {
        let answering = server(vec![response]).await;
        let err = run(&keyed(&answering, &no_env()), Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.contains(needle), "{err}");
    }
    let refusing = server(vec![
        google(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ),
        Response::json(200, series(json!({"doubleValue": 1.0}))),
    ])
    .await;
    let sd = keyed(&refusing, &no_env());
    let err = run(&sd, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert_eq!(run(&sd, Duration::ZERO).await, Ok(Reading::Value(1.0)));
    let exchanges = refusing
        .requests()
        .iter()
        .filter(|r| r.path == "/token")
        .count();
    assert_eq!(exchanges, 2, "the refused token was exchanged again");
}

#[tokio::test]
async fn resource_exhausted_is_retried_within_the_budget() {
    let limited =
        google(429, "RESOURCE_EXHAUSTED", "Quota exceeded").with_header("Retry-After", "0.2");
    let ok = Response::json(200, series(json!({"doubleValue": 3.0})));
    let retried = server(vec![limited.clone(), ok]).await;
    assert_eq!(
        run(&keyed(&retried, &no_env()), Duration::from_secs(2)).await,
        Ok(Reading::Value(3.0))
    );
    let limited = server(vec![limited]).await;
    let err = run(&keyed(&limited, &no_env()), Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited, "{err}");
}

#[tokio::test]
async fn a_refused_grant_is_an_authorization_failure_with_googles_reason() {
    let token = FakeServer::start(|_| {
        Response::json(
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
        )
    })
    .await;
    let sd = keyed(&token, &no_env());
    let err = run(&sd, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert!(
        err.message
            .contains("invalid_grant: Invalid JWT Signature."),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_key_the_metadata_servers_token_is_used() {
    let metadata = FakeServer::start(|r| {
        let google = r.headers.get("metadata-flavor").map(String::as_str) == Some("Google");
        match (r.path.as_str(), google) {
            ("/computeMetadata/v1/instance/service-accounts/default/token", true) => {
                Response::json(200, json!({"access_token": "ya29.wi", "expires_in": 3599}))
                    .with_header("Metadata-Flavor", "Google")
            }
            ("/v3/projects/my-project/timeSeries:query", _) => {
                Response::json(200, series(json!({"doubleValue": 5.0})))
            }
            _ => Response::text(403, "text/plain", "Missing Metadata-Flavor"),
        }
    })
    .await;
    let host = metadata.url.trim_start_matches("http://");
    let cloud = Arc::new(
        Cloud::with_vars([
            ("GCE_METADATA_HOST", host.to_string()),
            (ADDRESS_VAR, metadata.url.clone()),
        ])
        .unwrap(),
    );
    let secret = SecretData::from([(PROJECT.to_string(), "my-project".to_string())]);
    let sd =
        Stackdriver::from_template(&provider(None), Some(("ns/gcp", &secret)), &cloud).unwrap();
    assert_eq!(run(&sd, Duration::ZERO).await, Ok(Reading::Value(5.0)));
    let query = metadata
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/v3/"))
        .unwrap();
    assert_eq!(query.headers["authorization"], "Bearer ya29.wi");

    // Not a Google metadata server: refused.
    let impostor = FakeServer::start(|_| {
        Response::json(200, json!({"access_token": "x", "expires_in": 3599}))
    })
    .await;
    let cloud = Arc::new(
        Cloud::with_vars([(
            "GCE_METADATA_HOST",
            impostor.url.trim_start_matches("http://").to_string(),
        )])
        .unwrap(),
    );
    let sd =
        Stackdriver::from_template(&provider(None), Some(("ns/gcp", &secret)), &cloud).unwrap();
    let err = run(&sd, Duration::ZERO).await.unwrap_err();
    assert!(err.message.contains("Metadata-Flavor"), "{err}");

    // Nothing answers: no credentials.
    let cloud = Arc::new(Cloud::with_vars([("GCE_METADATA_HOST", "127.0.0.1:1")]).unwrap());
    let sd =
        Stackdriver::from_template(&provider(None), Some(("ns/gcp", &secret)), &cloud).unwrap();
    let err = run(&sd, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("no Google credentials"), "{err}");
}

#[test]
fn the_secret_and_the_address_are_checked() {
    let cloud = no_env();
    let project = |p: &str| SecretData::from([(PROJECT.to_string(), p.to_string())]);
    let err = Stackdriver::from_template(&provider(None), None, &cloud).unwrap_err();
    assert!(err.message.contains("secretRef"), "{err}");
    let empty = SecretData::new();
    let err =
        Stackdriver::from_template(&provider(None), Some(("ns/gcp", &empty)), &cloud).unwrap_err();
    assert!(err.message.contains("`project`"), "{err}");
    assert!(
        Stackdriver::from_template(&provider(None), Some(("s", &project("a/../b"))), &cloud)
            .is_err()
    );
    // The controller's token goes to Google only, never to a template's address.
    let err = Stackdriver::from_template(
        &provider(Some("https://attacker.example")),
        Some(("ns/gcp", &project("p"))),
        &cloud,
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("only sent to https://monitoring.googleapis.com"),
        "{err}"
    );
    assert!(
        Stackdriver::from_template(
            &provider(Some("https://monitoring.googleapis.com/")),
            Some(("ns/gcp", &project("p"))),
            &cloud
        )
        .is_ok()
    );
    for (key, needle) in [
        ("not json", "line 1 column 2"),
        (r#"{"type": "external_account"}"#, "external_account"),
        (r#"{"type": "service_account"}"#, "client_email"),
        (
            r#"{"client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
            "not an RSA key",
        ),
    ] {
        let secret = SecretData::from([
            (PROJECT.to_string(), "p".to_string()),
            (SERVICE_ACCOUNT_KEY.to_string(), key.to_string()),
        ]);
        let err = Stackdriver::from_template(&provider(None), Some(("ns/gcp", &secret)), &cloud)
            .unwrap_err();
        assert!(err.message.contains(needle), "{key}: {err}");
        assert!(!err.message.contains("AAAA"), "{err}");
    }
}
