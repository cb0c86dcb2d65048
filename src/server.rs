//! The listener and the per-request pipeline: internal route? → host → rule → event →
//! invoke → response. All the I/O is here; the rules live in `router`, `event` and `target`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{Level, debug, error, info, warn};

use crate::config::Config;
use crate::error::ProxyError;
use crate::event::{self, IncomingRequest, MAX_EVENT_BYTES};
use crate::ids;
use crate::metrics::{Metrics, RuleMetrics};
use crate::router::{Host, InternalRoute, RouteTable, internal_route};
use crate::target::{Target, TargetFactory};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The header HTTP API uses to give every response its request id.
const REQUEST_ID_HEADER: &str = "apigw-requestid";
const TEXT: &str = "text/plain; charset=utf-8";

/// One rule, ready to serve.
pub struct Route {
    /// The hostname as configured, for logs and metrics.
    pub name: String,
    pub target: Target,
    pub timeout: Duration,
    metrics: RuleMetrics,
}

/// The rule table and the settings that come with it: what a reload replaces.
pub struct Proxy {
    table: RouteTable<Route>,
    internal_route_prefix: String,
    shutdown_delay: Duration,
}

impl Proxy {
    async fn new(config: &Config, metrics: &Metrics, targets: &mut TargetFactory) -> Self {
        let mut routes = Vec::with_capacity(config.rules.len());
        for rule in &config.rules {
            let name = rule.hostname.to_string();
            let route = Route {
                metrics: metrics.rule(&name),
                name,
                target: targets
                    .build(&rule.target, rule.timeout, config.region.as_deref())
                    .await,
                timeout: rule.timeout,
            };
            routes.push((rule.hostname.clone(), route));
        }
        Proxy {
            table: RouteTable::new(routes),
            internal_route_prefix: config.internal_route_prefix.clone(),
            shutdown_delay: config.shutdown_delay,
        }
    }

    /// Stops what the targets run themselves.
    async fn shutdown(&self) {
        for route in self.table.routes() {
            route.target.shutdown().await;
        }
    }
}

/// A running lrp: the current rule table, its metrics, and whether it is shutting down.
/// Clones share the same server, so one can serve while another reloads.
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
}

struct State {
    proxy: ArcSwap<Proxy>,
    metrics: Metrics,
    draining: AtomicBool,
    /// Kept across reloads (see [`TargetFactory`]); locked only while a table is built.
    targets: tokio::sync::Mutex<TargetFactory>,
}

impl Server {
    /// Builds every target; call it inside the Tokio runtime (command targets start tasks).
    pub async fn new(config: &Config) -> Self {
        let metrics = Metrics::new();
        let mut targets = TargetFactory::new();
        let proxy = Proxy::new(config, &metrics, &mut targets).await;
        Server {
            state: Arc::new(State {
                proxy: ArcSwap::from_pointee(proxy),
                metrics,
                draining: AtomicBool::new(false),
                targets: tokio::sync::Mutex::new(targets),
            }),
        }
    }

    /// Swaps in the rules of an already validated `config`. Requests in flight finish on the
    /// table they started with; that table's functions stop once the last of them is done.
    pub async fn reload(&self, config: &Config) {
        let proxy = {
            let mut targets = self.state.targets.lock().await;
            Proxy::new(config, &self.state.metrics, &mut targets).await
        };
        let old = self.state.proxy.swap(Arc::new(proxy));
        tokio::spawn(async move {
            let retired = Instant::now();
            while Arc::strong_count(&old) > 1 && retired.elapsed() < DRAIN_TIMEOUT {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            old.shutdown().await;
        });
    }

    /// Serves until `shutdown` resolves. From then on `/healthz` answers 503; lrp keeps
    /// accepting for the configured `shutdown_delay` (so load balancers see it), then stops
    /// accepting, drains in-flight requests for up to 30 s, and stops the functions it runs.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let local_port = listener.local_addr()?.port();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper ignores header_read_timeout without a timer (and panics if set without one).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let stop_accepting = async {
            shutdown.await;
            self.state.draining.store(true, Ordering::Release);
            let delay = self.state.proxy.load().shutdown_delay;
            info!("shutting down: /healthz now answers 503; accepting for {delay:?} more");
            tokio::time::sleep(delay).await;
        };
        tokio::pin!(stop_accepting);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Running out of file descriptors must not end the server: wait, go on.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop_accepting => break,
            };
            if let Err(e) = stream.set_nodelay(true) {
                debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let state = self.state.clone();
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, peer, local_port, request).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
        drop(listener);
        info!("draining in-flight requests");
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            error!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        self.state.proxy.load().shutdown().await;
        Ok(())
    }
}

