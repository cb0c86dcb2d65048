//! Streamed responses: a real streaming runtime (the Rust `lambda_runtime` crate's streaming
//! API) under a `command` rule, chunk by chunk to the client; and an endpoint such as the
//! Runtime Interface Emulator, which buffers a streaming function's answer.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fake_rie::FakeRie;
use common::fake_stream_lambda::FakeStreamLambda;
use common::{Lrp, aws_env, example_binary, free_port, send, tool};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[tokio::test]
async fn an_endpoints_buffered_stream_becomes_the_response_its_prelude_describes() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!(
        "local:\n{}{}",
        fake.rule("streamed", "streamed", ""),
        fake.rule("streamed-rest", "streamed", "    event: rest\n")
    ));
    for host in ["streamed", "streamed-rest"] {
        let reply = send(lrp.request("GET", host, "/events"), "").await;
        assert_eq!(reply.status, 202, "{host}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
        assert_eq!(reply.all("set-cookie"), ["s=1"]);
        assert_eq!(reply.text(), "data: one\n\ndata: two\n\n");
    }
}

/// lrp running the `lambda_runtime` streaming function under `hostname`.
fn stream_function(hostname: &str, extra: &str) -> String {
    format!(
        "  - hostname: {hostname}\n    command: [{:?}]\n{extra}",
        example_binary("stream-function").display().to_string()
    )
}

/// A response whose body is read frame by frame, as a client of a stream reads it.
struct Streaming {
    status: u16,
    headers: http::HeaderMap,
    body: Incoming,
}

