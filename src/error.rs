//! Every failure lrp answers itself, and the one place that turns it into an HTTP response.
//!
//! Statuses and bodies are those of the front door the rule stands in for, so a client cannot
//! tell lrp from the gateway: HTTP API's ("Troubleshooting issues with HTTP API Lambda
//! integrations"), REST's (API Gateway's default gateway responses), a function URL's, and an
//! ALB's error pages. The `x-lrp-error` header tells an operator which failure it was; its
//! kinds are the same for every front door.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::event::{EventError, FrontDoor};
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
    #[error("the request is larger than the front door passes to Lambda")]
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

/// What went wrong, as far as the client's answer is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The function failed, timed out on its own, or returned what the front door refuses.
    Function,
    /// No result within the rule's timeout.
    Timeout,
    /// The function's endpoint could not be reached, or broke mid-invoke.
    Unreachable,
    /// Lambda's API refused the invoke: throttled.
    Throttled,
    /// Lambda's API refused the invoke otherwise (permission, no such function, credentials).
    Refused,
    /// lrp's own queue for the function is full.
    QueueFull,
    RequestTooLarge,
    BadRequest,
    BodyTimeout,
    NoRule,
    MethodNotAllowed,
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
            ProxyError::Result(EventError::TooLarge(_)) => "result-too-large",
        }
    }

    fn failure(&self) -> Failure {
        match self {
            ProxyError::MissingHost | ProxyError::InvalidHost(_) | ProxyError::BodyRead(_) => {
                Failure::BadRequest
            }
            ProxyError::MethodNotAllowed(_) => Failure::MethodNotAllowed,
            ProxyError::NoRule(_) => Failure::NoRule,
            ProxyError::RequestTooLarge => Failure::RequestTooLarge,
            ProxyError::BodyTimeout => Failure::BodyTimeout,
            ProxyError::Result(_) => Failure::Function,
            ProxyError::Target(error) => match error {
                TargetError::Timeout => Failure::Timeout,
                TargetError::QueueFull => Failure::QueueFull,
                TargetError::Unreachable(_) | TargetError::Transport(_) => Failure::Unreachable,
                TargetError::RequestTooLarge => Failure::RequestTooLarge,
                TargetError::InvokeRefused { kind, .. } if *kind == "throttled" => {
                    Failure::Throttled
                }
                TargetError::InvokeRefused { .. } => Failure::Refused,
                TargetError::Function { .. }
                | TargetError::FunctionTimeout(_)
                | TargetError::Rejected { .. }
                | TargetError::ResultTooLarge => Failure::Function,
            },
        }
    }

    /// The status `door` answers this failure with.
    pub fn status(&self, door: FrontDoor) -> StatusCode {
        answer(self.failure(), door).0
    }

    /// The whole answer `door` gives, marked with `x-lrp-error`.
    pub fn to_response(&self, door: FrontDoor) -> Response<Bytes> {
        let (status, body) = answer(self.failure(), door);
        let mut response = match body {
            Body::NoRule => {
                let host = match self {
                    ProxyError::NoRule(host) => host.as_str(),
                    _ => "",
                };
                let host = serde_json::to_string(host).unwrap_or_default();
                json_response(
                    status,
                    format!(r#"{{"message":"Not Found","host":{host}}}"#),
                )
            }
            Body::Json(message) => json_response(status, format!(r#"{{"message":"{message}"}}"#)),
            // REST's default gateway responses put a space after the colon.
            Body::RestJson(message) => {
                json_response(status, format!(r#"{{"message": "{message}"}}"#))
            }
            Body::Text(text) => {
                let mut response = Response::new(Bytes::from_static(text.as_bytes()));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
            Body::AlbPage => alb_page(status),
        };
        let headers = response.headers_mut();
        if door == FrontDoor::Rest && status == StatusCode::PAYLOAD_TOO_LARGE {
            headers.insert(
                "x-amzn-errortype",
                HeaderValue::from_static("BadRequestException"),
            );
        }
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.kind()));
        response
    }
}

/// An answer's body.
enum Body {
    Json(&'static str),
    RestJson(&'static str),
    Text(&'static str),
    AlbPage,
    NoRule,
}

/// Each front door's status and body for each failure. Failures found before a rule is known
/// (no host, no rule, CONNECT) are answered as HTTP API answers them, whatever the rules say.
fn answer(failure: Failure, door: FrontDoor) -> (StatusCode, Body) {
    use Failure as F;
    use StatusCode as S;
    let http_api = |status: S| (status, Body::Json(http_api_message(status)));
    match (door, failure) {
        (_, F::NoRule) => (S::NOT_FOUND, Body::NoRule),
        (_, F::MethodNotAllowed) => http_api(S::METHOD_NOT_ALLOWED),
        (FrontDoor::HttpApi, failure) => http_api(match failure {
            F::Function | F::Throttled | F::Refused => S::INTERNAL_SERVER_ERROR,
            F::Timeout => S::SERVICE_UNAVAILABLE,
            F::Unreachable => S::BAD_GATEWAY,
            F::QueueFull => S::TOO_MANY_REQUESTS,
            F::RequestTooLarge => S::PAYLOAD_TOO_LARGE,
            F::BodyTimeout => S::REQUEST_TIMEOUT,
            F::BadRequest | F::NoRule | F::MethodNotAllowed => S::BAD_REQUEST,
        }),
        (FrontDoor::Rest, failure) => match failure {
            // A function error or a malformed result is an integration failure: 502.
            F::Function | F::Unreachable => {
                (S::BAD_GATEWAY, Body::RestJson("Internal server error"))
            }
            // "If the Lambda API rejects the invocation request, API Gateway returns a 500".
            F::Throttled | F::Refused => (
                S::INTERNAL_SERVER_ERROR,
                Body::RestJson("Internal server error"),
            ),
            F::Timeout => (
                S::GATEWAY_TIMEOUT,
                Body::RestJson("Endpoint request timed out"),
            ),
            F::QueueFull => (S::TOO_MANY_REQUESTS, Body::RestJson("Too Many Requests")),
            F::RequestTooLarge => (S::PAYLOAD_TOO_LARGE, Body::RestJson("Request Too Long")),
            F::BodyTimeout => (S::REQUEST_TIMEOUT, Body::RestJson("Request Timeout")),
            F::BadRequest | F::NoRule | F::MethodNotAllowed => {
                (S::BAD_REQUEST, Body::RestJson("Bad Request"))
            }
        },
        (FrontDoor::FunctionUrl, failure) => match failure {
            // A function URL answers every function failure, its timeout included, with 502.
            F::Function | F::Timeout | F::Unreachable | F::Refused => {
                (S::BAD_GATEWAY, Body::Text("Internal Server Error"))
            }
            F::Throttled | F::QueueFull => http_api(S::TOO_MANY_REQUESTS),
            F::RequestTooLarge => http_api(S::PAYLOAD_TOO_LARGE),
            F::BodyTimeout => http_api(S::REQUEST_TIMEOUT),
            F::BadRequest | F::NoRule | F::MethodNotAllowed => http_api(S::BAD_REQUEST),
        },
        (FrontDoor::Alb, failure) => (
            match failure {
                // ALB waits for the function's own timeout: its end is a function failure.
                F::Function | F::Timeout | F::Unreachable | F::Refused => S::BAD_GATEWAY,
                F::Throttled | F::QueueFull => S::SERVICE_UNAVAILABLE,
                F::RequestTooLarge => S::PAYLOAD_TOO_LARGE,
                F::BodyTimeout => S::REQUEST_TIMEOUT,
                F::BadRequest | F::NoRule | F::MethodNotAllowed => S::BAD_REQUEST,
            },
            Body::AlbPage,
        ),
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
fn http_api_message(status: StatusCode) -> &'static str {
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

/// An ALB error page: the load balancer's own HTML, with its `server` header.
fn alb_page(status: StatusCode) -> Response<Bytes> {
    let title = match status {
        StatusCode::BAD_REQUEST => "400 Bad Request",
        StatusCode::REQUEST_TIMEOUT => "408 Request Time-out",
        StatusCode::PAYLOAD_TOO_LARGE => "413 Request Entity Too Large",
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Temporarily Unavailable",
        _ => "502 Bad Gateway",
    };
    let page = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    let mut response = Response::new(Bytes::from(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FrontDoor;

    fn answer(error: ProxyError) -> (u16, String, String) {
        let response = error.to_response(FrontDoor::HttpApi);
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

    /// `(status, content type, body)` of `error` at `door`.
    fn at(door: FrontDoor, error: ProxyError) -> (u16, String, String) {
        let response = error.to_response(door);
        assert_eq!(
            response.headers()[ERROR_HEADER],
            error.kind(),
            "same kinds everywhere"
        );
        (
            response.status().as_u16(),
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned(),
            String::from_utf8(response.body().to_vec()).unwrap(),
        )
    }

    #[test]
    fn each_front_door_answers_with_its_own_status_and_body() {
        let function_error = || {
            ProxyError::Target(TargetError::Function {
                error_type: "E".into(),
                message: "m".into(),
            })
        };
        let json = "application/json".to_owned();
        let rest_error = (
            502,
            json.clone(),
            r#"{"message": "Internal server error"}"#.to_owned(),
        );
        assert_eq!(at(FrontDoor::Rest, function_error()), rest_error);
        assert_eq!(
            at(
                FrontDoor::Rest,
                ProxyError::Result(EventError::Malformed("x".into()))
            ),
            rest_error
        );
        assert_eq!(
            at(FrontDoor::Rest, ProxyError::Target(TargetError::Timeout)),
            (
                504,
                json.clone(),
                r#"{"message": "Endpoint request timed out"}"#.to_owned()
            )
        );
        let throttled = || {
            ProxyError::Target(TargetError::InvokeRefused {
                kind: "throttled",
                message: "Rate exceeded".into(),
            })
        };
        assert_eq!(at(FrontDoor::Rest, throttled()).0, 500);
        let too_large = ProxyError::RequestTooLarge.to_response(FrontDoor::Rest);
        assert_eq!(too_large.status(), 413);
        assert_eq!(
            too_large.headers()["x-amzn-errortype"],
            "BadRequestException"
        );

        let url_error = (
            502,
            "text/plain; charset=utf-8".to_owned(),
            "Internal Server Error".to_owned(),
        );
        assert_eq!(at(FrontDoor::FunctionUrl, function_error()), url_error);
        assert_eq!(
            at(
                FrontDoor::FunctionUrl,
                ProxyError::Target(TargetError::Timeout)
            ),
            url_error
        );
        assert_eq!(at(FrontDoor::FunctionUrl, throttled()).0, 429);

        let (status, content_type, page) = at(FrontDoor::Alb, function_error());
        assert_eq!((status, content_type.as_str()), (502, "text/html"));
        assert!(page.contains("<title>502 Bad Gateway</title>"), "{page}");
        let response = ProxyError::RequestTooLarge.to_response(FrontDoor::Alb);
        assert_eq!(response.status(), 413);
        assert_eq!(response.headers()["server"], "awselb/2.0");
        assert_eq!(
            at(FrontDoor::Alb, ProxyError::Target(TargetError::QueueFull)).0,
            503
        );

        // A host no rule serves is answered as HTTP API answers it, whatever the door.
        let no_rule = ProxyError::NoRule(Host::parse("x").unwrap());
        assert_eq!(at(FrontDoor::Alb, no_rule).0, 404);
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
