//! The Lambda Runtime API (2018-06-01) for one execution environment, as AWS documents it:
//! `/next` hands out one invocation at a time, `/response` and `/error` settle it, and
//! `/init/error` reports a runtime that cannot start. Status codes and error bodies for
//! misuse follow AWS's own implementation (the Runtime Interface Emulator's `rapi` package).
//!
//! Of the Extensions API (2020-01-01) it serves registration, and an `event/next` that waits
//! until the environment ends: extensions that only need to be registered run (the Lambda Web
//! Adapter, run as the function's bootstrap, registers itself before it serves), but no
//! INVOKE or SHUTDOWN events are sent.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::fast_path::{self, Parsed};
use super::handoff::Handoff;
use super::quiet;
use super::small_reads::SmallReads;
use crate::error::json_response;
use crate::event::MAX_RESULT_BYTES;
use crate::target::ErrorObject;
use crate::target::stream::{ChunkSender, StreamError};

const PREFIX: &str = "/2018-06-01/runtime";
// The Runtime API's headers, built at compile time: a name given as `&str` is parsed again
// on every use.
const REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
const DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
const FUNCTION_ARN: HeaderName = HeaderName::from_static("lambda-runtime-invoked-function-arn");
const TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
const RESPONSE_MODE: HeaderName = HeaderName::from_static("lambda-runtime-function-response-mode");
const ERROR_TYPE: HeaderName = HeaderName::from_static("lambda-runtime-function-error-type");
const ERROR_BODY: HeaderName = HeaderName::from_static("lambda-runtime-function-error-body");
const EXTENSION_PREFIX: &str = "/2020-01-01/extension";
/// A runtime's request head may be this large: awslambdaric reports an error's X-Ray cause in
/// a header of up to 1 MiB (`post_invocation_error` in its `lambda_runtime_client.py`), which
/// hyper's default buffer (about 400 KiB) refuses, and the runtime then exits instead of
/// reporting its error. Reads stay small all the same: see [`SmallReads`].
const MAX_HEAD_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// What a connection's reads start with: the head of a `/response` and a small result.
const FIRST_READ_BYTES: usize = 4 * 1024;

/// One invocation on its way to the runtime.
pub struct Invocation {
    pub request_id: String,
    pub event: Bytes,
    pub deadline_epoch_ms: u64,
    /// The same deadline, for lrp's own waits.
    pub deadline: Instant,
    pub trace_id: String,
    pub reply: oneshot::Sender<Outcome>,
}

/// How the runtime settled an invocation.
#[derive(Debug)]
pub enum Outcome {
    Response(Bytes),
    Error {
        error_type: String,
        message: String,
    },
    ResponseTooLarge,
    /// A response in streaming mode, its chunks arriving as the runtime writes them. `done`
    /// resolves (with an error: its sender is dropped) once the runtime's request is over.
    Stream {
        content_type: Option<String>,
        chunks: mpsc::Receiver<Result<Bytes, StreamError>>,
        done: oneshot::Receiver<()>,
    },
}

/// Why an execution environment can serve no more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    InitError { error_type: String, message: String },
    Exited(String),
}

/// The invocation the runtime is working on.
struct Current {
    request_id: String,
    deadline: Instant,
    /// `None` once the runtime has answered.
    reply: Option<oneshot::Sender<Outcome>>,
}

/// An invocation as `/next` hands it to the runtime.
pub struct Handed {
    request_id: String,
    deadline_epoch_ms: u64,
    trace_id: String,
    pub event: Bytes,
}

impl Handed {
    /// `/next`'s headers (the Lambda guide, "Using the Lambda runtime API"), each value as it is
    /// written. All but the trace id are lrp's own. That one comes from a client's header read
    /// as text, and is left out should it hold a byte a field cannot carry (RFC 9110, section
    /// 5.5: `HeaderValue`'s rule).
    pub fn for_each_header(
        &self,
        function_arn: Option<&HeaderValue>,
        mut emit: impl FnMut(HeaderName, &[u8]),
    ) {
        emit(header::CONTENT_TYPE, b"application/json");
        emit(REQUEST_ID, self.request_id.as_bytes());
        emit(
            DEADLINE_MS,
            itoa::Buffer::new()
                .format(self.deadline_epoch_ms)
                .as_bytes(),
        );
        if let Some(function_arn) = function_arn {
            emit(FUNCTION_ARN, function_arn.as_bytes());
        }
        let field_byte = |&byte: &u8| byte == b'\t' || (byte >= b' ' && byte != 0x7f);
        if self.trace_id.as_bytes().iter().all(field_byte) {
            emit(TRACE_ID, self.trace_id.as_bytes());
        }
    }
}