async fn open(lrp: &Lrp, host: &str, path: &str) -> Streaming {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = lrp.request("GET", host, path).body(Empty::new()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("the head arrives within 10 s")
        .expect("the request goes through");
    let (parts, body) = response.into_parts();
    Streaming {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

impl Streaming {
    /// The next data chunk; `None` at the end; `Err` when the stream broke off.
    async fn chunk(&mut self) -> Option<Result<Bytes, hyper::Error>> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("a chunk within 10 s")?;
            match frame.map(|f| f.into_data()) {
                Ok(Ok(data)) => return Some(Ok(data)),
                Ok(Err(_trailers)) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads until `text` has arrived, returning everything read.
    async fn until(&mut self, text: &str) -> String {
        let mut read = String::new();
        while !read.contains(text) {
            let chunk = self
                .chunk()
                .await
                .expect("more to read")
                .expect("an intact stream");
            read.push_str(&String::from_utf8_lossy(&chunk));
        }
        read
    }

    async fn rest(&mut self) -> Result<String, hyper::Error> {
        let mut read = String::new();
        while let Some(chunk) = self.chunk().await {
            read.push_str(&String::from_utf8_lossy(&chunk?));
        }
        Ok(read)
    }
}

#[tokio::test]
async fn the_first_chunk_arrives_while_the_function_is_still_writing() {
    let lrp = Lrp::start(&format!("local:\n{}", stream_function("stream", "")));
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/gated?dir={}", dir.path().display());
    let mut response = open(&lrp, "stream", &path).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "text/plain");
    assert!(
        !response.headers.contains_key("content-length"),
        "streamed, not buffered"
    );
    // The function writes "second" only once this file exists, so "first" can only be here
    // if lrp forwarded it while the function was still writing.
    assert_eq!(response.until("first\n").await, "first\n");
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(response.rest().await.unwrap(), "second\n");
}

#[tokio::test]
async fn the_lambda_web_adapter_streams_a_web_app_that_writes_slowly() {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    let port = free_port();
    let lrp = Lrp::start(&format!(
        "local:\n  - hostname: lwa\n    command: [{:?}]\n    env: {{PORT: {port}, AWS_LWA_PORT: {port}, \
         AWS_LWA_INVOKE_MODE: response_stream, PYTHON: {:?}, LAMBDA_ADAPTER: {:?}}}\n",
        peers.join("lwa_bootstrap.sh").display().to_string(),
        tool("python").display().to_string(),
        tool("lambda-adapter").display().to_string(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/gated?dir={}", dir.path().display());
    let mut response = open(&lrp, "lwa", &path).await;
    assert_eq!(response.status, 200, "{}", lrp.logs());
    assert_eq!(response.headers["content-type"], "text/plain");
    assert_eq!(response.until("first\n").await, "first\n");
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(response.rest().await.unwrap(), "second\n");
}

/// The README's example streams server-sent events one by one (lrp.example.yaml, run from
/// the repository root with the README's first command).
#[tokio::test]
async fn the_examples_server_sent_events_arrive_one_by_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("lrp.example.yaml"))
        .unwrap()
        .replace("port: 8080", "port: 0")
        .replace("lambda_api_port: 9001", "lambda_api_port: 0")
        .replace("working_dir: examples/", "working_dir: ../examples/");
    let dir = tempfile::tempdir_in(root).unwrap();
    let config = dir.path().join("lrp.yaml");
    std::fs::write(&config, example).unwrap();
    let lrp = Lrp::start_file(&config);
    let mut response = open(&lrp, "events.localhost", "/?count=3&interval=300").await;
    assert_eq!(response.status, 200, "{}", lrp.logs());
    assert_eq!(response.headers["content-type"], "text/event-stream");
    let mut arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await {
        let chunk = chunk.unwrap();
        for event in String::from_utf8_lossy(&chunk).split_terminator("\n\n") {
            arrivals.push((event.to_owned(), Instant::now()));
        }
    }
    let events: Vec<&str> = arrivals.iter().map(|(event, _)| event.as_str()).collect();
    assert_eq!(
        events,
        [
            "id: 1\ndata: event 1 of 3",
            "id: 2\ndata: event 2 of 3",
            "id: 3\ndata: event 3 of 3"
        ]
    );
    // Written 300 ms apart, they arrive apart: buffered, they would arrive together.
    let spread = arrivals[2].1 - arrivals[0].1;
    assert!(spread >= Duration::from_millis(400), "{spread:?}");
}

#[tokio::test]
async fn the_prelude_gives_status_headers_and_cookies() {
    let lrp = Lrp::start(&format!("local:\n{}", stream_function("stream", "")));
    let mut response = open(&lrp, "stream", "/created").await;
    assert_eq!(response.status, 201);
    let values = |name: &str| -> Vec<String> {
        let values = response.headers.get_all(name).iter();
        values.map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    assert_eq!(values("x-multi"), ["one", "two"]);
    assert_eq!(values("set-cookie"), ["a=1; Path=/", "b=2; Path=/"]);
    assert_eq!(response.rest().await.unwrap(), "created");
}

/// An error reported in the trailers after the first byte cuts the response off, as Lambda
/// does: HTTP/1.1 ends without its last chunk. (The Rust `lambda_runtime` 1.x writes such an
/// error into the body as text instead of trailers, so this uses a runtime that sends real
/// trailers, as Node's `aws-lambda-ric` does.)
#[tokio::test]
async fn an_error_mid_stream_cuts_the_response_off() {
    let runtime =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/trailer_error_runtime.py");
    let lrp = Lrp::start(&format!(
        "local:\n  - hostname: failing\n    command: [{:?}, {:?}]\n",
        tool("python").display().to_string(),
        runtime.display().to_string()
    ));
    for _ in 0..2 {
        let mut response = open(&lrp, "failing", "/").await;
        assert_eq!(response.status, 200, "the head was sent before the error");
        assert_eq!(response.until("partial\n").await, "partial\n");
        assert!(
            response.rest().await.is_err(),
            "the response ends without its last chunk"
        );
    }
    lrp.expect_log("Custom.Failure: failed mid-stream").await;
    // The instance reported the error, and served the second request too.
    assert_eq!(
        lrp.process.output.count("started an instance"),
        1,
        "{}",
        lrp.logs()
    );
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_frees_the_instance() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        stream_function("stream", "    timeout: 60s\n")
    ));
    let mut response = open(&lrp, "stream", "/endless").await;
    response.until("tick\n").await;
    drop(response);
    lrp.wait_metric(r#"lrp_running_invocations{rule="stream"}"#, 0)
        .await;
    let mut next = open(&lrp, "stream", "/").await;
    assert_eq!(next.rest().await.unwrap(), "hello\n");
    assert_eq!(
        lrp.process.output.count("started an instance"),
        1,
        "{}",
        lrp.logs()
    );
}

#[tokio::test]
async fn the_rules_timeout_covers_the_whole_stream() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        stream_function("stream", "    timeout: 1s\n")
    ));
    let started = Instant::now();
    let mut response = open(&lrp, "stream", "/endless").await;
    response.until("tick\n").await;
    assert!(response.rest().await.is_err(), "cut off at the deadline");
    assert!(started.elapsed() >= Duration::from_secs(1));
    lrp.expect_log("a stream was cut: stopping the instance")
        .await;
    let mut next = open(&lrp, "stream", "/").await;
    assert_eq!(next.rest().await.unwrap(), "hello\n");
}

/// A client that stops reading, but keeps its connection open, never lets lrp write again:
/// the deadline still ends the stream, stops the instance and frees its slot.
#[tokio::test]
async fn a_client_that_stops_reading_holds_nothing_past_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        stream_function("stream", "    timeout: 2s\n")
    ));
    let mut stalled = tokio::net::TcpStream::connect(lrp.addr).await.unwrap();
    stalled
        .write_all(b"GET /big/100 HTTP/1.1\r\nHost: stream\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stalled.read_exact(&mut first))
        .await
        .expect("the head within 10 s")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // No more reading: 100 MiB cannot fit in the sockets' buffers, so lrp's writes stall.
    lrp.wait_metric(r#"lrp_running_invocations{rule="stream"}"#, 0)
        .await;
    lrp.expect_log("a stream was cut: stopping the instance")
        .await;
    let mut next = open(&lrp, "stream", "/").await;
    assert_eq!(next.rest().await.unwrap(), "hello\n");
    drop(stalled);
}

#[tokio::test]
async fn fifty_megabytes_stream_through_with_memory_flat() {
    let lrp = Lrp::start(&format!("local:\n{}", stream_function("stream", "")));
    let mut warm = open(&lrp, "stream", "/").await;
    warm.rest().await.unwrap();
    let before = lrp.process.peak_rss_kib();
    let mut response = open(&lrp, "stream", "/big/50").await;
    let mut received = 0;
    while let Some(chunk) = response.chunk().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, 50 * 1024 * 1024);
    let after = lrp.process.peak_rss_kib();
    // 2 MiB more here; 11 to 21 MiB more for a 10 MiB stream before the Runtime API's reads
    // were capped (src/target/command/small_reads.rs).
    assert!(
        after < before + 6 * 1024,
        "peak RSS grew from {before} to {after} KiB for a 50 MiB stream"
    );
}

