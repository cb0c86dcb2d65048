//! What no client, function or configuration may do to lrp: leak queue places by giving up,
//! get a body read past a full queue, stretch a request past its one deadline, smuggle a
//! second Host, open a tunnel, send a 1xx as a final answer, flood the log, or hold more
//! connections than `max_connections` or a request head longer than 30 s. Each test drives the
//! real binary over real sockets.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fake_rie::FakeRie;
use common::{Lrp, send};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes on a new connection and reads the answer's head (up to the blank line).
async fn raw_exchange(lrp: &Lrp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(lrp.addr).await.expect("connect");
    stream.write_all(request).await.expect("request sent");
    read_head(&mut stream).await
}

const PING: &[u8] = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";

/// A connection to lrp that has been answered one `/ping` (its head read, `pong` left unread).
async fn served_connection(lrp: &Lrp) -> TcpStream {
    let mut stream = TcpStream::connect(lrp.addr).await.unwrap();
    stream.write_all(PING).await.unwrap();
    assert!(read_head(&mut stream).await.starts_with("HTTP/1.1 200"));
    stream
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !answer.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => answer.push(byte[0]),
                _ => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    String::from_utf8_lossy(&answer).into_owned()
}

const QUEUED: &str = r#"lrp_queued_invocations{rule="gated"}"#;
const RUNNING: &str = r#"lrp_running_invocations{rule="gated"}"#;

/// lrp with one rule, `gated`, on a fake whose invocations wait for the test to open its gate.
async fn gated(max_queue: usize) -> (FakeRie, Lrp) {
    let fake = FakeRie::start().await;
    let extra = format!("    max_queue: {max_queue}\n");
    let lrp = Lrp::start(&format!("local:\n{}", fake.rule("gated", "gated", &extra)));
    (fake, lrp)
}

