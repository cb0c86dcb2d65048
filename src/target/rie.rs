//! Local functions behind an RIE-compatible endpoint: the Runtime Interface Emulator in a Lambda
//! container image, the cargo-lambda emulator, or anything serving the Invoke path over HTTP.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::admission::{Limiter, Ticket};
use super::{ErrorObject, TargetError, excerpt};
use crate::event::MAX_RESULT_BYTES;

/// A pooled keep-alive client for every local endpoint.
type RieClient = Client<HttpConnector, Full<Bytes>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

thread_local! {
    /// One client per worker thread: its connections are driven by the worker's own runtime,
    /// so a request never waits on another thread to move its bytes, and the pool is never
    /// contended.
    static CLIENT: RieClient = client();
}

fn client() -> RieClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

pub struct RieTarget {
    invoke_uri: Uri,
    /// In-flight invocations allowed at the endpoint (RIE itself serves one at a time),
    /// shared by every rule that names it.
    limiter: Arc<Limiter>,
}

impl RieTarget {
    pub fn new(invoke_uri: Uri, limiter: Arc<Limiter>) -> Self {
        RieTarget {
            invoke_uri,
            limiter,
        }
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    pub async fn invoke(
        &self,
        ticket: Ticket,
        event: Bytes,
        deadline: Instant,
    ) -> Result<Bytes, TargetError> {
        let request = Request::post(self.invoke_uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(event))
            .map_err(|e| TargetError::Transport(e.to_string()))?;
        let client = CLIENT.with(RieClient::clone);
        ticket
            .run(deadline, |slot| async move {
                let _slot = slot;
                let response = client.request(request).await.map_err(|e| {
                    if e.is_connect() {
                        TargetError::Unreachable(error_chain(&e))
                    } else {
                        TargetError::Transport(error_chain(&e))
                    }
                })?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_RESULT_BYTES)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.downcast_ref::<LengthLimitError>().is_some() {
                            TargetError::ResultTooLarge
                        } else {
                            TargetError::Transport(e.to_string())
                        }
                    })?
                    .to_bytes();
                classify(status, body)
            })
            .await
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// RIE and its look-alikes report failures in several ways (spec §5.2, peers.md §3 and §6);
/// this recognises each of them.
pub fn classify(status: StatusCode, body: Bytes) -> Result<Bytes, TargetError> {
    match status {
        StatusCode::OK => {
            if body.is_empty() {
                // The official RIE answers an empty 200 when the runtime process exits.
                return Err(TargetError::Function {
                    error_type: "Runtime.ExitError".into(),
                    message: "the endpoint returned an empty result".into(),
                });
            }
            if body.starts_with(b"Task timed out") {
                return Err(TargetError::FunctionTimeout(excerpt(&body)));
            }
            match function_error(&body) {
                Some(error) => Err(error),
                None => Ok(body),
            }
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => Err(TargetError::Timeout),
        status if status.is_server_error() => {
            Err(
                function_error(&body).unwrap_or_else(|| TargetError::Rejected {
                    status: status.as_u16(),
                    body: excerpt(&body),
                }),
            )
        }
        status => Err(TargetError::Rejected {
            status: status.as_u16(),
            body: excerpt(&body),
        }),
    }
}

/// A JSON object with `errorType` and `errorMessage` and no `statusCode`. A function may
/// return such fields as data, but only in a result that also has `statusCode`.
fn function_error(body: &[u8]) -> Option<TargetError> {
    let looks_like_error = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && memchr::memmem::find(body, b"\"errorMessage\"").is_some();
    if !looks_like_error {
        return None;
    }
    let object = ErrorObject::parse(body);
    let is_error = object.error_type.is_some()
        && object.error_message.is_some()
        && object.status_code.is_none();
    is_error.then(|| object.into_error("", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_str(status: u16, body: &str) -> Result<Bytes, TargetError> {
        classify(
            StatusCode::from_u16(status).unwrap(),
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    #[test]
    fn a_normal_result_passes_through() {
        let result = r#"{"statusCode":200,"body":"ok"}"#;
        assert_eq!(classify_str(200, result).unwrap(), result.as_bytes());
        let data = r#"{"statusCode":200,"errorType":"x","errorMessage":"data, not an error"}"#;
        assert_eq!(classify_str(200, data).unwrap(), data.as_bytes());
        assert_eq!(
            classify_str(200, "\"errorMessage\"").unwrap(),
            "\"errorMessage\"".as_bytes()
        );
    }

    #[test]
    fn rie_error_shapes_are_function_errors() {
        let awslambdaric = r#"{"errorMessage": "boom: x", "errorType": "ValueError", "requestId": "e8", "stackTrace": []}"#;
        let expected = TargetError::Function {
            error_type: "ValueError".into(),
            message: "boom: x".into(),
        };
        assert_eq!(
            classify_str(200, awslambdaric),
            Err(expected.clone()),
            "RIE: 200"
        );
        assert_eq!(
            classify_str(500, awslambdaric),
            Err(expected.clone()),
            "cargo-lambda: 500"
        );
        assert_eq!(
            classify_str(502, awslambdaric),
            Err(expected),
            "RIE runtime exit: 502"
        );
    }

    #[test]
    fn an_empty_result_is_a_runtime_exit() {
        assert!(matches!(
            classify_str(200, ""),
            Err(TargetError::Function { error_type, .. }) if error_type == "Runtime.ExitError"
        ));
    }

    #[test]
    fn timeouts_are_recognised() {
        assert_eq!(
            classify_str(200, "Task timed out after 3.00 seconds"),
            Err(TargetError::FunctionTimeout(
                "Task timed out after 3.00 seconds".into()
            ))
        );
        assert_eq!(classify_str(408, ""), Err(TargetError::Timeout));
        assert_eq!(classify_str(504, ""), Err(TargetError::Timeout));
    }

    #[test]
    fn refusals_keep_their_status() {
        assert_eq!(
            classify_str(400, ""),
            Err(TargetError::Rejected {
                status: 400,
                body: String::new()
            })
        );
        assert!(matches!(
            classify_str(404, r#"{"title":"Missing function"}"#),
            Err(TargetError::Rejected { status: 404, .. })
        ));
        assert!(matches!(
            classify_str(500, "internal"),
            Err(TargetError::Rejected { status: 500, .. })
        ));
    }
}
