//! One request from arrival to response: internal route? → host → rule → admission → body →
//! event → invoke → response, with its log line and metrics. The rules themselves live in
//! `router`, `event` and `target`; this is the order they run in, and the bounds around them.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{Level, debug};

use super::body::{self, ResponseBody};
use super::{Proxy, Route, State};
use crate::access_log;
use crate::error::ProxyError;
use crate::event::{Connection, FrontDoor, IncomingRequest, MAX_EVENT_BYTES};
use crate::ids;
use crate::router::{Host, HostError, InternalRoute, internal_route};
use crate::target::{Invoked, TargetError};

/// The header HTTP API gives every response its request id in; REST and function URLs use
/// `x-amzn-requestid`, and ALB none.
/// Built at compile time: a name given as text is parsed again on every insert.
static HTTP_API_REQUEST_ID: HeaderName = HeaderName::from_static("apigw-requestid");
static AMZN_REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
const TEXT: &str = "text/plain; charset=utf-8";

/// One request from arrival to response.
pub(super) async fn handle(
    state: &State,
    connection: &Connection,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
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
        let response = response.map(ResponseBody::whole);
        return finish(response, &ids::api_request_id(), FrontDoor::HttpApi);
    }

    let host = request_host(&parts);
    let route = host
        .as_ref()
        .ok()
        .and_then(|h| proxy.table.lookup(h, &parts.method, parts.uri.path()));
    // Failures found before a rule is known are answered as HTTP API answers them.
    let door = route.map_or(FrontDoor::HttpApi, |r| r.format.front_door());
    let request_id = route.map_or_else(ids::api_request_id, |r| r.format.request_id());
    let mut served_by = ServedBy::Local;
    // The access line's part of the request, copied: `invoke` drops the request's head before
    // it waits for the function (see there).
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let outcome = match (&host, route) {
        (Err(error), _) => {
            discard_rest(&parts, body);
            Err(error.clone())
        }
        (Ok(host), None) => {
            discard_rest(&parts, body);
            Err(ProxyError::NoRule(host.clone()))
        }
        (Ok(host), Some(route)) => {
            let context = RequestContext {
                parts,
                host,
                connection,
                request_id: &request_id,
            };
            let _running = route.metrics.in_flight();
            invoke(route, context, body, started, &mut served_by).await
        }
    };

    let status = outcome
        .as_ref()
        .map_or_else(|e| e.status(door), |r| r.status());
    let took = started.elapsed();
    match route {
        Some(route) => route.metrics.finished(status, took, served_by.name()),
        None => state.metrics.unrouted(status),
    }
    let mut entry = access_log::Entry {
        method: method.as_str(),
        host: host.as_ref().map_or("-", Host::as_str),
        path: &path,
        status: status.as_u16(),
        rule: route.map_or("-", |r| r.name.as_str()),
        took,
        served_by: served_by.name(),
        request_id: &request_id,
        error: None,
    };
    let response = match outcome {
        Ok(response) => {
            entry.log(Level::INFO);
            response
        }
        Err(error) => {
            let kind = error.kind();
            state.metrics.error(kind);
            entry.error = Some((kind, &error));
            entry.log(if status.is_server_error() {
                Level::WARN
            } else {
                Level::INFO
            });
            error.to_response(door).map(ResponseBody::whole)
        }
    };
    finish(response, &request_id, door)
}

/// The host to route by, or why the request cannot be routed at all.
fn request_host(parts: &http::request::Parts) -> Result<Host, ProxyError> {
    // A 2xx answer to CONNECT tells the client a tunnel is open (RFC 9110 §9.3.6).
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(Method::CONNECT));
    }
    Host::of_request(&parts.uri, &parts.headers).map_err(|error| match error {
        HostError::Missing => ProxyError::MissingHost,
        HostError::Repeated => ProxyError::InvalidHost("more than one Host header"),
        HostError::Invalid => ProxyError::InvalidHost("a Host header that is not a host"),
    })
}

struct RequestContext<'a> {
    parts: http::request::Parts,
    host: &'a Host,
    connection: &'a Connection,
    request_id: &'a str,
}

/// Which function answered a request: the rule's own, or its `overflow` on AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServedBy {
    Local,
    Overflow,
}

impl ServedBy {
    fn name(self) -> &'static str {
        match self {
            ServedBy::Local => "local",
            ServedBy::Overflow => "overflow",
        }
    }
}

