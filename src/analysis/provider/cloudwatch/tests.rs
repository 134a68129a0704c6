use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::analysis::provider::fixture::{http, minute_query, replaying};
use crate::api::MetricProviderType;
use serin_stack::testing::fake_http::{FakeServer, Response};

const QUERY: &str = r#"[
  {"Id": "e1", "Expression": "100 * m1 / m2", "Label": "ErrorRate"},
  {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "ErrorCount",
    "Dimensions": [{"Name": "appName", "Value": "podinfo.test"}]},
    "Period": 60, "Stat": "Sum"}, "ReturnData": false},
  {"Id": "m2", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "RequestCount",
    "Dimensions": [{"Name": "appName", "Value": "podinfo.test"}]},
    "Period": 60, "Stat": "Sum"}, "ReturnData": false}
]"#;

fn cloud(session_token: Option<&str>) -> Arc<Cloud> {
    let mut vars = vec![
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ];
    if let Some(token) = session_token {
        vars.push(("AWS_SESSION_TOKEN", token));
    }
    Arc::new(Cloud::with_vars(vars).unwrap())
}

fn provider(address: &str, region: Option<&str>) -> MetricTemplateProvider {
    let mut provider = super::super::template_at(MetricProviderType::Cloudwatch, address);
    provider.region = region.map(String::from);
    provider
}

/// `text` over a 1m interval against a server answering `responses` in turn (then the last
/// again), within `budget`.
async fn ask(
    responses: Vec<Response>,
    text: &str,
    budget: Duration,
) -> (Result<Reading, QueryError>, FakeServer) {
    let server = replaying(responses).await;
    let cw = CloudWatch::from_template(
        &provider(&server.url, Some("eu-west-1")),
        &cloud(Some("session")),
    )
    .unwrap();
    (cw.query(&http(), minute_query(text, budget)).await, server)
}

async fn answered(body: serde_json::Value) -> Result<Reading, QueryError> {
    ask(vec![Response::json(200, body)], QUERY, Duration::ZERO)
        .await
        .0
}

fn aws(status: u16, code: &str, message: &str) -> Response {
    Response::text(
        status,
        "application/x-amz-json-1.0",
        &json!({"__type": code, "message": message}).to_string(),
    )
    .with_header("x-amzn-query-error", &format!("{code};Sender"))
}

#[tokio::test]
async fn sends_the_query_as_flagger_does_signed_for_the_region() {
    let body = json!({"MetricDataResults": [
        {"Id": "e1", "Values": [0.5, 0.9], "Timestamps": [1716999960, 1716999900],
         "StatusCode": "Complete"}
    ]});
    let (reading, server) = ask(
        vec![Response::json(200, body)],
        QUERY,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(reading, Ok(Reading::Value(0.5)));
    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/");
    assert_eq!(
        request.headers["x-amz-target"],
        "GraniteServiceVersion20100801.GetMetricData"
    );
    assert_eq!(
        request.headers["content-type"],
        "application/x-amz-json-1.0"
    );
    assert_eq!(request.headers["x-amz-security-token"], "session");
    let authorization = &request.headers["authorization"];
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
            && authorization.contains("/eu-west-1/monitoring/aws4_request")
            && authorization.contains("SignedHeaders=content-type;host;"),
        "{authorization}"
    );
    assert!(!authorization.contains("secret"), "{authorization}");
    let sent: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(sent["StartTime"], 1_716_999_400);
    assert_eq!(sent["EndTime"], 1_717_000_000);
    assert_eq!(sent["MaxDatapoints"], 20);
    assert_eq!(sent["ScanBy"], "TimestampDescending");
    assert_eq!(sent["MetricDataQueries"][0]["Expression"], "100 * m1 / m2");
    assert_eq!(sent["MetricDataQueries"][1]["ReturnData"], false);
}

