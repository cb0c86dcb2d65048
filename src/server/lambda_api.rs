//! The Lambda Invoke API, as AWS's API reference describes `Invoke`: `POST
//! /2015-03-31/functions/{FunctionName}/invocations`, answered for every rule by its function
//! name on a listener of its own, so it can never shadow a function's own paths. The payload
//! goes to the function unchanged (no HTTP translation). Requests are accepted signed or not,
//! and signatures are not checked.

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::info;

use super::body::ResponseBody;
use super::{Proxy, State};
use crate::event::{MAX_EVENT_BYTES, MAX_RESULT_BYTES};
use crate::ids;
use crate::target::{Invoked, LogTail, TargetError};

const PATH_PREFIX: &str = "/2015-03-31/functions/";
const PATH_SUFFIX: &str = "/invocations";
/// Lambda's limit for an asynchronous (`Event`) invocation's payload.
const MAX_EVENT_PAYLOAD: usize = 1024 * 1024;
/// The only version a function lrp runs has.
const LATEST: &str = "$LATEST";
// The Invoke API's headers, built at compile time rather than parsed from `&str` per use.
const ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");
const INVOCATION_TYPE: HeaderName = HeaderName::from_static("x-amz-invocation-type");
const LOG_TYPE: HeaderName = HeaderName::from_static("x-amz-log-type");
const LOG_RESULT: HeaderName = HeaderName::from_static("x-amz-log-result");
const EXECUTED_VERSION: HeaderName = HeaderName::from_static("x-amz-executed-version");
const FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-amz-function-error");

/// One Invoke API request, with its log line.
pub(super) async fn handle(state: &State, request: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let proxy = state.proxy.load_full();
    let (parts, body) = request.into_parts();
    let (function, kind, response) = match invoke(state, &proxy, started, &parts, body).await {
        Ok(answer) => answer,
        Err(error) => (String::from("-"), "-", error.response()),
    };
    info!(function = %function, invocation_type = kind, status = response.status().as_u16(),
        duration_ms = started.elapsed().as_micros() as f64 / 1000.0, "invoke");
    response
}

/// Why the Invoke API refused a request, with AWS's status and error type for it.
#[derive(Debug)]
enum ApiError {
    UnknownOperation,
    NotFound(String),
    InvalidParameter(String),
    InvalidContent,
    TooLarge(usize),
    RequestTimeout,
    Throttled,
    AccessDenied(String),
    Service(String),
}

impl ApiError {
    fn response(&self) -> Response<ResponseBody> {
        let (status, error_type, fault, message) = match self {
            ApiError::UnknownOperation => (
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "User",
                "only POST /2015-03-31/functions/{FunctionName}/invocations is served".to_owned(),
            ),
            ApiError::NotFound(function) => (
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "User",
                format!("Function not found: {function}"),
            ),
            ApiError::InvalidParameter(why) => (
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "User",
                why.clone(),
            ),
            ApiError::InvalidContent => (
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                "User",
                "Could not parse request body into json".to_owned(),
            ),
            ApiError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                "User",
                format!(
                    "Request must be smaller than {limit} bytes for the InvokeFunction operation"
                ),
            ),
            ApiError::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                "User",
                "Reading the request timed out".to_owned(),
            ),
            ApiError::Throttled => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "User",
                "Rate Exceeded.".to_owned(),
            ),
            ApiError::AccessDenied(why) => (
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "User",
                why.clone(),
            ),
            ApiError::Service(why) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "Service",
                why.clone(),
            ),
        };
        let mut body = serde_json::json!({"Type": fault, "message": message});
        if let ApiError::Throttled = self {
            body["Reason"] = "ReservedFunctionConcurrentInvocationLimitExceeded".into();
        }
        let mut response = crate::error::json_response(status, body.to_string());
        response
            .headers_mut()
            .insert(ERROR_TYPE, HeaderValue::from_static(error_type));
        response.map(ResponseBody::whole)
    }
}

