//! `aws:` rules: the real lrp binary invokes through the real aws-sdk-lambda path, pointed at
//! local Lambda API endpoints with `AWS_ENDPOINT_URL_LAMBDA` (never a real AWS account): moto's
//! server, the cargo-lambda emulator's Invoke API with real functions, and a recording fake.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_rie::FakeRie;
use common::{Emulator, Lrp, Moto, aws_env, send};
use serde_json::json;

fn aws_rules(rules: &[(&str, &str)]) -> String {
    let rules: String = rules
        .iter()
        .map(|(host, function)| format!("  - hostname: {host}\n    function_name: {function}\n"))
        .collect();
    format!("region: us-east-1\naws:\n{rules}")
}

#[tokio::test]
async fn moto_answers_scripted_results_and_oversized_ones_through_the_sdk() {
    let moto = Moto::start().await;
    moto.use_simple_lambda().await;
    let lrp = Lrp::start_with(&aws_rules(&[("orders.aws", "orders")]), moto.lrp_env());

    // moto's Docker-free Lambda echoes the payload: the event arrives intact through the SDK.
    let reply = send(lrp.request("GET", "orders.aws", "/items?id=7"), "").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    let event = reply.json();
    assert_eq!(event["rawPath"], "/items");
    assert_eq!(event["queryStringParameters"], json!({"id": "7"}));

    moto.queue_results(&[json!({
        "statusCode": 201,
        "headers": {"x-from": "moto"},
        "cookies": ["a=1", "b=2"],
        "body": "created",
    })
    .to_string()])
        .await;
    let reply = send(lrp.request("POST", "orders.aws", "/items"), "{}").await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("x-from"), Some("moto"));
    assert_eq!(reply.all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(reply.text(), "created");

    // Over 6 MB: moto answers as Lambda does, X-Amz-Function-Error with ResponseSizeTooLarge.
    let huge = json!({"statusCode": 200, "body": "x".repeat(6_300_000)}).to_string();
    moto.queue_results(&[huge]).await;
    let reply = send(lrp.request("GET", "orders.aws", "/"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-lrp-error"), Some("function-error"));
    lrp.expect_log("Function.ResponseSizeTooLarge").await;
}

#[tokio::test]
async fn aws_rules_send_and_answer_in_any_event_format() {
    let moto = Moto::start().await;
    moto.use_simple_lambda().await;
    let lrp = Lrp::start_with(
        "region: us-east-1\naws:\n  - {hostname: rest.aws, function_name: orders, event: rest}\n  \
         - {hostname: alb.aws, function_name: orders, event: alb}\n",
        moto.lrp_env(),
    );
    // moto echoes the payload: a REST event arrives through the SDK, and is no valid REST
    // result (no statusCode), which REST answers with its 502.
    let reply = send(lrp.request("GET", "rest.aws", "/items?id=7"), "").await;
    assert_eq!(reply.status, 502, "{}\n{}", reply.text(), lrp.logs());
    assert_eq!(reply.text(), r#"{"message": "Internal server error"}"#);
    assert_eq!(reply.header("x-lrp-error"), Some("malformed-result"));

    moto.queue_results(&[json!({
        "statusCode": 200,
        "statusDescription": "200 OK",
        "headers": {"content-type": "text/plain"},
        "body": "from an ALB result",
    })
    .to_string()])
        .await;
    let reply = send(lrp.request("GET", "alb.aws", "/"), "").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "from an ALB result")
    );
    assert!(
        reply.header("apigw-requestid").is_none(),
        "ALB sends no request id"
    );
}

#[tokio::test]
async fn an_unknown_function_is_500_with_its_own_error_kind_and_the_sdk_chain_logged() {
    let moto = Moto::start().await;
    let lrp = Lrp::start_with(
        &aws_rules(&[("ghost.aws", "no-such-function")]),
        moto.lrp_env(),
    );
    let reply = send(lrp.request("GET", "ghost.aws", "/"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), json!({"message": "Internal Server Error"}));
    assert_eq!(reply.header("x-lrp-error"), Some("function-not-found"));
    lrp.expect_log("ResourceNotFoundException: Function not found")
        .await;
}

#[tokio::test]
async fn real_functions_answer_through_the_sdk_from_the_cargo_lambda_emulator() {
    let emulator = Emulator::start().await;
    let _runtime = emulator.attach_rust_function("echo");
    let lrp = Lrp::start_with(
        &aws_rules(&[("echo.aws", "echo")]),
        aws_env(&emulator.endpoint()),
    );
    let reply = send(
        lrp.request("PUT", "echo.aws", "/things/1")
            .header("content-type", "text/plain"),
        "payload",
    )
    .await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    assert_eq!(reply.header("x-function"), Some("rust"));
    let event = reply.json();
    assert_eq!(event["requestContext"]["http"]["method"], "PUT");
    assert_eq!(event["body"], "payload");

    // The emulator reports a function error as HTTP 500 (AWS uses 200 + X-Amz-Function-Error):
    // either way the client gets HTTP API's 500.
    let reply = send(lrp.request("GET", "echo.aws", "/error"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), json!({"message": "Internal Server Error"}));
}

#[tokio::test]
async fn requests_are_sigv4_signed_once_with_the_configured_credentials_and_region() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start_with(
        "region: eu-west-1\naws:\n  - hostname: signed.aws\n    function_name: echo\n  \
         - hostname: failing.aws\n    function_name: statusless-error\n    region: ap-south-1\n",
        aws_env(&fake.endpoint()),
    );
    let reply = send(lrp.request("GET", "signed.aws", "/"), "").await;
    assert_eq!(reply.status, 200, "{}", lrp.logs());
    let authorization = fake.counters.authorizations.lock().unwrap()[0].clone();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDLRPTEST/"),
        "{authorization}"
    );
    assert!(
        authorization.contains("/eu-west-1/lambda/aws4_request"),
        "{authorization}"
    );
    assert!(authorization.contains("Signature="), "{authorization}");

    // A 500 from Lambda is retryable for the SDK, but lrp never retries an invoke.
    let before = fake.counters.calls.load(Ordering::SeqCst);
    let reply = send(lrp.request("GET", "failing.aws", "/"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-lrp-error"), Some("lambda-error"));
    assert_eq!(
        fake.counters.calls.load(Ordering::SeqCst),
        before + 1,
        "one attempt only"
    );
    let authorization = fake.counters.authorizations.lock().unwrap()[1].clone();
    assert!(
        authorization.contains("/ap-south-1/lambda/aws4_request"),
        "the rule's region"
    );
}

#[tokio::test]
async fn lambda_api_errors_get_http_apis_500_each_with_its_own_kind() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start_with(
        &aws_rules(&[("throttled.aws", "throttled"), ("denied.aws", "denied")]),
        aws_env(&fake.endpoint()),
    );
    for (host, kind, cause) in [
        (
            "throttled.aws",
            "throttled",
            "TooManyRequestsException: Rate exceeded",
        ),
        ("denied.aws", "access-denied", "AccessDeniedException"),
    ] {
        let reply = send(lrp.request("GET", host, "/"), "").await;
        assert_eq!(reply.status, 500, "{host}");
        assert_eq!(reply.json(), json!({"message": "Internal Server Error"}));
        assert_eq!(reply.header("x-lrp-error"), Some(kind), "{host}");
        lrp.expect_log(cause).await;
    }
    assert_eq!(
        fake.counters.calls.load(Ordering::SeqCst),
        2,
        "throttling is not retried"
    );
}

