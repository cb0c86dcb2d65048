//! A scripted RIE look-alike for the failure shapes no real peer produces on demand. The
//! function name in the invoke path picks the behaviour; the fake records concurrency.

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
