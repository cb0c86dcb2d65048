//! The real lrp binary in front of the cargo-lambda emulator (PyPI), with real functions on the
//! Rust `lambda_runtime` attached to its Runtime API: what a function receives and what the
//! client gets back.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{Emulator, Lrp, Process, send};
use serde_json::{Value, json};

/// The emulator, `count` runtime processes for the RIE function name, and lrp in front.
struct Stack {
    lrp: Lrp,
    _runtimes: Vec<Process>,
    _emulator: Emulator,
}

async fn stack(count: usize, rule_extra: &str, top: &str) -> Stack {
    let emulator = Emulator::start().await;
    let runtimes = (0..count)
        .map(|_| emulator.attach_rust_function("function"))
        .collect();
    let lrp = Lrp::start(&format!(
        "{top}local:\n  - hostname: service-1\n    endpoint: {endpoint}\n{rule_extra}  \
         - hostname: '*.wild.test'\n    endpoint: {endpoint}\n{rule_extra}",
        endpoint = emulator.endpoint(),
    ));
    Stack {
        lrp,
        _runtimes: runtimes,
        _emulator: emulator,
    }
}

#[tokio::test]
async fn the_function_receives_exactly_the_http_api_event() {
    let stack = stack(1, "", "").await;
    let lrp = &stack.lrp;
    let request = lrp
        .request("POST", "Service-1:8080", "/items/42%2F7?x=1&x=2&q=a%20b")
        .header("content-type", "application/json")
        .header("cookie", "s=1; t=2")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("user-agent", "e2e/1.0");
    let reply = send(request, r#"{"hello":"world"}"#).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    assert_eq!(reply.header("x-function"), Some("rust"));
    let event = reply.json();

    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "$default");
    assert_eq!(event["rawPath"], "/items/42%2F7");
    assert_eq!(event["rawQueryString"], "x=1&x=2&q=a%20b");
    assert_eq!(
        event["queryStringParameters"],
        json!({"x": "1,2", "q": "a b"})
    );
    assert_eq!(event["cookies"], json!(["s=1", "t=2"]));
    assert_eq!(event["body"], r#"{"hello":"world"}"#);
    assert_eq!(event["isBase64Encoded"], false);
    let headers = &event["headers"];
    assert_eq!(headers["x-multi"], "one,two");
    assert_eq!(headers["host"], "Service-1:8080");
    assert!(headers.get("cookie").is_none());
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-port"], lrp.addr.port().to_string());
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(
        headers["x-amzn-trace-id"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-")
    );

    let context = &event["requestContext"];
    assert_eq!(context["domainName"], "service-1");
    assert_eq!(context["domainPrefix"], "service-1");
    assert_eq!(context["stage"], "$default");
    assert_eq!(context["http"]["method"], "POST");
    assert_eq!(context["http"]["path"], "/items/42%2F7");
    assert_eq!(context["http"]["protocol"], "HTTP/1.1");
    assert_eq!(context["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(context["http"]["userAgent"], "e2e/1.0");
    assert_eq!(
        context["requestId"].as_str(),
        reply.header("apigw-requestid"),
        "the response carries the event's request id"
    );
    let epoch_ms = context["timeEpoch"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now_ms.abs_diff(epoch_ms) < 10_000,
        "timeEpoch is in milliseconds"
    );
    assert!(context["time"].as_str().unwrap().ends_with(" +0000"));
}

#[tokio::test]
async fn binary_bodies_arrive_base64_and_each_request_gets_its_own_id() {
    let stack = stack(1, "", "").await;
    let lrp = &stack.lrp;
    let bytes = vec![0u8, 159, 146, 150, 255];
    let request = || {
        lrp.request("PUT", "service-1", "/upload")
            .header("content-type", "application/octet-stream")
    };
    let first = send(request(), bytes.clone()).await.json();
    let second = send(request(), bytes.clone()).await.json();
    assert_eq!(first["isBase64Encoded"], true);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(first["body"].as_str().unwrap())
            .unwrap(),
        bytes
    );
    assert_ne!(
        first["requestContext"]["requestId"],
        second["requestContext"]["requestId"]
    );
}

#[tokio::test]
async fn scripted_results_map_to_responses_as_http_api_does() {
    let stack = stack(1, "", "").await;
    let lrp = &stack.lrp;
    let respond = |result: Value| {
        send(
            lrp.request("POST", "service-1", "/respond")
                .header("content-type", "application/json"),
            result.to_string(),
        )
    };

    let reply = respond(json!({
        "statusCode": "201",
        "headers": {"x-custom": "yes", "Connection": "close"},
        "cookies": ["a=1; Path=/", "b=2; Path=/x"],
        "body": base64::engine::general_purpose::STANDARD.encode([1u8, 2, 3, 250]),
        "isBase64Encoded": true,
        "unknownKey": "ignored",
    }))
    .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("x-custom"), Some("yes"));
    assert_eq!(reply.all("set-cookie"), ["a=1; Path=/", "b=2; Path=/x"]);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.body.as_ref(), [1u8, 2, 3, 250]);
    assert!(reply.header("connection").is_none());

    let reply = respond(json!("Hello, world!")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text(), "\"Hello, world!\"");

    let reply = respond(json!({"message": "no statusCode"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"message": "no statusCode"}));

    let reply = respond(json!({"statusCode": 200, "body": {"not": "a string"}})).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-lrp-error"), Some("malformed-result"));
}

#[tokio::test]
async fn a_handler_error_is_500_and_the_runtime_keeps_serving() {
    let stack = stack(1, "", "").await;
    let lrp = &stack.lrp;
    let reply = send(lrp.request("GET", "service-1", "/error"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), json!({"message": "Internal Server Error"}));
    assert_eq!(reply.header("x-lrp-error"), Some("function-error"));
    lrp.expect_log("boom from the rust function").await;
    let reply = send(lrp.request("GET", "service-1", "/after"), "").await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn routing_by_host_with_wildcards_and_404_for_unknown_hosts() {
    let stack = stack(1, "", "").await;
    let lrp = &stack.lrp;
    let reply = send(lrp.request("GET", "API.Wild.Test.", "/w"), "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["requestContext"]["domainName"],
        "api.wild.test"
    );

    let reply = send(lrp.request("GET", "wild.test", "/w"), "").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-lrp-error"), Some("no-rule"));
    assert_eq!(
        reply.json(),
        json!({"message": "Not Found", "host": "wild.test"})
    );
}

#[tokio::test]
async fn internal_routes_answer_before_routing_and_move_under_the_prefix() {
    let plain = stack(1, "", "").await;
    let reply = send(plain.lrp.request("GET", "service-1", "/ping"), "").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "pong"));
    let reply = send(plain.lrp.request("GET", "unknown", "/healthz"), "").await;
    assert_eq!(reply.status, 200);
    let reply = send(plain.lrp.request("HEAD", "unknown", "/ping"), "").await;
    assert_eq!((reply.status, reply.body.len()), (200, 0));
    drop(plain);

    let prefixed = stack(1, "", "internal_route_prefix: __lrp__\n").await;
    let lrp = &prefixed.lrp;
    let reply = send(lrp.request("GET", "unknown", "/__lrp__/ping"), "").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "pong"));
    let reply = send(lrp.request("GET", "service-1", "/ping"), "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["rawPath"],
        "/ping",
        "with a prefix, /ping is the function's"
    );
}

