//! The lrp command and server as an operator meets them: configuration files, validation,
//! logs, malformed traffic and shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::fake_rie::FakeRie;
use common::{Lrp, lrp_command, send, send_with};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The Go tool's own lrp.yaml, from its repository.
const GO_TOOL_CONFIG: &str = "local:\n  - hostname: foo.domain.lb\n    endpoint: http://lambda-1:8080\n  - hostname: bar.domain.lb\n    endpoint: http://lambda-2:8080\n";

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("written");
    file
}

#[test]
fn check_prints_the_resolved_table_of_a_go_tool_file() {
    let config = write_config(GO_TOOL_CONFIG);
    let output = lrp_command()
        .arg("check")
        .arg(config.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("listen: 0.0.0.0:8080"), "{table}");
    assert!(
        table.contains("foo.domain.lb -> local http://lambda-1:8080/2015-03-31/functions/function/invocations (event http-api, concurrency 1, max_queue 100, timeout 30s)"),
        "{table}"
    );
}

#[test]
fn check_reads_lrp_config_from_the_environment() {
    let config = write_config("port: 9999\n");
    let output = lrp_command()
        .arg("check")
        .env("LRP_CONFIG", config.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("listen: 0.0.0.0:9999"));
}

#[test]
fn a_bad_file_stops_startup_with_file_line_and_rule() {
    let config =
        write_config("local:\n  - hostname: a\n    endpoint: http://a:1\n    concurency: 2\n");
    for args in [vec!["check"], vec![]] {
        let output = lrp_command()
            .args(&args)
            .arg(config.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let message = String::from_utf8(output.stderr).unwrap();
        let expected = format!(
            "{}:4:5: local[0]: unknown field `concurency`",
            config.path().display()
        );
        assert!(message.contains(&expected), "{message}");
    }
    let output = lrp_command().arg("/no/such/lrp.yaml").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read /no/such/lrp.yaml"));
}

#[tokio::test]
async fn without_rules_only_internal_routes_answer() {
    let lrp = Lrp::start("");
    let reply = send(lrp.request("GET", "anything", "/ping"), "").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "pong"));
    let reply = send(lrp.request("GET", "anything", "/other"), "").await;
    assert_eq!(reply.status, 404);
}

#[test]
fn no_config_at_all_means_internal_routes_only_on_8080() {
    // `lrp` and `lrp check` read the configuration the same way; serving it on 8080 itself is
    // left untested, as tests never take a fixed port (the empty-file test above serves it).
    let output = lrp_command().arg("check").output().unwrap();
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("listen: 0.0.0.0:8080"), "{table}");
    assert!(
        table.contains("rules: (none: every request but the internal routes gets 404)"),
        "{table}"
    );
}

#[tokio::test]
async fn json_logs_carry_one_line_per_request() {
    let lrp = Lrp::start_with("", [("LRP_LOG_FORMAT", "json")]);
    let reply = send(lrp.request("GET", "nowhere", "/x"), "").await;
    let id = reply.header("apigw-requestid").unwrap().to_owned();
    let line = lrp
        .process
        .output
        .line_with(&id, Duration::from_secs(5))
        .await
        .expect("a log line with the request id");
    let record: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(record["status"], 404);
    assert_eq!(record["host"], "nowhere");
    assert_eq!(record["path"], "/x");
    assert_eq!(record["error"], "no-rule");
    assert_eq!(record["method"], "GET");
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_server_keeps_serving() {
    let lrp = Lrp::start("");
    let mut stream = TcpStream::connect(lrp.addr).unwrap();
    stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    let mut stream = TcpStream::connect(lrp.addr).unwrap();
    stream.write_all(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.0 400"),
        "a request without a host: {answer:?}"
    );
    assert!(answer.contains("x-lrp-error: missing-host"), "{answer}");

    let reply = send(lrp.request("GET", "x", "/ping"), "").await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn http2_without_tls_is_served_and_reported_as_http_2_0() {
    let fake = FakeRie::start().await;
    // Over HTTP/2 the host is the :authority pseudo-header, here lrp's own address.
    let lrp = Lrp::start(&format!("local:\n{}", fake.rule("127.0.0.1", "echo", "")));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let request = http::Request::builder().uri(lrp.url("/two"));
    let reply = send_with(&client, request, "").await;
    assert_eq!(reply.status, 200, "{}", lrp.logs());
    // The fake echoes the event: lrp's result parser infers a JSON response from it.
    let event = reply.json();
    assert_eq!(event["requestContext"]["http"]["protocol"], "HTTP/2.0");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let fake = FakeRie::start().await;
    let mut lrp = Lrp::start(&format!("local:\n{}", fake.rule("slow", "slow", "")));
    let in_flight = tokio::spawn(send(lrp.request("GET", "slow", "/"), ""));
    tokio::time::sleep(Duration::from_millis(100)).await;
    lrp.process.signal("TERM");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request finishes");
    assert_eq!(reply.text(), "slow");
    let status = lrp
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("lrp exits");
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(lrp.addr).is_err(), "no longer accepting");
}

#[test]
fn check_refuses_values_that_could_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lrp.yaml");
    std::fs::write(
        &path,
        "local:\n  - hostname: a\n    endpoint: http://a:1\n    timeout: 18446744073709551615\n",
    )
    .unwrap();
    let output = lrp_command().arg("check").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("lrp.yaml:4:14: local[0].timeout:") && stderr.contains("the limit is 15m"),
        "{stderr}"
    );
}