/// `invoke_mode: response_stream`: lrp calls InvokeWithResponseStream through the AWS SDK and
/// forwards the payload chunks as they arrive. No local peer serves that call faithfully (see
/// `common::fake_stream_lambda`), so this runs against one written from the API reference.
#[tokio::test]
async fn aws_rules_stream_from_a_faithful_invoke_with_response_stream_server() {
    let lambda = FakeStreamLambda::start().await;
    let lrp = Lrp::start_with(
        "region: us-east-1\naws:\n  - {hostname: aws-stream, function_name: streamer, \
         invoke_mode: response_stream}\n",
        aws_env(&lambda.endpoint()),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/gated?dir={}", dir.path().display());
    let mut response = open(&lrp, "aws-stream", &path).await;
    assert_eq!(response.status, 200, "{}", lrp.logs());
    assert_eq!(response.headers["content-type"], "text/plain");
    assert_eq!(response.headers["set-cookie"], "s=1");
    assert_eq!(response.until("first\n").await, "first\n");
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(response.rest().await.unwrap(), "second\n");

    // An InvokeComplete with an ErrorCode cuts the response off, as a trailer error does.
    let mut failing = open(&lrp, "aws-stream", "/fail").await;
    assert_eq!(failing.until("partial\n").await, "partial\n");
    assert!(failing.rest().await.is_err());
    lrp.expect_log("Unhandled: failed mid-stream").await;
}

/// Past Lambda's 200 MB limit for streamed responses the stream is cut off, and the instance,
/// which may still be writing, is stopped and replaced.
#[tokio::test]
async fn a_stream_past_the_size_limit_is_cut_off() {
    let lrp = Lrp::start(&format!("local:\n{}", stream_function("stream", "")));
    let mut response = open(&lrp, "stream", "/big/201").await;
    let mut received: u64 = 0;
    let outcome = loop {
        match response.chunk().await {
            Some(Ok(chunk)) => received += chunk.len() as u64,
            Some(Err(_)) => break "cut off",
            None => break "complete",
        }
    };
    assert_eq!(outcome, "cut off", "after {received} bytes");
    assert!(received <= 200 * 1024 * 1024, "{received}");
    lrp.expect_log("a stream was cut: stopping the instance")
        .await;
    let mut next = open(&lrp, "stream", "/").await;
    assert_eq!(next.rest().await.unwrap(), "hello\n");
}

/// Over HTTP/2 a stream's chunks arrive as data frames, as they are written.
#[tokio::test]
async fn http2_clients_get_the_stream_frame_by_frame() {
    let lrp = Lrp::start(&format!("local:\n{}", stream_function("stream", "")));
    let connection = tokio::net::TcpStream::connect(lrp.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(connection),
    )
    .await
    .expect("an HTTP/2 connection (prior knowledge)");
    tokio::spawn(connection);
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("http://stream/gated?dir={}", dir.path().display());
    let request = http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut response = Streaming {
        status: 200,
        headers: response.headers().clone(),
        body: response.into_body(),
    };
    assert_eq!(response.until("first\n").await, "first\n");
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(response.rest().await.unwrap(), "second\n");
}