#[tokio::test]
async fn concurrency_above_one_uses_every_attached_runtime() {
    let stack = stack(3, "    concurrency: 3\n", "").await;
    let lrp = &stack.lrp;
    // Each invocation waits for the other two to arrive: they succeed only if all three run
    // at once (one at a time, the first would give up after 10 s and fail).
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/barrier/3?dir={}", dir.path().display());
    let requests = (0..3).map(|_| send(lrp.request("GET", "service-1", &path), ""));
    for reply in futures::future::join_all(requests).await {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), "all arrived");
    }
}

#[tokio::test]
async fn a_slow_function_gets_503_at_the_rules_timeout() {
    let stack = stack(1, "    timeout: 1s\n", "").await;
    let lrp = &stack.lrp;
    let started = Instant::now();
    let reply = send(lrp.request("GET", "service-1", "/sleep/3000"), "").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json(), json!({"message": "Service Unavailable"}));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "not before the timeout: {waited:?}"
    );
    // The abandoned invocation keeps its slot until the function has finished it; then the
    // endpoint serves again.
    lrp.wait_metric(r#"lrp_running_invocations{rule="service-1"}"#, 0)
        .await;
    let reply = send(lrp.request("GET", "service-1", "/"), "").await;
    assert_eq!(reply.status, 200, "{}", lrp.logs());
}