/// Admission first, so a request refused for a full queue never has its body read; then one
/// deadline, counted from the request's arrival, bounds the body, the wait for a slot and the
/// invocation together. A rule with an `overflow` sends the request there instead when its
/// queue is full or its endpoint unreachable (`served_by` says so).
///
/// The request's head is dropped once the event is written, before the wait for the function.
/// hyper keeps reading the connection while a request is in flight, to notice a client that
/// goes away, and the head's header values and path are slices of the buffer it reads into:
/// while they live, each of those reads replaces that buffer with a new one.
async fn invoke(
    route: &Route,
    context: RequestContext<'_>,
    body: Incoming,
    started: Instant,
    served_by: &mut ServedBy,
) -> Result<Response<ResponseBody>, ProxyError> {
    // Rule timeouts are at most 15 minutes (the config checks it): no overflow.
    let deadline = started + route.timeout;
    let admitted = match (route.target.admit(), &route.overflow) {
        (Ok(admitted), _) => Some(admitted),
        (Err(TargetError::QueueFull), Some(_)) => None,
        (Err(refused), _) => {
            discard_rest(&context.parts, body);
            return Err(refused.into());
        }
    };
    let received = SystemTime::now();
    let body = tokio::time::timeout_at(deadline, read_body(&context.parts, body))
        .await
        .map_err(|_| ProxyError::BodyTimeout)??;
    let trace_id = ids::trace_id_of(&context.parts.headers, received);
    let path = context.parts.uri.path();
    let path = match &route.strip_prefix {
        // What is left of the path, with its slash: `/orders/1` without `/orders` is `/1`.
        Some(prefix) => match path.strip_prefix(prefix.as_str()) {
            Some("") => "/",
            Some(rest) => rest,
            None => path,
        },
        None => path,
    };
    let incoming = IncomingRequest {
        parts: &context.parts,
        path,
        body: &body,
        host: context.host,
        connection: context.connection,
        request_id: context.request_id,
        trace_id: &trace_id,
        received,
    };
    let event = route
        .format
        .to_event(&incoming)
        .map_err(|_| ProxyError::RequestTooLarge)?;
    let decode_base64 = route.format.decodes_base64_result(&context.parts.headers);
    drop(body);
    drop(context);
    let event = Bytes::from(event);
    let invoked = match (admitted, &route.overflow) {
        (Some(admitted), None) => admitted.invoke(event, deadline, &trace_id).await?,
        (Some(admitted), Some(overflow)) => {
            // A second handle on the same bytes, for the overflow: no copy.
            match admitted.invoke(event.clone(), deadline, &trace_id).await {
                Err(TargetError::Unreachable(cause)) => {
                    debug!(%cause, "the local function is unreachable: overflowing to AWS");
                    *served_by = ServedBy::Overflow;
                    overflow.invoke(event, deadline).await?
                }
                invoked => invoked?,
            }
        }
        (None, overflow) => {
            // Not admitted: the queue is full, and the rule has an overflow (else it returned).
            let overflow = overflow.as_ref().ok_or(TargetError::QueueFull)?;
            *served_by = ServedBy::Overflow;
            overflow.invoke(event, deadline).await?
        }
    };
    let result = match invoked {
        Invoked::Buffered(result) => result,
        // A stream carries its own head in its prelude, whatever the format.
        Invoked::Streamed(stream) => return body::streaming_response(stream).await,
    };
    let response = route.format.from_result(result, decode_base64)?;
    Ok(response.map(ResponseBody::whole))
}

/// Reads the body, never buffering more than an event may hold. Memory grows with the bytes
/// that arrive, whatever `Content-Length` claims.
async fn read_body(parts: &http::request::Parts, body: Incoming) -> Result<Bytes, ProxyError> {
    if declared_length(parts).is_some_and(|length| length > MAX_EVENT_BYTES as u64) {
        discard_rest(parts, body);
        return Err(ProxyError::RequestTooLarge);
    }
    match Limited::new(body, MAX_EVENT_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ProxyError::RequestTooLarge),
        Err(error) => Err(ProxyError::BodyRead(error.to_string())),
    }
}

fn declared_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads and drops what is left of a body lrp refused without reading (413, 429, 404, 400),
/// so that a client still sending it gets to read the answer instead of a reset connection
/// (nginx's lingering close). Bounded in time and bytes, and never buffered; a client that
/// asked `Expect: 100-continue` was told no and sends nothing.
fn discard_rest(parts: &http::request::Parts, mut body: Incoming) {
    const DISCARD_LIMIT: usize = 64 * 1024 * 1024;
    const DISCARD_TIME: Duration = Duration::from_secs(5);
    if body.is_end_stream() || parts.headers.contains_key(header::EXPECT) {
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
            let (queued, running) = route.target.admission();
            route.metrics.set_admission(queued, running);
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

/// The response with the front door's request id header.
fn finish<B>(mut response: Response<B>, request_id: &str, door: FrontDoor) -> Response<B> {
    let name = match door {
        FrontDoor::HttpApi => &HTTP_API_REQUEST_ID,
        FrontDoor::Rest | FrontDoor::FunctionUrl => &AMZN_REQUEST_ID,
        FrontDoor::Alb => return response,
    };
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(name.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: http::request::Builder) -> http::request::Parts {
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn connect_and_bad_hosts_are_refused_before_routing() {
        let connect = parts(Request::connect("a:443").header("host", "a:443"));
        assert!(matches!(
            request_host(&connect),
            Err(ProxyError::MethodNotAllowed(_))
        ));
        let two = parts(
            Request::get("/")
                .header("host", "a")
                .header("host", "other"),
        );
        assert!(matches!(
            request_host(&two),
            Err(ProxyError::InvalidHost(_))
        ));
        let none = parts(Request::get("/"));
        assert!(matches!(request_host(&none), Err(ProxyError::MissingHost)));
        let one = parts(Request::get("/").header("host", "A:8080"));
        assert_eq!(request_host(&one).unwrap().as_str(), "a");
    }

    #[test]
    fn a_claimed_length_is_read_but_never_trusted_for_allocation() {
        let claimed = parts(Request::post("/").header("content-length", "6291457"));
        assert_eq!(declared_length(&claimed), Some(6_291_457));
        let garbage = parts(Request::post("/").header("content-length", "lots"));
        assert_eq!(declared_length(&garbage), None);
    }

    #[test]
    fn responses_carry_the_request_id() {
        let id = "QQCtFipSIAMEPNQ=";
        let response = finish(Response::new(Bytes::new()), id, FrontDoor::HttpApi);
        assert_eq!(response.headers()[&HTTP_API_REQUEST_ID], id);
        let response = finish(Response::new(Bytes::new()), id, FrontDoor::Rest);
        assert_eq!(response.headers()[&AMZN_REQUEST_ID], id);
        let response = finish(Response::new(Bytes::new()), id, FrontDoor::Alb);
        assert!(response.headers().is_empty());
    }
}