#[tokio::test]
async fn no_result_no_values_or_a_null_is_no_data() {
    let reading = answered(json!({"MetricDataResults": []})).await;
    assert!(matches!(reading, Ok(Reading::NoData(why)) if why.contains("no MetricDataResults")));
    let reading = answered(json!({})).await;
    assert!(matches!(reading, Ok(Reading::NoData(_))));
    let reading = answered(json!({"MetricDataResults": [{"Id": "e1", "Values": [],
        "StatusCode": "Complete", "Messages": [{"Code": "ArithmeticError", "Value": "1/0"}]}]}))
    .await;
    assert!(
        matches!(&reading, Ok(Reading::NoData(why)) if why.contains("e1 has no values") && why.contains("ArithmeticError")),
        "{reading:?}"
    );
    let reading =
        answered(json!({"MetricDataResults": [{"Id": "e1", "Values": [null, 1.0]}]})).await;
    assert!(matches!(reading, Ok(Reading::NoData(why)) if why.contains("null")));
}

#[tokio::test]
async fn the_first_of_several_results_is_used_and_result_statuses_are_errors() {
    let reading = answered(json!({"MetricDataResults": [
        {"Id": "a", "Values": [3.0]}, {"Id": "b", "Values": [9.0]}
    ]}))
    .await;
    assert_eq!(reading, Ok(Reading::Value(3.0)));
    let err = answered(json!({"MetricDataResults": [{"Id": "a", "StatusCode": "Forbidden"}]}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    let err = answered(json!({"MetricDataResults": [{"Id": "a", "StatusCode": "InternalError"}]}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
}

#[tokio::test]
async fn errors_are_classified_by_their_aws_code() {
    for (response, kind, needle) in [
        (
            aws(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match",
            ),
            ErrorKind::Unauthorized,
            "SignatureDoesNotMatch",
        ),
        (
            aws(
                400,
                "com.amazon.coral.service#UnrecognizedClientException",
                "bad token",
            ),
            ErrorKind::Unauthorized,
            "UnrecognizedClientException",
        ),
        (
            aws(
                400,
                "AccessDenied",
                "User: arn:aws:iam::1:role/x is not authorized",
            ),
            ErrorKind::Unauthorized,
            "not authorized",
        ),
        (
            aws(
                400,
                "InvalidParameterValue",
                "The value abc for parameter Id is not valid.",
            ),
            ErrorKind::Query,
            "InvalidParameterValue: The value abc",
        ),
        (
            aws(500, "InternalServiceFault", "oops"),
            ErrorKind::Unavailable,
            "InternalServiceFault",
        ),
        (
            Response::text(503, "text/html", "<html><title>ELB</title></html>"),
            ErrorKind::Unavailable,
            "an HTML page",
        ),
        (
            // The query protocol's XML, as a proxy to an older endpoint might answer.
            Response::text(
                403,
                "text/xml",
                "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>\
                 <Message>The security token included in the request is invalid.</Message>\
                 </Error></ErrorResponse>",
            ),
            ErrorKind::Unauthorized,
            "InvalidClientTokenId: The security token",
        ),
    ] {
        let err = ask(vec![response], QUERY, Duration::ZERO)
            .await
            .0
            .unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.contains(needle), "{err}");
        assert!(!err.message.contains("ELB"), "{err}");
    }
    let long = aws(400, "ValidationError", &"x".repeat(5000));
    let err = ask(vec![long], QUERY, Duration::ZERO).await.0.unwrap_err();
    assert!(err.message.len() < 400, "{err}");
}

#[tokio::test]
async fn throttling_is_retried_within_the_budget_and_an_error_beyond() {
    let ok = Response::json(
        200,
        json!({"MetricDataResults": [{"Id": "e1", "Values": [2.5]}]}),
    );
    let throttled = aws(400, "Throttling", "Rate exceeded");
    let (reading, server) = ask(vec![throttled.clone(), ok], QUERY, Duration::from_secs(3)).await;
    assert_eq!(reading, Ok(Reading::Value(2.5)));
    assert_eq!(server.requests().len(), 2);
    let started = Instant::now();
    let (reading, server) = ask(vec![throttled], QUERY, Duration::from_millis(200)).await;
    let err = reading.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited, "{err}");
    assert_eq!(server.requests().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn hostile_answers_are_errors_not_panics() {
    for body in [
        "<html>login</html>",
        "{\"MetricDataResults\": \"no\"}",
        "{\"MetricDataResults\": [{\"Values\": [\"1\"]}]}",
        "[]",
        "{\"MetricDataResults\": [1e999]}",
    ] {
        let reading = ask(
            vec![Response::text(200, "application/json", body)],
            QUERY,
            Duration::ZERO,
        )
        .await
        .0;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Decode, "{body}: {err}");
    }
    let slow = Response::json(200, json!({})).delayed(Duration::from_secs(3));
    let err = ask(vec![slow], QUERY, Duration::ZERO).await.0.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
}

#[tokio::test]
async fn a_query_that_is_not_a_metric_data_query_array_is_refused_before_sending() {
    for text in [
        "",
        "{\"Id\": \"e1\"}",
        "[]",
        "[1, 2]",
        "fetch k8s_container",
    ] {
        let (reading, server) =
            ask(vec![Response::json(200, json!({}))], text, Duration::ZERO).await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query, "{text}: {err}");
        assert!(server.requests().is_empty());
    }
}

#[tokio::test]
async fn availability_is_an_answered_empty_request() {
    let http = Http::new(Duration::from_millis(500)).unwrap();
    for (response, online) in [
        (
            aws(
                400,
                "ValidationError",
                "MetricDataQueries must not be empty",
            ),
            true,
        ),
        (aws(400, "Throttling", "Rate exceeded"), true),
        (aws(403, "InvalidClientTokenId", "bad"), false),
        (Response::text(502, "text/html", "<html></html>"), false),
    ] {
        let server = FakeServer::start(move |_| response.clone()).await;
        let cw = CloudWatch::from_template(&provider(&server.url, Some("us-east-1")), &cloud(None))
            .unwrap();
        assert_eq!(cw.is_online(&http).await.is_ok(), online);
    }
}

#[test]
fn the_region_is_required_and_names_the_default_endpoint() {
    let cloud = cloud(None);
    let template = |region: Option<&str>, address: Option<&str>| {
        let mut p = provider("", region);
        p.address = address.map(String::from);
        CloudWatch::from_template(&p, &cloud)
    };
    let err = template(None, None).unwrap_err();
    assert!(err.message.contains("provider.region"), "{err}");
    assert!(template(Some("evil.example/x"), None).is_err());
    assert!(template(Some("us-east-1"), Some("not a url")).is_err());
    let cw = template(Some("eu-west-1"), None).unwrap();
    assert_eq!(
        cw.endpoint.as_str(),
        "https://monitoring.eu-west-1.amazonaws.com/"
    );
    let cw = template(Some("cn-north-1"), None).unwrap();
    assert_eq!(
        cw.endpoint.as_str(),
        "https://monitoring.cn-north-1.amazonaws.com.cn/"
    );
    let cw = template(
        Some("us-east-1"),
        Some("https://vpce-1.monitoring.us-east-1.vpce.amazonaws.com"),
    )
    .unwrap();
    assert!(cw.endpoint.as_str().starts_with("https://vpce-1."));
}

#[test]
fn xml_text_reads_flat_known_documents_only() {
    let body = "<A><Code>x&amp;y</Code><Code>second</Code></A>";
    assert_eq!(xml_text(body, "Code").as_deref(), Some("x&y"));
    assert_eq!(xml_text(body, "Message"), None);
    assert_eq!(xml_text("<Code>unterminated", "Code"), None);
}

mod credentials_chain {
    use super::*;
    use crate::analysis::provider::cloudwatch::credentials::resolve;

    fn cloud_of(vars: Vec<(&str, String)>) -> Cloud {
        Cloud::with_vars(vars).unwrap()
    }

    #[tokio::test]
    async fn static_keys_come_first_and_a_lone_half_is_an_error() {
        let cloud = cloud_of(vec![
            ("AWS_ACCESS_KEY_ID", "id".into()),
            ("AWS_SECRET_ACCESS_KEY", "secret".into()),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
        ]);
        let creds = resolve(&cloud, "us-east-1").await.unwrap();
        assert_eq!(creds.access_key_id, "id");
        assert_eq!(creds.session_token, None);
        assert!(!format!("{creds:?}").contains("secret"));
        let half = cloud_of(vec![("AWS_ACCESS_KEY_ID", "id".into())]);
        let err = resolve(&half, "us-east-1").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
    }

    #[tokio::test]
    async fn irsa_web_identity_is_exchanged_with_sts_and_cached() {
        let server = FakeServer::start(|r| {
            if r.body.contains("WebIdentityToken=the-token") {
                Response::text(
                    200,
                    "text/xml",
                    "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
                     <Credentials><AccessKeyId>ASIATEMP</AccessKeyId>\
                     <SecretAccessKey>temp-secret</SecretAccessKey>\
                     <SessionToken>temp/token+=</SessionToken>\
                     <Expiration>2999-01-01T00:00:00Z</Expiration></Credentials>\
                     </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
                )
            } else {
                Response::text(
                    400,
                    "text/xml",
                    "<ErrorResponse><Error><Code>InvalidIdentityToken</Code>\
                     <Message>Couldn't retrieve verification key</Message></Error></ErrorResponse>",
                )
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "the-token\n").unwrap();
        let vars = |file: &std::path::Path| {
            vec![
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/serin".to_string()),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", file.display().to_string()),
                ("AWS_ENDPOINT_URL_STS", server.url.clone()),
            ]
        };
        let cloud = cloud_of(vars(&file));
        let creds = resolve(&cloud, "us-east-1").await.unwrap();
        assert_eq!(creds.access_key_id, "ASIATEMP");
        assert_eq!(creds.session_token.as_deref(), Some("temp/token+="));
        resolve(&cloud, "us-east-1").await.unwrap();
        assert_eq!(server.requests().len(), 1, "cached");
        let sent = &server.requests()[0].body;
        assert!(sent.contains("Action=AssumeRoleWithWebIdentity"), "{sent}");
        assert!(
            sent.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fserin"),
            "{sent}"
        );

        let other = dir.path().join("other");
        std::fs::write(&other, "expired").unwrap();
        let err = resolve(&cloud_of(vars(&other)), "us-east-1")
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
        assert!(err.message.contains("InvalidIdentityToken"), "{err}");
        let missing = dir.path().join("missing");
        let err = resolve(&cloud_of(vars(&missing)), "us-east-1")
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
    }

    #[tokio::test]
    async fn container_credentials_send_their_authorization_token() {
        let server = FakeServer::start(|r| {
            if r.headers.get("authorization").map(String::as_str) == Some("pod-token") {
                Response::json(
                    200,
                    json!({"AccessKeyId": "ASIAPOD", "SecretAccessKey": "s", "Token": "t",
                           "Expiration": "2999-01-01T00:00:00Z"}),
                )
            } else {
                Response::json(401, json!({"message": "unauthorized"}))
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "pod-token").unwrap();
        let cloud = cloud_of(vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v1/credentials", server.url),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                file.display().to_string(),
            ),
        ]);
        let creds = resolve(&cloud, "us-east-1").await.unwrap();
        assert_eq!(creds.access_key_id, "ASIAPOD");
        assert_eq!(creds.session_token.as_deref(), Some("t"));
    }

    #[tokio::test]
    async fn the_instance_role_comes_from_imdsv2() {
        let server = FakeServer::start(|r| {
            let token = r
                .headers
                .get("x-aws-ec2-metadata-token")
                .map(String::as_str);
            match (r.method.as_str(), r.path.as_str(), token) {
                ("PUT", "/latest/api/token", _) => Response::text(200, "text/plain", "imds-token"),
                ("GET", "/latest/meta-data/iam/security-credentials/", Some("imds-token")) => {
                    Response::text(200, "text/plain", "node-role\n")
                }
                (
                    "GET",
                    "/latest/meta-data/iam/security-credentials/node-role",
                    Some("imds-token"),
                ) => Response::json(
                    200,
                    json!({"Code": "Success", "AccessKeyId": "ASIANODE",
                               "SecretAccessKey": "s", "Token": "t",
                               "Expiration": "2999-01-01T00:00:00Z"}),
                ),
                _ => Response::text(401, "text/plain", ""),
            }
        })
        .await;
        let cloud = cloud_of(vec![(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            server.url.clone(),
        )]);
        let creds = resolve(&cloud, "us-east-1").await.unwrap();
        assert_eq!(creds.access_key_id, "ASIANODE");
    }

    #[tokio::test]
    async fn no_credentials_anywhere_is_a_configuration_error() {
        let disabled = cloud_of(vec![("AWS_EC2_METADATA_DISABLED", "true".into())]);
        let err = resolve(&disabled, "us-east-1").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("no AWS credentials"), "{err}");
        let nowhere = cloud_of(vec![(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "http://127.0.0.1:1".into(),
        )]);
        let err = resolve(&nowhere, "us-east-1").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
    }
}