#[tokio::test]
async fn clients_that_give_up_while_queued_give_back_their_places() {
    let (fake, lrp) = gated(3).await;
    let running = tokio::spawn(send(lrp.request("GET", "gated", "/"), ""));
    fake.counters.wait_in_flight(1).await;

    // Ten impatient clients: three get a place and then give up, the rest are refused.
    let impatient = (0..10).map(|_| {
        tokio::time::timeout(
            Duration::from_millis(200),
            send(lrp.request("GET", "gated", "/"), ""),
        )
    });
    let mut refused = 0;
    for reply in futures::future::join_all(impatient)
        .await
        .into_iter()
        .flatten()
    {
        assert_eq!(reply.status, 429, "{}", reply.text());
        refused += 1;
    }
    assert!(refused >= 7, "at most three places: {refused} refused");
    lrp.wait_metric(QUEUED, 0).await;

    // The queue works again: a request that has to wait gets served once the gate opens.
    let patient = tokio::spawn(send(lrp.request("GET", "gated", "/"), ""));
    lrp.wait_metric(QUEUED, 1).await;
    fake.counters.open_gate(2);
    assert_eq!(patient.await.unwrap().status, 200);
    assert_eq!(running.await.unwrap().status, 200);
    lrp.wait_metric(RUNNING, 0).await;
    assert_eq!(fake.counters.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_http2_client_that_resets_queued_streams_leaves_no_queue_behind() {
    let (fake, lrp) = gated(30).await;
    let stream = TcpStream::connect(lrp.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 connection (prior knowledge)");
    tokio::spawn(connection);
    let request = |sender: &hyper::client::conn::http2::SendRequest<Empty<Bytes>>| {
        let mut sender = sender.clone();
        // HTTP/2 names the host in :authority, from the URL.
        let request = http::Request::get("http://gated/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        async move { sender.send_request(request).await }
    };
    // One stream runs, then twenty more queue on the same connection.
    let first = tokio::spawn(request(&sender));
    fake.counters.wait_in_flight(1).await;
    let queued: Vec<_> = (0..20).map(|_| tokio::spawn(request(&sender))).collect();
    lrp.wait_metric(QUEUED, 20).await;

    // Dropping a response future resets its stream (RST_STREAM).
    for stream in queued {
        stream.abort();
    }
    lrp.wait_metric(QUEUED, 0).await;

    let next = tokio::spawn(request(&sender));
    lrp.wait_metric(QUEUED, 1).await;
    fake.counters.open_gate(2);
    let next = next.await.unwrap().expect("served");
    assert_eq!(next.status(), 200);
    assert_eq!(
        next.into_body().collect().await.unwrap().to_bytes(),
        "gated"
    );
    assert_eq!(first.await.unwrap().expect("served").status(), 200);
    lrp.wait_metric(RUNNING, 0).await;
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_full_queue_is_refused_before_the_body_is_read() {
    let (fake, lrp) = gated(1).await;
    let running = tokio::spawn(send(lrp.request("GET", "gated", "/"), ""));
    fake.counters.wait_in_flight(1).await;
    let queued = tokio::spawn(send(lrp.request("GET", "gated", "/"), ""));
    lrp.wait_metric(QUEUED, 1).await;

    // Headers that promise a body that never comes: the answer cannot wait for it.
    let head = raw_exchange(
        &lrp,
        b"POST / HTTP/1.1\r\nHost: gated\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.contains("x-lrp-error: queue-full"), "{head}");

    fake.counters.open_gate(2);
    assert_eq!(running.await.unwrap().status, 200);
    assert_eq!(queued.await.unwrap().status, 200);
}

#[tokio::test]
async fn one_deadline_covers_the_body_and_the_invocation() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        fake.rule("hang", "hang", "    timeout: 2s\n")
    ));
    let mut stream = TcpStream::connect(lrp.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: hang\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    // The body's second half arrives after 1.5 s of the 2 s; the function never answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(b"cd").await.unwrap();
    let head = read_head(&mut stream).await;
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // One 2 s deadline from arrival, not 1.5 s of body plus a fresh 2 s for the invoke.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_millis(3300), "{took:?}");
}

#[tokio::test]
async fn two_host_headers_and_connect_are_refused() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!("local:\n{}", fake.rule("a", "echo", "")));
    // RFC 9112 §3.2: more than one Host, or an invalid one, is a 400.
    let head = raw_exchange(
        &lrp,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("x-lrp-error: invalid-host"), "{head}");
    let head = raw_exchange(
        &lrp,
        b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // A 2xx to CONNECT would tell the client a tunnel is open.
    let head = raw_exchange(
        &lrp,
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(head.contains("x-lrp-error: method-not-allowed"), "{head}");
    assert_eq!(fake.counters.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn function_output_cannot_reach_the_client_or_the_log_unchecked() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!(
        "local:\n{}{}",
        fake.rule("status101", "status101", ""),
        fake.rule("huge-error", "huge-error", "")
    ));
    // A 1xx is no final answer: hyper would switch protocols on 101.
    let reply = send(lrp.request("GET", "status101", "/"), "").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.header("x-lrp-error"), Some("malformed-result"));
    assert_eq!(
        send(lrp.request("GET", "lrp", "/ping"), "").await.status,
        200
    );

    // A megabyte of errorMessage is cut in the log line.
    let reply = send(lrp.request("GET", "huge-error", "/"), "").await;
    assert_eq!(reply.header("x-lrp-error"), Some("function-error"));
    let line = lrp.expect_log("HugeError").await;
    assert!(line.len() < 2048, "a {} byte log line", line.len());
    assert!(line.contains("mmmm […]"), "{line}");
}

#[tokio::test]
async fn past_max_connections_lrp_stops_accepting_until_one_closes() {
    let lrp = Lrp::start("max_connections: 2\n");
    let first = served_connection(&lrp).await;
    let _second = served_connection(&lrp).await;

    // The kernel completes the third handshake, but lrp does not take the connection.
    let mut third = TcpStream::connect(lrp.addr).await.unwrap();
    third.write_all(PING).await.unwrap();
    lrp.expect_log("max_connections reached").await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "no answer while two connections are open");

    drop(first);
    assert!(read_head(&mut third).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn idle_connections_are_closed_http1_and_http2() {
    let lrp = Lrp::start("connection_idle_timeout: 1s\n");
    let mut http1 = served_connection(&lrp).await;
    // The server closes it: the next read sees the end of the stream.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), http1.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle HTTP/1.1 connection was closed");

    let stream = TcpStream::connect(lrp.addr).await.unwrap();
    let (_sender, connection) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        ended.is_ok(),
        "the idle HTTP/2 connection was closed (GOAWAY)"
    );
    lrp.wait_metric("lrp_open_connections", 1).await;
}

/// A request head has 30 s from its first byte, and then the connection is closed without an
/// answer; a keep-alive connection waiting for its next request is bounded only by
/// `connection_idle_timeout` (hyper's own head timer, which lrp does not use, would close it
/// after 30 s idle too).
#[tokio::test]
async fn a_slow_head_is_cut_off_at_30_s_and_an_idle_connection_outlives_it() {
    let lrp = Lrp::start("connection_idle_timeout: 100s\n");
    let mut idle = served_connection(&lrp).await;
    let mut pong = [0u8; 4];
    idle.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");

    let mut slow = TcpStream::connect(lrp.addr).await.unwrap();
    slow.write_all(b"GET /ping HTTP/1.1\r\n").await.unwrap();
    let first_byte = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the slow head's connection was closed");
    assert!(answer.is_empty(), "without an answer");
    assert!(
        first_byte.elapsed() >= Duration::from_secs(29),
        "not before its 30 s: {:?}",
        first_byte.elapsed()
    );

    // Idle for longer than the slow head had, and still served.
    idle.write_all(PING).await.unwrap();
    assert!(read_head(&mut idle).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn out_of_file_descriptors_lrp_warns_once_and_accepts_again_when_some_free() {
    // Soft and hard limits alike, so lrp cannot raise its own.
    let lrp = Lrp::start_command(common::lrp_after_shell("ulimit -n 64"), "");
    let listening = lrp.expect_log("listening on").await;
    let workers: usize = listening
        .split_once("workers=")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no worker count in {listening:?}"));

    // More connections than lrp has descriptors for: the kernel completes every handshake,
    // lrp accepts until it runs out.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(lrp.addr).await.unwrap());
    }
    let out_of_descriptors = lrp
        .process
        .output
        .line_with("accept failed", Duration::from_secs(10));
    assert!(
        out_of_descriptors.await.is_some(),
        "no accept failed:\n{}",
        lrp.logs()
    );
    // Half a second at the limit is ten retries per worker: a warning each would be ten lines.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warnings = lrp.process.output.count("accept failed");
    assert!(
        warnings <= workers,
        "{warnings} warnings from {workers} workers:\n{}",
        lrp.logs()
    );

    drop(held);
    served_connection(&lrp).await;
    let again = lrp
        .process
        .output
        .line_with("accepting connections again", Duration::from_secs(10));
    assert!(again.await.is_some(), "no accepting again:\n{}", lrp.logs());
}
