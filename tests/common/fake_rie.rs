//! A scripted RIE look-alike for the failure shapes no real peer produces on demand. The
//! function name in the invoke path picks the behaviour; the fake records concurrency, and
//! `gated` invocations wait until the test opens the gate, so tests order events without
//! sleeping. [`ResettingPeer`] is an endpoint that accepts and then resets every connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Counters {
    pub calls: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// The `Authorization` header of every request, in order (SigV4 when the AWS SDK calls).
    pub authorizations: std::sync::Mutex<Vec<String>>,
    /// `gated` invocations take a permit each before they answer.
    gate: Gate,
}

struct Gate(tokio::sync::Semaphore);

impl Default for Gate {
    fn default() -> Self {
        Gate(tokio::sync::Semaphore::new(0))
    }
}

impl Counters {
    /// Lets `count` waiting (or future) `gated` invocations answer.
    pub fn open_gate(&self, count: usize) {
        self.gate.0.add_permits(count);
    }

    /// Waits (up to 10 s) until the fake has `count` invocations in flight at once.
    pub async fn wait_in_flight(&self, count: usize) {
        let counters = self;
        super::eventually(
            &format!("{count} invocations in flight at the fake"),
            Duration::from_secs(10),
            || counters.in_flight.load(Ordering::SeqCst) == count,
        )
        .await;
    }
}

pub struct FakeRie {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

impl FakeRie {
    pub async fn start() -> FakeRie {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counters = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let counters = counters.clone();
                        async move { Ok::<_, Infallible>(answer(request, &counters).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeRie { addr, counters }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `local:` rule for `hostname` that invokes the fake's `behaviour`.
    pub fn rule(&self, hostname: &str, behaviour: &str, extra: &str) -> String {
        format!(
            "  - hostname: {hostname}\n    endpoint: {}\n    function_name: {behaviour}\n{extra}",
            self.endpoint()
        )
    }
}

async fn answer(request: Request<Incoming>, counters: &Counters) -> Response<Full<Bytes>> {
    let behaviour = request
        .uri()
        .path()
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .unwrap_or("")
        .to_owned();
    if let Some(authorization) = request.headers().get("authorization") {
        let value = authorization.to_str().unwrap_or_default().to_owned();
        counters.authorizations.lock().unwrap().push(value);
    }
    let event = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    counters.calls.fetch_add(1, Ordering::SeqCst);
    let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let (status, body): (u16, Bytes) = match behaviour.as_str() {
        "echo" => (200, event),
        "error200" => (200, r#"{"errorMessage":"boom","errorType":"FakeError","stackTrace":[]}"#.into()),
        "exit502" => (
            502,
            r#"{"errorMessage":"Runtime exited with error: exit status 3","errorType":"Runtime.ExitError"}"#.into(),
        ),
        "timeout-text" => (200, "Task timed out after 1.00 seconds".into()),
        "busy" => (400, Bytes::new()),
        "empty" => (200, Bytes::new()),
        "garbage" => (200, "<html>not json</html>".into()),
        "status101" => (200, r#"{"statusCode":101,"body":"upgrade?"}"#.into()),
        // A streaming function's answer as the official RIE returns it: the stream buffered,
        // its content type dropped (prelude, eight NUL bytes, body).
        "streamed" => {
            let prelude = r#"{"statusCode":202,"headers":{"content-type":"text/event-stream"},"cookies":["s=1"]}"#;
            let mut body = prelude.as_bytes().to_vec();
            body.extend_from_slice(&[0; 8]);
            body.extend_from_slice(b"data: one\n\ndata: two\n\n");
            (200, body.into())
        }
        "huge-error" => {
            let message = "m".repeat(1024 * 1024);
            let body = format!(r#"{{"errorMessage":"{message}","errorType":"HugeError"}}"#);
            (200, body.into())
        }
        "gated" => {
            if let Ok(permit) = counters.gate.0.acquire().await {
                permit.forget();
            }
            (200, r#"{"statusCode":200,"body":"gated"}"#.into())
        }
        "stall" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            (200, r#"{"statusCode":200,"body":"stalled"}"#.into())
        }
        "statusless-error" => (500, "internal".into()),
        // Lambda API errors, as the Invoke API sends them.
        "throttled" => (
            429,
            r#"{"__type":"TooManyRequestsException","message":"Rate exceeded","Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"}"#.into(),
        ),
        "denied" => (
            403,
            r#"{"__type":"AccessDeniedException","message":"not authorized to perform: lambda:InvokeFunction"}"#.into(),
        ),
        "huge" => {
            let mut body = b"{\"statusCode\":200,\"body\":\"".to_vec();
            body.resize(7 * 1024 * 1024, b'x');
            body.extend_from_slice(b"\"}");
            (200, body.into())
        }
        slow if slow.starts_with("slow") => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            (200, r#"{"statusCode":200,"body":"slow"}"#.into())
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (200, Bytes::new())
        }
        _ => (404, r#"{"title":"Missing function"}"#.into()),
    };
    counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
}

/// An endpoint that accepts each connection, reads what arrives, and resets it (RST, via a
/// zero linger time): a peer that crashes mid-invoke.
pub struct ResettingPeer {
    pub addr: SocketAddr,
}

impl ResettingPeer {
    pub async fn start() -> ResettingPeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await;
                    // A zero linger time resets instead of closing, and never blocks on drop.
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    drop(stream);
                });
            }
        });
        ResettingPeer { addr }
    }

    pub fn rule(&self, hostname: &str, extra: &str) -> String {
        format!(
            "  - hostname: {hostname}\n    endpoint: http://{}\n{extra}",
            self.addr
        )
    }
}