pub struct RuntimeApi {
    function_arn: String,
    /// The same, as `/next` sends it.
    function_arn_header: Option<HeaderValue>,
    next: Handoff<Invocation>,
    current: Mutex<Option<Current>>,
    death: Arc<watch::Sender<Option<Death>>>,
}

impl RuntimeApi {
    pub fn new(function_arn: String, death: Arc<watch::Sender<Option<Death>>>) -> Self {
        RuntimeApi {
            function_arn_header: HeaderValue::from_str(&function_arn).ok(),
            function_arn,
            next: Handoff::new(),
            current: Mutex::new(None),
            death,
        }
    }

    /// Hands `invocation` to the runtime's next `/next`; gives it back once the environment
    /// shuts down.
    pub fn invoke(&self, invocation: Invocation) -> Result<(), Invocation> {
        self.next.offer(invocation)
    }

    /// Every `/next`, waiting or to come, is answered that the environment shuts down.
    pub fn shut_down(&self) {
        self.next.close();
    }

    /// Serves the runtime's connections until the listener's task is aborted.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(self.clone().connection(stream));
        }
    }

    /// Serves `/next` and buffered responses itself, for as long as the runtime sends only
    /// those; the first other request, and the rest of the connection, go to hyper.
    async fn connection(self: Arc<Self>, stream: TcpStream) {
        let (mut read, mut write) = stream.into_split();
        let mut unread = BytesMut::with_capacity(FIRST_READ_BYTES);
        let mut head = Vec::with_capacity(512);
        let mut quiet = false;
        loop {
            let (request, head_length) = match fast_path::parse(&unread) {
                Parsed::Fast {
                    request,
                    head_length,
                } => (request, head_length),
                Parsed::Partial if quiet => {
                    quiet = false;
                    if !self.hear_when_needed(&read, &mut unread).await {
                        return;
                    }
                    continue;
                }
                Parsed::Partial if unread.len() < fast_path::MAX_HEAD_BYTES => {
                    if !read_more(&mut read, &mut unread, FIRST_READ_BYTES).await {
                        return;
                    }
                    continue;
                }
                Parsed::Partial | Parsed::Other => {
                    return self.serve_with_hyper(unread.freeze(), read, write).await;
                }
            };
            unread.advance(head_length);
            let written = match request {
                fast_path::Request::Next => {
                    // A runtime that goes away while it waits must not take an invocation
                    // with it.
                    let handed = tokio::select! {
                        handed = self.next_invocation() => handed,
                        () = until_closed(&mut read, &mut unread) => return,
                    };
                    match handed {
                        Some(handed) => {
                            let arn = self.function_arn_header.as_ref();
                            fast_path::write_next(&mut write, &mut head, handed, arn).await
                        }
                        None => fast_path::write_response(&mut write, shutting_down()).await,
                    }
                }
                fast_path::Request::Response {
                    request_id,
                    body_length,
                } => {
                    while unread.len() < body_length {
                        let missing = body_length - unread.len();
                        if !read_more(&mut read, &mut unread, missing).await {
                            return;
                        }
                    }
                    let body = unread.split_to(body_length).freeze();
                    match self.settle_body(&request_id, Ok(body)) {
                        Ok(()) => {
                            // Before the runtime can send its next request; and not if it sent
                            // one already, without waiting for the answer: that one is unread.
                            quiet = unread.is_empty() && quiet::start(&read);
                            write.write_all(fast_path::ACCEPTED).await
                        }
                        Err(not_accepted) => {
                            fast_path::write_response(&mut write, not_accepted.response()).await
                        }
                    }
                }
            };
            if written.is_err() {
                return;
            }
        }
    }

    /// Waits, with the connection quiet, until an invocation is offered or the connection
    /// closes; then reads what the runtime sent meanwhile (its `/next`, most likely) and makes
    /// the connection heard again. `false` once the connection is closed. An offer that another
    /// of the runtime's connections takes ends the quiet too: the runtime may send its answer
    /// on this one (`lambda_runtime`'s client uses whichever pooled connection is idle).
    async fn hear_when_needed(&self, read: &OwnedReadHalf, unread: &mut BytesMut) -> bool {
        unread.reserve(FIRST_READ_BYTES);
        let open = tokio::select! {
            () = self.next.offered() => quiet::read_now(read, unread),
            // A closed connection is heard even while quiet; so is a request past the mark.
            ready = read.readable() => ready.is_ok() && quiet::read_now(read, unread),
        };
        // Only now: ending the quiet with the runtime's bytes still unread would signal them.
        quiet::end(read);
        open
    }

    async fn serve_with_hyper(
        self: Arc<Self>,
        already_read: Bytes,
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
    ) {
        let stream = tokio::io::join(replayed(already_read, read), write);
        let service = service_fn(move |request| {
            let api = self.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await.map(Full::new)) }
        });
        let _ = http1::Builder::new()
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Bytes> {
        let path = request.uri().path().to_owned();
        if let Some(route) = path.strip_prefix(EXTENSION_PREFIX) {
            return self.extension(request.method(), route).await;
        }
        let Some(route) = path.strip_prefix(PREFIX) else {
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such Runtime API path",
            );
        };
        match (request.method(), route) {
            (&Method::GET, "/invocation/next") => self.next_response(self.next_invocation().await),
            (&Method::POST, "/init/error") => {
                let error_type = error_type_header(&request);
                let body = read_limited(request.into_body()).await.unwrap_or_default();
                let (error_type, message) = describe_error(error_type, &body);
                tracing::warn!(%error_type, %message, "the function failed to initialize");
                self.death.send_replace(Some(Death::InitError {
                    error_type,
                    message,
                }));
                accepted()
            }
            (&Method::POST, route) => {
                let Some((request_id, kind)) = route
                    .strip_prefix("/invocation/")
                    .and_then(|rest| rest.split_once('/'))
                else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "no such Runtime API path",
                    );
                };
                match kind {
                    "response" => self.settle_response(request_id, request).await,
                    "error" => self.settle_error(request_id, request).await,
                    _ => error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "no such Runtime API path",
                    ),
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such Runtime API path",
            ),
        }
    }

    async fn extension(&self, method: &Method, route: &str) -> Response<Bytes> {
        match (method, route) {
            (&Method::POST, "/register") => {
                let name = self.function_arn.rsplit(':').next().unwrap_or("");
                let body = serde_json::json!({
                    "functionName": name,
                    "functionVersion": "$LATEST",
                    "handler": "",
                });
                let mut response = json_response(StatusCode::OK, body.to_string());
                if let Ok(id) = HeaderValue::try_from(crate::ids::lambda_request_id()) {
                    response
                        .headers_mut()
                        .insert("lambda-extension-identifier", id);
                }
                response
            }
            (&Method::GET, "/event/next") => {
                let mut death = self.death.subscribe();
                let _ = death.wait_for(Option::is_some).await;
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Extension.Shutdown",
                    "the execution environment is shutting down",
                )
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such Extensions API path",
            ),
        }
    }

    /// The next invocation, made the runtime's current one; `None` once the environment shuts
    /// down.
    async fn next_invocation(&self) -> Option<Handed> {
        let invocation = self.next.take().await?;
        if let Ok(mut current) = self.current.lock() {
            *current = Some(Current {
                request_id: invocation.request_id.clone(),
                deadline: invocation.deadline,
                reply: Some(invocation.reply),
            });
        }
        Some(Handed {
            request_id: invocation.request_id,
            deadline_epoch_ms: invocation.deadline_epoch_ms,
            trace_id: invocation.trace_id,
            event: invocation.event,
        })
    }

    /// `/next`'s answer, for hyper.
    fn next_response(&self, handed: Option<Handed>) -> Response<Bytes> {
        let Some(handed) = handed else {
            return shutting_down();
        };
        let mut headers = http::HeaderMap::with_capacity(5);
        handed.for_each_header(self.function_arn_header.as_ref(), |name, value| {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(name, value);
            }
        });
        let mut response = Response::new(handed.event);
        *response.headers_mut() = headers;
        response
    }

    async fn settle_response(
        &self,
        request_id: &str,
        request: Request<Incoming>,
    ) -> Response<Bytes> {
        let streaming = request
            .headers()
            .get(RESPONSE_MODE)
            .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"streaming"));
        if streaming {
            return self.settle_stream(request_id, request).await;
        }
        let body = read_limited(request.into_body()).await;
        match self.settle_body(request_id, body) {
            Ok(()) => accepted(),
            Err(not_accepted) => not_accepted.response(),
        }
    }

    /// Settles the invocation `request_id` with a buffered response's body, as read: `Ok` when
    /// the runtime is to be answered `202`.
    fn settle_body(
        &self,
        request_id: &str,
        body: Result<Bytes, BodyError>,
    ) -> Result<(), NotAccepted> {
        let outcome = match body {
            Ok(body) => Outcome::Response(body),
            Err(BodyError::TooLarge) => Outcome::ResponseTooLarge,
            Err(BodyError::Broken) => return Err(NotAccepted::Truncated),
        };
        let too_large = matches!(outcome, Outcome::ResponseTooLarge);
        match self.settle(request_id, outcome) {
            Err(refusal) => Err(NotAccepted::Refused(refusal)),
            Ok(()) if too_large => Err(NotAccepted::TooLarge),
            Ok(()) => Ok(()),
        }
    }

    /// A response in streaming mode (the Lambda guide, "Response streaming"; Node's
    /// `aws-lambda-ric` and the Rust `lambda_runtime` write it): a chunked body, and an error
    /// mid-stream reported in the `Lambda-Runtime-Function-Error-Type` and `-Body` trailers.
    /// Each chunk is handed on as it arrives; the runtime is answered once the stream ends,
    /// or at once when the client has gone away.
    async fn settle_stream(&self, request_id: &str, request: Request<Incoming>) -> Response<Bytes> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Without such an invocation `settle` refuses the stream below.
        let deadline = self.deadline_of(request_id).unwrap_or_else(Instant::now);
        let (sender, chunks) = ChunkSender::channel(deadline);
        let (finished, done) = oneshot::channel();
        let outcome = Outcome::Stream {
            content_type,
            chunks,
            done,
        };
        if let Err(refusal) = self.settle(request_id, outcome) {
            return refusal.response();
        }
        forward_stream(request.into_body(), sender).await;
        drop(finished);
        accepted()
    }

    async fn settle_error(&self, request_id: &str, request: Request<Incoming>) -> Response<Bytes> {
        let error_type = error_type_header(&request);
        let body = read_limited(request.into_body()).await.unwrap_or_default();
        let (error_type, message) = describe_error(error_type, &body);
        match self.settle(
            request_id,
            Outcome::Error {
                error_type,
                message,
            },
        ) {
            Err(refusal) => refusal.response(),
            Ok(()) => accepted(),
        }
    }

    /// The deadline of the invocation `request_id`, while the runtime works on it.
    fn deadline_of(&self, request_id: &str) -> Option<Instant> {
        let current = self.current.lock().ok()?;
        let current = current.as_ref()?;
        (current.request_id == request_id).then_some(current.deadline)
    }

    /// Hands the outcome to whoever waits for the invocation `request_id`.
    fn settle(&self, request_id: &str, outcome: Outcome) -> Result<(), Refusal> {
        let mut current = self.current.lock().map_err(|_| Refusal::NoInvocation)?;
        let current = current.as_mut().ok_or(Refusal::NoInvocation)?;
        if current.request_id != request_id {
            return Err(Refusal::UnknownRequestId);
        }
        let reply = current.reply.take().ok_or(Refusal::AlreadyAnswered)?;
        // The invoker may have given up (timeout); the runtime's answer is still accepted.
        let _ = reply.send(outcome);
        Ok(())
    }
}