type Answer = (String, &'static str, Response<ResponseBody>);

/// `X-Amz-Invocation-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

impl InvocationType {
    fn of(headers: &http::HeaderMap) -> Result<Self, ApiError> {
        match headers.get(INVOCATION_TYPE).map(HeaderValue::as_bytes) {
            None | Some(b"RequestResponse") => Ok(InvocationType::RequestResponse),
            Some(b"Event") => Ok(InvocationType::Event),
            Some(b"DryRun") => Ok(InvocationType::DryRun),
            Some(other) => Err(ApiError::InvalidParameter(format!(
                "1 validation error detected: Value '{}' at 'invocationType' failed to satisfy \
                 constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            InvocationType::RequestResponse => "RequestResponse",
            InvocationType::Event => "Event",
            InvocationType::DryRun => "DryRun",
        }
    }
}

/// One deadline, the rule's timeout counted from the request's arrival, bounds reading the
/// payload and a synchronous invocation together, as it does for HTTP requests.
async fn invoke(
    state: &State,
    proxy: &std::sync::Arc<Proxy>,
    started: Instant,
    parts: &http::request::Parts,
    body: Incoming,
) -> Result<Answer, ApiError> {
    if parts.method != Method::POST {
        return Err(ApiError::UnknownOperation);
    }
    let name = parts
        .uri
        .path()
        .strip_prefix(PATH_PREFIX)
        .and_then(|rest| rest.strip_suffix(PATH_SUFFIX))
        .ok_or(ApiError::UnknownOperation)?;
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let query_qualifier = parts.uri.query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "Qualifier")
            .map(|(_, value)| value.into_owned())
    });
    let (function, qualifier) = function_and_qualifier(&name, query_qualifier);
    let index = *proxy
        .functions
        .get(&function)
        .ok_or_else(|| ApiError::NotFound(function.clone()))?;
    if qualifier.as_deref().is_some_and(|q| q != LATEST) {
        return Err(ApiError::NotFound(format!(
            "{function}:{}",
            qualifier.unwrap_or_default()
        )));
    }
    let kind = InvocationType::of(&parts.headers)?;
    if kind == InvocationType::DryRun {
        let mut response = Response::new(ResponseBody::whole(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Ok((function, kind.name(), response));
    }
    let route = &proxy.table.routes()[index];
    let deadline = started + route.timeout;
    let limit = match kind {
        InvocationType::Event => MAX_EVENT_PAYLOAD,
        _ => MAX_EVENT_BYTES,
    };
    let read = Limited::new(body, limit).collect();
    let payload = match tokio::time::timeout_at(deadline, read).await {
        Err(_) => return Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(ApiError::TooLarge(limit)),
        Ok(Err(e)) => return Err(ApiError::InvalidParameter(e.to_string())),
    };
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(ApiError::InvalidContent);
    }
    let trace_id = ids::trace_id_of(&parts.headers, SystemTime::now());
    if kind == InvocationType::Event {
        let permit = state
            .async_invocations
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Throttled)?;
        let (proxy, function_name) = (proxy.clone(), function.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let route = &proxy.table.routes()[index];
            let deadline = Instant::now() + route.timeout;
            let outcome = match route.target.admit() {
                Ok(admitted) => admitted
                    .invoke(payload, deadline, &trace_id)
                    .await
                    .map(drop),
                Err(refused) => Err(refused),
            };
            if let Err(error) = outcome {
                tracing::warn!(function = %function_name, cause = %error,
                    "an asynchronous invocation failed");
            }
        });
        let mut response = Response::new(ResponseBody::whole(Bytes::new()));
        *response.status_mut() = StatusCode::ACCEPTED;
        return Ok((function, kind.name(), response));
    }
    let admitted = route.target.admit().map_err(refusal)?;
    let tail = parts
        .headers
        .get(LOG_TYPE)
        .is_some_and(|t| t.as_bytes() == b"Tail");
    let log: Option<LogTail> = tail.then(LogTail::default);
    let invoked = admitted.invoke_logged(payload, deadline, &trace_id, log.clone());
    let outcome = match invoked.await {
        Ok(Invoked::Buffered(result)) => Ok(result),
        Ok(Invoked::Streamed(stream)) => collect(stream).await,
        Err(error) => Err(error),
    };
    let mut response = match outcome {
        Ok(result) => answer(StatusCode::OK, result, None),
        Err(error) => match function_error(&error, route.timeout) {
            Some(body) => answer(StatusCode::OK, body, Some("Unhandled")),
            None => return Err(refusal(error)),
        },
    };
    // The last 4 KB of the invocation's log, for functions lrp runs itself.
    let log = log.and_then(|log| log.lock().ok().and_then(|mut log| log.take()));
    if let Some(log) = log {
        let encoded = base64::engine::general_purpose::STANDARD.encode(log);
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            response.headers_mut().insert(LOG_RESULT, value);
        }
    }
    Ok((function, kind.name(), response))
}