#[tokio::test]
async fn a_slow_invoke_gets_503_at_the_rules_timeout() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start_with(
        "aws:\n  - hostname: slow.aws\n    function_name: hang\n    timeout: 500ms\n",
        aws_env(&fake.endpoint()),
    );
    let started = std::time::Instant::now();
    let reply = send(lrp.request("GET", "slow.aws", "/"), "").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-lrp-error"), Some("timeout"));
    // The fake hangs for an hour: the answer came from the rule's timeout.
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn without_credentials_lrp_starts_says_so_and_answers_each_request_clearly() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start_with(
        "aws:\n  - hostname: nocreds.aws\n    function_name: echo\n",
        [
            ("AWS_ENDPOINT_URL_LAMBDA", fake.endpoint()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ],
    );
    let warning = lrp
        .process
        .output
        .line_with(
            "AWS credentials cannot be resolved",
            Duration::from_secs(10),
        )
        .await;
    assert!(warning.is_some(), "{}", lrp.logs());
    let reply = send(lrp.request("GET", "anything", "/ping"), "").await;
    assert_eq!(reply.status, 200, "health checks pass meanwhile");
    let reply = send(lrp.request("GET", "nocreds.aws", "/"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.header("x-lrp-error"),
        Some("no-credentials"),
        "{}",
        lrp.logs()
    );
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_events_are_refused_before_any_call() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start_with(
        "aws:\n  - hostname: big.aws\n    function_name: echo\n",
        aws_env(&fake.endpoint()),
    );
    let reply = send(
        lrp.request("POST", "big.aws", "/")
            .header("content-type", "application/octet-stream"),
        vec![7u8; 5 * 1024 * 1024],
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 0);
}

/// A local rule with an `overflow` sends what its function cannot take to a function on AWS
/// (here moto's): requests past a full queue, and every request while its endpoint is down.
#[tokio::test]
async fn a_saturated_or_unreachable_local_rule_overflows_to_aws() {
    let moto = Moto::start().await;
    moto.use_simple_lambda().await;
    let fake = FakeRie::start().await;
    let overflow = "    overflow: {function_name: spare}\n";
    let lrp = Lrp::start_with(
        &format!(
            "region: us-east-1\nlocal:\n{}  - hostname: down\n    endpoint: http://127.0.0.1:1\n{overflow}",
            fake.rule("busy", "gated", &format!("    max_queue: 1\n{overflow}")),
        ),
        moto.lrp_env(),
    );
    // One request runs and one waits: the local function's queue is full.
    let running = tokio::spawn(send(lrp.request("GET", "busy", "/local"), ""));
    fake.counters.wait_in_flight(1).await;
    let queued = tokio::spawn(send(lrp.request("GET", "busy", "/local"), ""));
    lrp.wait_metric(r#"lrp_queued_invocations{rule="busy"}"#, 1)
        .await;
    // The rest go to AWS instead of getting 429 (moto's function echoes the event).
    for _ in 0..3 {
        let reply = send(lrp.request("GET", "busy", "/spare"), "").await;
        assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
        assert_eq!(reply.json()["rawPath"], "/spare");
    }
    fake.counters.open_gate(2);
    assert_eq!(running.await.unwrap().status, 200);
    assert_eq!(queued.await.unwrap().status, 200);
    assert_eq!(
        lrp.metric(r#"lrp_served_total{rule="busy",by="local"}"#)
            .await,
        2
    );
    assert_eq!(
        lrp.metric(r#"lrp_served_total{rule="busy",by="overflow"}"#)
            .await,
        3
    );

    // An endpoint that refuses connections: every request goes to AWS.
    let reply = send(lrp.request("GET", "down", "/"), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        lrp.metric(r#"lrp_served_total{rule="down",by="overflow"}"#)
            .await,
        1
    );
    lrp.expect_log(r#"served_by="overflow""#).await;
}