/// A connection as hyper reads it: the bytes the fast path already read, then the rest, in
/// small reads.
fn replayed<R: AsyncRead + Unpin>(already_read: Bytes, rest: R) -> impl AsyncRead + Unpin {
    AsyncReadExt::chain(std::io::Cursor::new(already_read), SmallReads::new(rest))
}

/// Returns once the runtime has closed its connection (or it failed), keeping what it sends
/// meanwhile, up to a head's worth: beyond that it waits without reading.
async fn until_closed(read: &mut OwnedReadHalf, unread: &mut BytesMut) {
    while unread.len() < fast_path::MAX_HEAD_BYTES {
        if !read_more(read, unread, FIRST_READ_BYTES).await {
            return;
        }
    }
    std::future::pending().await
}

/// Reads what the runtime sent next onto `unread`, with room for at least `room` more bytes;
/// `false` once the connection is closed or failed.
async fn read_more(read: &mut OwnedReadHalf, unread: &mut BytesMut, room: usize) -> bool {
    unread.reserve(room);
    matches!(read.read_buf(unread).await, Ok(1..))
}

/// Why a runtime's answer was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NoInvocation,
    UnknownRequestId,
    AlreadyAnswered,
}

impl Refusal {
    fn response(self) -> Response<Bytes> {
        match self {
            Refusal::UnknownRequestId => error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "Invalid request ID",
            ),
            Refusal::NoInvocation => invalid_state("no invocation is in progress"),
            Refusal::AlreadyAnswered => invalid_state("the invocation was already answered"),
        }
    }
}