/// The function's name and qualifier in any form Invoke takes: `name`, `name:qualifier`, a
/// partial ARN (`123456789012:function:name`) or a full one, and `?Qualifier=`.
pub(super) fn function_and_qualifier(
    name: &str,
    query: Option<String>,
) -> (String, Option<String>) {
    let name = name
        .split_once(":function:")
        .map_or(name, |(_, function)| function);
    let (function, qualifier) = match name.split_once(':') {
        Some((function, qualifier)) => (function, Some(qualifier.to_owned())),
        None => (name, None),
    };
    (function.to_owned(), query.or(qualifier))
}

/// A streamed result, whole: Invoke returns at most Lambda's 6 MB.
async fn collect(mut stream: crate::target::stream::ResultStream) -> Result<Bytes, TargetError> {
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = stream.next_chunk().await {
        collected.extend_from_slice(&chunk?);
        if collected.len() > MAX_RESULT_BYTES {
            return Err(TargetError::ResultTooLarge);
        }
    }
    Ok(collected.freeze())
}

/// What Invoke answers with status 200 and `X-Amz-Function-Error` for a failed function.
fn function_error(error: &TargetError, timeout: Duration) -> Option<Bytes> {
    let (error_type, message) = match error {
        TargetError::Function {
            error_type,
            message,
        } => (error_type.clone(), message.clone()),
        TargetError::FunctionTimeout(message) => ("Sandbox.Timedout".to_owned(), message.clone()),
        TargetError::Timeout => (
            "Sandbox.Timedout".to_owned(),
            format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()),
        ),
        TargetError::ResultTooLarge => (
            "Function.ResponseSizeTooLarge".to_owned(),
            format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_RESULT_BYTES} bytes)."
            ),
        ),
        _ => return None,
    };
    let body = serde_json::json!({"errorMessage": message, "errorType": error_type});
    Some(Bytes::from(body.to_string()))
}

/// A failure that is not the function's: AWS's error for it.
fn refusal(error: TargetError) -> ApiError {
    match error {
        TargetError::QueueFull => ApiError::Throttled,
        TargetError::RequestTooLarge => ApiError::TooLarge(MAX_EVENT_BYTES),
        TargetError::InvokeRefused { kind, message } => match kind {
            "throttled" => ApiError::Throttled,
            "function-not-found" => ApiError::NotFound(message),
            "access-denied" | "no-credentials" => ApiError::AccessDenied(message),
            _ => ApiError::Service(message),
        },
        other => ApiError::Service(other.to_string()),
    }
}

fn answer(
    status: StatusCode,
    body: Bytes,
    function_error: Option<&'static str>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::whole(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(EXECUTED_VERSION, HeaderValue::from_static(LATEST));
    if let Some(kind) = function_error {
        headers.insert(FUNCTION_ERROR, HeaderValue::from_static(kind));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_come_in_every_form_invoke_takes() {
        let cases = [
            ("hello", None, ("hello", None)),
            ("hello:live", None, ("hello", Some("live"))),
            ("hello", Some("7"), ("hello", Some("7"))),
            ("123456789012:function:hello", None, ("hello", None)),
            (
                "arn:aws:lambda:eu-west-1:123456789012:function:hello:$LATEST",
                None,
                ("hello", Some("$LATEST")),
            ),
        ];
        for (name, query, (function, qualifier)) in cases {
            let parsed = function_and_qualifier(name, query.map(str::to_owned));
            assert_eq!(
                parsed,
                (function.to_owned(), qualifier.map(str::to_owned)),
                "{name}"
            );
        }
    }

    #[test]
    fn function_failures_are_200_with_the_error_and_the_rest_are_awss_errors() {
        let timeout = Duration::from_secs(3);
        let body = function_error(&TargetError::Timeout, timeout).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errorType"], "Sandbox.Timedout");
        assert_eq!(body["errorMessage"], "Task timed out after 3.00 seconds");
        assert!(function_error(&TargetError::QueueFull, timeout).is_none());
        let throttled = refusal(TargetError::QueueFull).response();
        assert_eq!(throttled.status(), 429);
        assert_eq!(
            throttled.headers()["x-amzn-errortype"],
            "TooManyRequestsException"
        );
        let missing = ApiError::NotFound("nope".into()).response();
        assert_eq!(missing.status(), 404);
        assert_eq!(
            missing.headers()["x-amzn-errortype"],
            "ResourceNotFoundException"
        );
    }
}
