//! Local functions behind an RIE-compatible endpoint: the Runtime Interface Emulator in a Lambda
//! container image, the cargo-lambda emulator, or anything serving the Invoke path over HTTP.

mod http1;
mod pool;

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{StatusCode, Uri};
use tokio::time::Instant;

use super::admission::{Limiter, Ticket};
use super::{ErrorObject, TargetError, excerpt};
use http1::ExchangeError;
use pool::{Endpoint, SendError};

pub struct RieTarget {
    endpoint: Arc<Endpoint>,
    /// In-flight invocations allowed at the endpoint (RIE itself serves one at a time),
    /// shared by every rule that names it.
    limiter: Arc<Limiter>,
}

impl RieTarget {
    /// `invoke_uri` is absolute: `http://host:port/2015-03-31/functions/NAME/invocations`.
    pub fn new(invoke_uri: &Uri, limiter: Arc<Limiter>) -> Self {
        let authority = invoke_uri
            .authority()
            .map_or("localhost".into(), |authority| {
                authority.as_str().to_ascii_lowercase()
            });
        let path = invoke_uri
            .path_and_query()
            .map_or("/", |path| path.as_str());
        let head_start = format!(
            "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: "
        );
        let endpoint = Endpoint {
            // An IPv6 address without its brackets, as name resolution takes it.
            host: invoke_uri
                .host()
                .map_or("localhost", |host| {
                    host.trim_start_matches('[').trim_end_matches(']')
                })
                .into(),
            port: invoke_uri.port_u16().unwrap_or(80),
            authority: authority.into(),
            head_start: head_start.into_bytes().into(),
        };
        RieTarget {
            endpoint: Arc::new(endpoint),
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
        let endpoint = self.endpoint.clone();
        ticket
            .run(deadline, |slot| async move {
                let _slot = slot;
                let response = pool::send(&endpoint, event).await.map_err(|e| match e {
                    SendError::Connect(cause) => TargetError::Unreachable(cause),
                    SendError::Exchange(ExchangeError::TooLarge) => TargetError::ResultTooLarge,
                    SendError::Exchange(e) => TargetError::Transport(e.to_string()),
                })?;
                classify(response.status, response.body)
            })
            .await
    }
}

/// RIE and its look-alikes (the Runtime Interface Emulator, cargo-lambda's emulator) report
/// failures in several ways; this recognises each of them.
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

/// Built once: `memmem::find` prepares its search anew on every call, which costs more than
/// searching a small result.
static ERROR_MESSAGE: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"errorMessage\""));

/// A JSON object with `errorType` and `errorMessage` and no `statusCode`. A function may
/// return such fields as data, but only in a result that also has `statusCode`.
fn function_error(body: &[u8]) -> Option<TargetError> {
    let looks_like_error = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && ERROR_MESSAGE.find(body).is_some();
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
    fn the_endpoint_and_request_head_come_from_the_invoke_uri() {
        let uri = Uri::from_static("http://[::1]:9001/2015-03-31/functions/F/invocations?q=1");
        let target = RieTarget::new(&uri, Limiter::new(1, 0));
        let endpoint = &target.endpoint;
        assert_eq!(
            (&*endpoint.authority, &*endpoint.host, endpoint.port),
            ("[::1]:9001", "::1", 9001)
        );
        assert_eq!(
            std::str::from_utf8(&endpoint.head_start).unwrap(),
            "POST /2015-03-31/functions/F/invocations?q=1 HTTP/1.1\r\nhost: [::1]:9001\r\n\
             content-type: application/json\r\ncontent-length: "
        );
        let named = RieTarget::new(&Uri::from_static("http://RIE.local/x"), Limiter::new(1, 0));
        let endpoint = &named.endpoint;
        assert_eq!(
            (&*endpoint.authority, &*endpoint.host, endpoint.port),
            ("rie.local", "RIE.local", 80)
        );
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
