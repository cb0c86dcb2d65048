//! Every failure lrp answers itself, and the one place that turns it into an HTTP response.
//!
//! Statuses and bodies are HTTP API's own (spec §4.4), so a client cannot tell lrp from the
//! gateway it stands in for; the `x-lrp-error` header tells an operator which failure it was.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::event::EventError;
use crate::router::Host;
use crate::target::TargetError;

/// Names the failure on every response lrp makes itself.
pub const ERROR_HEADER: &str = "x-lrp-error";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("the request names no host")]
    MissingHost,
    #[error("the request has {0}")]
    InvalidHost(&'static str),
    #[error("lrp is not a tunnel: {0} is not served")]
    MethodNotAllowed(http::Method),
    #[error("no rule for host {0}")]
    NoRule(Host),
    #[error("the request is larger than Lambda's 6 MB invocation limit")]
    RequestTooLarge,
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    #[error("the client did not send its body in time")]
    BodyTimeout,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Result(#[from] EventError),
}

impl ProxyError {
    /// The short name sent in `x-lrp-error` and logged.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::MissingHost => "missing-host",
            ProxyError::InvalidHost(_) => "invalid-host",
            ProxyError::MethodNotAllowed(_) => "method-not-allowed",
            ProxyError::NoRule(_) => "no-rule",
            ProxyError::RequestTooLarge => "request-too-large",
            ProxyError::BodyRead(_) => "bad-request-body",
            ProxyError::BodyTimeout => "body-timeout",
            ProxyError::Target(error) => error.kind(),
            ProxyError::Result(EventError::Malformed(_)) => "malformed-result",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingHost | ProxyError::InvalidHost(_) | ProxyError::BodyRead(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoRule(_) => StatusCode::NOT_FOUND,
            ProxyError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Result(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Target(error) => match error {
                TargetError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
                TargetError::QueueFull => StatusCode::TOO_MANY_REQUESTS,
                TargetError::Unreachable(_) | TargetError::Transport(_) => StatusCode::BAD_GATEWAY,
                TargetError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                TargetError::Function { .. }
                | TargetError::FunctionTimeout(_)
                | TargetError::Rejected { .. }
                | TargetError::ResultTooLarge
                | TargetError::InvokeRefused { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    pub fn to_response(&self) -> Response<Bytes> {
        let status = self.status();
        let body = match self {
            ProxyError::NoRule(host) => {
                let host = serde_json::to_string(host.as_str()).unwrap_or_default();
                format!(r#"{{"message":"Not Found","host":{host}}}"#)
            }
            _ => format!(r#"{{"message":"{}"}}"#, message(status)),
        };
        let mut response = json_response(status, body);
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(self.kind()));
        response
    }
}

/// A JSON response: every error body lrp writes, to clients and to runtimes, goes through here.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// HTTP API's messages, with its capitalisation.
fn message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "Bad Request",
        StatusCode::NOT_FOUND => "Not Found",
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed",
        StatusCode::REQUEST_TIMEOUT => "Request Timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "Request Too Long",
        StatusCode::TOO_MANY_REQUESTS => "Too Many Requests",
        StatusCode::BAD_GATEWAY => "Bad Gateway",
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: ProxyError) -> (u16, String, String) {
        let response = error.to_response();
        assert_eq!(response.headers()["content-type"], "application/json");
        (
            response.status().as_u16(),
            response.headers()[ERROR_HEADER]
                .to_str()
                .unwrap()
                .to_owned(),
            String::from_utf8(response.body().to_vec()).unwrap(),
        )
    }

    #[test]
    fn each_failure_gets_http_apis_status_and_body() {
        let function_error = TargetError::Function {
            error_type: "ValueError".into(),
            message: "boom".into(),
        };
        let cases = [
            (
                ProxyError::Target(function_error),
                500,
                "function-error",
                "Internal Server Error",
            ),
            (
                ProxyError::Result(EventError::Malformed("x".into())),
                500,
                "malformed-result",
                "Internal Server Error",
            ),
            (
                ProxyError::Target(TargetError::Timeout),
                503,
                "timeout",
                "Service Unavailable",
            ),
            (
                ProxyError::Target(TargetError::FunctionTimeout("Task timed out".into())),
                500,
                "function-timeout",
                "Internal Server Error",
            ),
            (
                ProxyError::Target(TargetError::ResultTooLarge),
                500,
                "result-too-large",
                "Internal Server Error",
            ),
            (
                ProxyError::RequestTooLarge,
                413,
                "request-too-large",
                "Request Too Long",
            ),
            (
                ProxyError::Target(TargetError::Unreachable("refused".into())),
                502,
                "unreachable",
                "Bad Gateway",
            ),
            (ProxyError::MissingHost, 400, "missing-host", "Bad Request"),
            (
                ProxyError::InvalidHost("two Host headers"),
                400,
                "invalid-host",
                "Bad Request",
            ),
            (
                ProxyError::MethodNotAllowed(http::Method::CONNECT),
                405,
                "method-not-allowed",
                "Method Not Allowed",
            ),
            (
                ProxyError::Target(TargetError::QueueFull),
                429,
                "queue-full",
                "Too Many Requests",
            ),
        ];
        for (error, status, kind, message) in cases {
            let expected_body = format!(r#"{{"message":"{message}"}}"#);
            assert_eq!(answer(error), (status, kind.to_owned(), expected_body));
        }
    }

    #[test]
    fn no_rule_names_the_host_escaped() {
        let host = Host::parse("we\"ird").unwrap();
        let (status, kind, body) = answer(ProxyError::NoRule(host));
        assert_eq!((status, kind.as_str()), (404, "no-rule"));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["message"], "Not Found");
        assert_eq!(body["host"], "we\"ird");
    }
}