/// Why a buffered response is not answered `202`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotAccepted {
    Truncated,
    /// Settled as too large: the invoker answers for it.
    TooLarge,
    Refused(Refusal),
}

impl NotAccepted {
    fn response(self) -> Response<Bytes> {
        match self {
            NotAccepted::Truncated => error(
                StatusCode::BAD_REQUEST,
                "TruncatedHTTPRequest",
                "HTTP request detected as truncated",
            ),
            NotAccepted::TooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({MAX_RESULT_BYTES} bytes)."),
            ),
            NotAccepted::Refused(refusal) => refusal.response(),
        }
    }
}

/// Hands each chunk of a streamed response on, until it ends, fails, passes the size limit,
/// or nobody reads it any more (the client went away).
async fn forward_stream(mut body: Incoming, mut sender: ChunkSender) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = sender.closed() => return,
        };
        let frame = match frame {
            None => return,
            Some(Err(_)) => return sender.fail(StreamError::Broken).await,
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(chunk) => {
                if !sender.send(chunk).await {
                    return;
                }
            }
            Err(frame) => {
                if let Some(failure) = frame.into_trailers().ok().and_then(|t| trailer_error(&t)) {
                    return sender.fail(failure).await;
                }
            }
        }
    }
}

/// The error a runtime reports in a stream's trailers: its type, and its JSON body in base64.
fn trailer_error(trailers: &http::HeaderMap) -> Option<StreamError> {
    let error_type = trailers
        .get(ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)?;
    let body = trailers
        .get(ERROR_BODY)
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
        })
        .unwrap_or_default();
    let (error_type, message) = describe_error(Some(error_type), &body);
    Some(StreamError::Function {
        error_type,
        message,
    })
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_limited(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_RESULT_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

fn error_type_header(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get(ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The error's type and message, from its JSON body, else the header, else `Runtime.Unknown`.
fn describe_error(header_type: Option<String>, body: &[u8]) -> (String, String) {
    let fallback = header_type.as_deref().unwrap_or("Runtime.Unknown");
    ErrorObject::parse(body).describe(fallback, body)
}

fn shutting_down() -> Response<Bytes> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Runtime.Shutdown",
        "the execution environment is shutting down",
    )
}

fn accepted() -> Response<Bytes> {
    json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

fn invalid_state(message: &str) -> Response<Bytes> {
    error(StatusCode::FORBIDDEN, "InvalidStateTransition", message)
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({"errorMessage": message, "errorType": error_type});
    json_response(status, body.to_string())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn answers_are_accepted_once_and_only_for_the_current_invocation() {
        let api = RuntimeApi::new("arn".into(), Arc::new(watch::channel(None).0));
        let outcome = || Outcome::Response(Bytes::from_static(b"{}"));
        assert_eq!(api.settle("a", outcome()), Err(Refusal::NoInvocation));

        let (reply, mut answered) = oneshot::channel();
        *api.current.lock().unwrap() = Some(Current {
            request_id: "a".into(),
            deadline: Instant::now(),
            reply: Some(reply),
        });
        assert_eq!(api.settle("b", outcome()), Err(Refusal::UnknownRequestId));
        assert_eq!(api.settle("a", outcome()), Ok(()));
        assert!(matches!(answered.try_recv(), Ok(Outcome::Response(body)) if body == "{}"));
        assert_eq!(api.settle("a", outcome()), Err(Refusal::AlreadyAnswered));

        let statuses: Vec<u16> = [Refusal::UnknownRequestId, Refusal::AlreadyAnswered]
            .map(|r| r.response().status().as_u16())
            .into();
        assert_eq!(statuses, [400, 403]);
    }

    #[tokio::test]
    async fn extensions_register_and_wait_for_the_environment_to_end() {
        let death = Arc::new(watch::channel(None).0);
        let arn = "arn:aws:lambda:eu-central-1:000000000000:function:hello";
        let api = Arc::new(RuntimeApi::new(arn.into(), death.clone()));
        let registered = api.extension(&Method::POST, "/register").await;
        assert_eq!(registered.status(), 200);
        assert!(
            registered
                .headers()
                .contains_key("lambda-extension-identifier")
        );
        let body = registered.into_body();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["functionName"], "hello");

        let waiting = tokio::spawn({
            let api = api.clone();
            async move { api.extension(&Method::GET, "/event/next").await }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "no events until the environment ends"
        );
        death.send_replace(Some(Death::Exited("gone".into())));
        assert_eq!(waiting.await.unwrap().status(), 500);
        assert_eq!(api.extension(&Method::GET, "/other").await.status(), 404);
    }

    /// A runtime's side of a Runtime API connection, spoken by hand.
    struct Runtime(tokio::net::TcpStream);

    impl Runtime {
        async fn connect(address: std::net::SocketAddr) -> Self {
            Runtime(tokio::net::TcpStream::connect(address).await.unwrap())
        }

        async fn send(&mut self, request: &str) {
            self.0.write_all(request.as_bytes()).await.unwrap();
        }

        /// `POST /2018-06-01/runtime/invocation/{route}` with `body`.
        async fn post(&mut self, route: &str, body: &str) {
            let length = body.len();
            self.send(&format!(
                "POST /2018-06-01/runtime/invocation/{route} HTTP/1.1\r\n\
                 content-length: {length}\r\n\r\n{body}"
            ))
            .await;
        }

        /// Asks for `/next` and hands it invocation `request_id`: the answer's head and event,
        /// and where the invocation's outcome arrives.
        async fn take(
            &mut self,
            api: &RuntimeApi,
            request_id: &str,
        ) -> (String, Vec<u8>, oneshot::Receiver<Outcome>) {
            self.send(NEXT).await;
            let (invocation, outcome) = invocation(request_id);
            assert!(api.invoke(invocation).is_ok());
            let (head, event) = self.response().await;
            (head, event, outcome)
        }

        /// The next response's head and body (framed by `content-length`).
        async fn response(&mut self) -> (String, Vec<u8>) {
            let mut received = Vec::new();
            loop {
                if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8(received[..end].to_vec()).unwrap();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if received.len() >= end + 4 + length {
                        return (head, received[end + 4..end + 4 + length].to_vec());
                    }
                }
                let mut chunk = [0u8; 4096];
                let read = self.0.read(&mut chunk).await.unwrap();
                assert!(read > 0, "the connection closed mid-response");
                received.extend_from_slice(&chunk[..read]);
            }
        }
    }

    fn invocation(request_id: &str) -> (Invocation, oneshot::Receiver<Outcome>) {
        let (reply, outcome) = oneshot::channel();
        let invocation = Invocation {
            request_id: request_id.into(),
            event: Bytes::from_static(br#"{"rawPath":"/hello"}"#),
            deadline_epoch_ms: 1_700_000_000_000,
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            trace_id: "Root=1-5759e988-bd862e3fe1be46a994272793".into(),
            reply,
        };
        (invocation, outcome)
    }

    async fn serving() -> (Arc<RuntimeApi>, std::net::SocketAddr) {
        let arn = "arn:aws:lambda:us-east-1:000000000000:function:hello";
        let api = Arc::new(RuntimeApi::new(
            arn.into(),
            Arc::new(watch::channel(None).0),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(api.clone().serve(listener));
        (api, address)
    }

    const NEXT: &str = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n";

    #[tokio::test]
    async fn invocations_go_by_the_fast_path_and_the_rest_to_hyper_on_the_same_connection() {
        let (api, address) = serving().await;
        let mut runtime = Runtime::connect(address).await;

        let (head, event, first_outcome) = runtime.take(&api, "first").await;
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             lambda-runtime-aws-request-id: first\r\nlambda-runtime-deadline-ms: 1700000000000\r\n\
             lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:hello\r\n\
             lambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793\r\ncontent-length: 20"
        );
        assert_eq!(event, br#"{"rawPath":"/hello"}"#);

        let result = r#"{"statusCode":200}"#;
        runtime.post("first/response", result).await;
        let (head, body) = runtime.response().await;
        assert_eq!(head.as_bytes(), &fast_path::ACCEPTED[..head.len()]);
        assert_eq!(body, br#"{"status":"OK"}"#);
        assert!(matches!(first_outcome.await, Ok(Outcome::Response(body)) if body == result));

        // An error report is hyper's, and so is the rest of the connection.
        let (head, _, second_outcome) = runtime.take(&api, "second").await;
        assert!(
            head.contains("lambda-runtime-aws-request-id: second"),
            "{head}"
        );
        let error = r#"{"errorMessage":"boom","errorType":"ValueError"}"#;
        runtime.post("second/error", error).await;
        let (head, _) = runtime.response().await;
        assert!(head.starts_with("HTTP/1.1 202 Accepted\r\n"), "{head}");
        assert!(head.contains("date: "), "hyper answered: {head}");
        assert!(matches!(
            second_outcome.await,
            Ok(Outcome::Error { error_type, message }) if error_type == "ValueError" && message == "boom"
        ));
        let (head, _, _) = runtime.take(&api, "third").await;
        assert!(
            head.contains("lambda-runtime-aws-request-id: third"),
            "{head}"
        );
        assert!(head.contains("date: "), "hyper answered: {head}");
    }

    #[tokio::test]
    async fn a_result_near_the_limit_is_read_whole_across_many_reads() {
        let (api, address) = serving().await;
        let mut runtime = Runtime::connect(address).await;
        let (_, _, outcome) = runtime.take(&api, "large").await;

        let body = format!(r#"{{"body":"{}"}}"#, "x".repeat(MAX_RESULT_BYTES - 11));
        assert_eq!(body.len(), MAX_RESULT_BYTES);
        let (sent, answered) = tokio::join!(runtime.post("large/response", &body), async {
            match outcome.await {
                Ok(Outcome::Response(result)) => result,
                other => panic!("{other:?}"),
            }
        });
        let () = sent;
        assert!(answered == body.as_bytes(), "the result arrived changed");
        let (head, _) = runtime.response().await;
        assert!(head.starts_with("HTTP/1.1 202 Accepted\r\n"), "{head}");
        assert!(!head.contains("date: "), "the fast path answered: {head}");
    }

    #[tokio::test]
    async fn a_runtime_that_goes_away_while_it_waits_takes_no_invocation() {
        let (api, address) = serving().await;
        let serving_only = Arc::strong_count(&api);
        let mut gone = Runtime::connect(address).await;
        gone.send(NEXT).await;
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&api) == serving_only {
            assert!(Instant::now() < deadline, "the connection was never served");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop(gone);
        while Arc::strong_count(&api) > serving_only {
            assert!(
                Instant::now() < deadline,
                "the closed connection still waits for an invocation"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }

        let mut runtime = Runtime::connect(address).await;
        let (head, _, _) = runtime.take(&api, "only").await;
        assert!(
            head.contains("lambda-runtime-aws-request-id: only"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn a_connection_quiet_after_a_response_still_hears_its_runtime() {
        let (api, address) = serving().await;
        let serving_only = Arc::strong_count(&api);
        let mut runtime = Runtime::connect(address).await;
        let (_, _, _) = runtime.take(&api, "first").await;
        runtime.post("first/response", "{}").await;
        let (head, _) = runtime.response().await;
        assert!(!head.contains("date: "), "the fast path answered: {head}");

        // The invocation arrives before the runtime asks for it.
        let (invocation, outcome) = invocation("second");
        assert!(api.invoke(invocation).is_ok());
        runtime.send(NEXT).await;
        let (head, _) = runtime.response().await;
        assert!(
            head.contains("lambda-runtime-aws-request-id: second"),
            "{head}"
        );
        runtime.post("second/response", "{}").await;
        runtime.response().await;
        assert!(matches!(outcome.await, Ok(Outcome::Response(_))));

        // Quiet again, and closed.
        drop(runtime);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&api) > serving_only {
            assert!(
                Instant::now() < deadline,
                "the closed connection is still served"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_runtime_that_asks_next_before_its_answer_is_not_kept_quiet() {
        let (api, address) = serving().await;
        let mut runtime = Runtime::connect(address).await;
        let (_, _, _) = runtime.take(&api, "first").await;
        // Its response and its next `/next` in one write, before the `202`.
        runtime
            .send(&format!(
                "POST /2018-06-01/runtime/invocation/first/response HTTP/1.1\r\n\
                 content-length: 2\r\n\r\n{{}}{NEXT}"
            ))
            .await;
        runtime.response().await;
        let (invocation, outcome) = invocation("second");
        assert!(api.invoke(invocation).is_ok());
        let (head, _) = runtime.response().await;
        assert!(
            head.contains("lambda-runtime-aws-request-id: second"),
            "{head}"
        );
        // Its answer is heard: the connection did not stay quiet.
        runtime.post("second/response", "{}").await;
        let answered = tokio::time::timeout(std::time::Duration::from_secs(10), outcome).await;
        assert!(matches!(answered, Ok(Ok(Outcome::Response(_)))));
    }

    #[tokio::test]
    async fn hyper_reads_the_bytes_already_read_first() {
        let (mut writer, reader) = tokio::io::duplex(64);
        writer.write_all(b" world").await.unwrap();
        drop(writer);
        let mut replayed = replayed(Bytes::from_static(b"hello"), reader);
        let mut small = [0u8; 3];
        replayed.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        replayed.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
    }

    #[test]
    fn a_header_value_a_field_cannot_carry_is_left_out() {
        let handed = Handed {
            request_id: "a".into(),
            deadline_epoch_ms: 1,
            trace_id: "Root=1\r\nx-injected: 1".into(),
            event: Bytes::new(),
        };
        let mut names = Vec::new();
        handed.for_each_header(None, |name, _| names.push(name));
        assert_eq!(names, [header::CONTENT_TYPE, REQUEST_ID, DEADLINE_MS]);
    }

    #[tokio::test]
    async fn the_fast_path_answers_as_hyper_would() {
        let mut written = Vec::new();
        fast_path::write_response(&mut written, accepted())
            .await
            .unwrap();
        assert_eq!(written, fast_path::ACCEPTED);
    }

    #[test]
    fn errors_are_described_from_body_then_header() {
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":[]}"#;
        assert_eq!(
            describe_error(Some("Runtime.Unknown".into()), body),
            ("ValueError".into(), "boom".into())
        );
        assert_eq!(
            describe_error(Some("BashError".into()), b"plain text"),
            ("BashError".into(), "plain text".into())
        );
        assert_eq!(
            describe_error(None, b""),
            ("Runtime.Unknown".into(), String::new())
        );
    }
}
