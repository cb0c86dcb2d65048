//! The real lrp binary against a scripted RIE look-alike: every way a local function can fail,
//! and what the client gets for it (the status codes HTTP API answers with).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_rie::FakeRie;
use common::{Lrp, send};

struct Expected {
    status: u16,
    kind: &'static str,
    message: &'static str,
}

const TIMED_OUT: Expected = Expected {
    status: 503,
    kind: "timeout",
    message: "Service Unavailable",
};

async fn expect_error(lrp: &Lrp, host: &str, expected: Expected) {
    let reply = send(lrp.request("GET", host, "/x"), "").await;
    assert_eq!(
        reply.status,
        expected.status,
        "{host}: {}\n{}",
        reply.text(),
        lrp.logs()
    );
    assert_eq!(reply.header("x-lrp-error"), Some(expected.kind), "{host}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        serde_json::json!({"message": expected.message}),
        "{host}"
    );
    assert!(reply.header("apigw-requestid").is_some());
}

#[tokio::test]
async fn every_failure_shape_gets_http_apis_answer() {
    let fake = FakeRie::start().await;
    let rules: String = [
        ("error200", "error200"),
        ("exit502", "exit502"),
        ("timeout-text", "timeout-text"),
        ("busy", "busy"),
        ("empty", "empty"),
        ("garbage", "garbage"),
        ("statusless-error", "statusless-error"),
        ("huge", "huge"),
        ("missing", "no-such-function"),
    ]
    .iter()
    .map(|(host, behaviour)| fake.rule(host, behaviour, ""))
    .collect();
    let lrp = Lrp::start(&format!(
        "local:\n{rules}  - hostname: refused\n    endpoint: http://127.0.0.1:1\n"
    ));
    let internal = |kind| Expected {
        status: 500,
        kind,
        message: "Internal Server Error",
    };
    expect_error(&lrp, "error200", internal("function-error")).await;
    expect_error(&lrp, "exit502", internal("function-error")).await;
    expect_error(&lrp, "empty", internal("function-error")).await;
    expect_error(&lrp, "timeout-text", internal("function-timeout")).await;
    expect_error(&lrp, "busy", internal("invoke-rejected")).await;
    expect_error(&lrp, "statusless-error", internal("invoke-rejected")).await;
    expect_error(&lrp, "missing", internal("invoke-rejected")).await;
    expect_error(&lrp, "garbage", internal("malformed-result")).await;
    expect_error(&lrp, "huge", internal("result-too-large")).await;
    let refused = Expected {
        status: 502,
        kind: "unreachable",
        message: "Bad Gateway",
    };
    expect_error(&lrp, "refused", refused).await;

    // Each failure is one log line naming its cause.
    lrp.expect_log(r#"error="function-error" cause=the function failed: FakeError: boom"#)
        .await;
    lrp.expect_log("Task timed out after 1.00 seconds").await;
}

#[tokio::test]
async fn a_hanging_function_times_out_with_503_and_frees_the_client() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        fake.rule("hang", "hang", "    timeout: 500ms\n")
    ));
    let started = Instant::now();
    expect_error(&lrp, "hang", TIMED_OUT).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "not before the timeout: {waited:?}"
    );

    // The endpoint is still busy with the abandoned invocation: the next request waits for the
    // slot instead of sending RIE a concurrent invoke, and times out too.
    expect_error(&lrp, "hang", TIMED_OUT).await;
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrency_one_serializes_invocations_and_n_allows_n() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!(
        "local:\n{}{}",
        fake.rule("one", "slow-1", ""),
        fake.rule("three", "slow-3", "    concurrency: 3\n"),
    ));

    let burst = |host: &'static str| {
        let lrp = &lrp;
        async move {
            let requests = (0..3).map(|_| send(lrp.request("GET", host, "/"), ""));
            for reply in futures::future::join_all(requests).await {
                assert_eq!(reply.status, 200, "{}", reply.text());
                assert_eq!(reply.text(), "slow");
            }
        }
    };

    // The fake counts the invocations it has at once.
    burst("one").await;
    assert_eq!(fake.counters.max_in_flight.load(Ordering::SeqCst), 1);
    burst("three").await;
    assert_eq!(fake.counters.max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn waiting_for_a_slot_counts_against_the_timeout() {
    let fake = FakeRie::start().await;
    // Two hostnames for one function: they share its one slot.
    let lrp = Lrp::start(&format!(
        "local:\n{}{}",
        fake.rule("patient", "gated", ""),
        fake.rule("slow", "gated", "    timeout: 600ms\n")
    ));
    // The first holds the slot until the gate opens; the second waits for the slot until
    // its deadline passes, and only then does the first finish.
    let first = tokio::spawn(send(lrp.request("GET", "patient", "/"), ""));
    fake.counters.wait_in_flight(1).await;
    let second = send(lrp.request("GET", "slow", "/"), "").await;
    assert_eq!(second.status, 503, "{}", second.text());
    assert_eq!(second.header("x-lrp-error"), Some("timeout"));
    fake.counters.open_gate(1);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 1);
    assert_eq!(fake.counters.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn oversized_requests_get_413_without_an_invocation() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!("local:\n{}", fake.rule("echo", "echo", "")));

    // Declared too large: refused before reading.
    let declared = vec![b'a'; 6_291_457];
    let reply = send(
        lrp.request("POST", "echo", "/")
            .header("content-type", "text/plain"),
        declared,
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(
        reply.json(),
        serde_json::json!({"message": "Request Too Long"})
    );
    assert_eq!(reply.header("x-lrp-error"), Some("request-too-large"));

    // Small enough as bytes, too large as an event once base64 adds a third.
    let binary = vec![0u8; 5 * 1024 * 1024];
    let reply = send(
        lrp.request("POST", "echo", "/")
            .header("content-type", "application/octet-stream"),
        binary,
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 0);

    // Just under the limit as text goes through.
    let text = vec![b'a'; 6_000_000];
    let reply = send(
        lrp.request("POST", "echo", "/")
            .header("content-type", "text/plain"),
        text,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", lrp.logs());
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 1);
}