/// One request from arrival to response, with its log line and metrics.
async fn handle(
    state: &State,
    peer: SocketAddr,
    local_port: u16,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let request_id = ids::api_request_id();
    let (parts, body) = request.into_parts();
    // This request keeps the table it started with, whatever a reload does meanwhile.
    let proxy = state.proxy.load_full();

    if let Some(route) = internal_route(
        &proxy.internal_route_prefix,
        &parts.method,
        parts.uri.path(),
    ) {
        let response = internal_response(route, state, &proxy);
        debug!(method = %parts.method, path = parts.uri.path(),
            status = response.status().as_u16(), "internal route");
        return finish(response, &request_id);
    }

    let host = Host::of_request(&parts.uri, &parts.headers);
    let route = host.as_ref().and_then(|h| proxy.table.lookup(h));
    let outcome = match (&host, route) {
        (None, _) => Err(ProxyError::MissingHost),
        (Some(host), None) => Err(ProxyError::NoRule(host.clone())),
        (Some(host), Some(route)) => {
            let context = RequestContext {
                parts: &parts,
                host,
                peer_ip: peer.ip().to_canonical(),
                local_port,
                request_id: &request_id,
            };
            let _running = route.metrics.in_flight();
            invoke(route, &context, body).await
        }
    };

    let status = outcome.as_ref().map_or_else(|e| e.status(), |r| r.status());
    let took = started.elapsed();
    match route {
        Some(route) => route.metrics.finished(status, took),
        None => state.metrics.unrouted(status),
    }
    let host_text = host.as_ref().map_or("-", Host::as_str);
    let rule = route.map_or("-", |r| r.name.as_str());
    // Whole microseconds: a short number in either log format.
    let duration_ms = took.as_micros() as f64 / 1000.0;
    macro_rules! log_request {
        ($level:expr, $($error:tt)*) => {
            // Display, not Debug, for text HTTP already restricts to visible ASCII: cheaper.
            tracing::event!($level, method = %parts.method, host = %host_text,
                path = %parts.uri.path(), status = status.as_u16(), rule = %rule, duration_ms,
                request_id = %request_id, $($error)* "request")
        };
    }
    let response = match outcome {
        Ok(response) => {
            log_request!(Level::INFO,);
            response
        }
        Err(error) => {
            let (kind, cause) = (error.kind(), &error);
            state.metrics.error(kind);
            if status.is_server_error() {
                log_request!(Level::WARN, error = kind, cause = %cause,);
            } else {
                log_request!(Level::INFO, error = kind, cause = %cause,);
            }
            error.to_response()
        }
    };
    finish(response, &request_id)
}

struct RequestContext<'a> {
    parts: &'a http::request::Parts,
    host: &'a Host,
    peer_ip: IpAddr,
    local_port: u16,
    request_id: &'a str,
}

async fn invoke(
    route: &Route,
    context: &RequestContext<'_>,
    body: Incoming,
) -> Result<Response<Bytes>, ProxyError> {
    let received = SystemTime::now();
    let body = read_body(context.parts, body, route.timeout).await?;
    let trace_id = context
        .parts
        .headers
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| ids::trace_id(received), str::to_owned);
    let incoming = IncomingRequest {
        parts: context.parts,
        body: &body,
        host: context.host,
        peer_ip: context.peer_ip,
        local_port: context.local_port,
        request_id: context.request_id,
        trace_id: &trace_id,
        received,
    };
    let event = event::v2::to_event(&incoming).map_err(|_| ProxyError::RequestTooLarge)?;
    drop(body);
    let result = route
        .target
        .invoke(Bytes::from(event), route.timeout, &trace_id)
        .await?;
    Ok(event::v2::from_result(result)?)
}

/// Reads the body, never buffering more than an event may hold.
async fn read_body(
    parts: &http::request::Parts,
    mut body: Incoming,
    timeout: Duration,
) -> Result<Bytes, ProxyError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_EVENT_BYTES as u64) {
        discard_rest(parts, body);
        return Err(ProxyError::RequestTooLarge);
    }
    let capacity = declared.map_or(0, |length| length as usize);
    let mut buffer = BytesMut::with_capacity(capacity);
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buffer.len() + data.len() > MAX_EVENT_BYTES {
                    return Err(ProxyError::RequestTooLarge);
                }
                buffer.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ProxyError::BodyTimeout),
        Ok(Err(ProxyError::RequestTooLarge)) => {
            discard_rest(parts, body);
            Err(ProxyError::RequestTooLarge)
        }
        Ok(Err(error)) => Err(error),
        Ok(Ok(())) => Ok(buffer.freeze()),
    }
}

/// Reads and drops what is left of a refused body, so that a client still sending it gets to
/// read the 413 instead of a reset connection (nginx's lingering close). Bounded in time and
/// bytes; a client that asked `Expect: 100-continue` was told no and sends nothing.
fn discard_rest(parts: &http::request::Parts, mut body: Incoming) {
    const DISCARD_LIMIT: usize = 64 * 1024 * 1024;
    const DISCARD_TIME: Duration = Duration::from_secs(5);
    if parts.headers.contains_key(header::EXPECT) {
        return;
    }
    tokio::spawn(tokio::time::timeout(DISCARD_TIME, async move {
        let mut discarded = 0;
        while let Some(Ok(frame)) = body.frame().await {
            discarded += frame.data_ref().map_or(0, Bytes::len);
            if discarded > DISCARD_LIMIT {
                break;
            }
        }
    }));
}

fn internal_response(route: InternalRoute, state: &State, proxy: &Proxy) -> Response<Bytes> {
    if route == InternalRoute::Metrics {
        for route in proxy.table.routes() {
            route.metrics.set_queued(route.target.waiting());
        }
    }
    let (status, content_type, body) = match route {
        InternalRoute::Ping => (StatusCode::OK, TEXT, Bytes::from_static(b"pong")),
        InternalRoute::Healthz if state.draining.load(Ordering::Acquire) => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            Bytes::from_static(b"shutting down"),
        ),
        InternalRoute::Healthz => (StatusCode::OK, TEXT, Bytes::from_static(b"ok")),
        InternalRoute::Metrics => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(state.metrics.encode()),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn finish(response: Response<Bytes>, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = response.map(Full::new);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
