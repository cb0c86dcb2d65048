//! The two requests a runtime makes for every invocation, served without hyper:
//! `GET /2018-06-01/runtime/invocation/next`, and `POST .../invocation/{id}/response` with a
//! `content-length` body. Anything else a runtime may send (an error, a streamed or chunked
//! response, `Expect`, the Extensions API, a head past [`MAX_HEAD_BYTES`]) goes to hyper,
//! with the bytes already read, for the rest of the connection. Parsing is httparse's (the
//! parser inside hyper); the framing follows RFC 9112 (sections 6 and 9.3).
//!
//! hyper's server spent about 25,000 of the 62,000 instructions lrp executed per invocation on
//! these two requests; served here they take about 9,000 (`bench/instructions command`).

use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes};
use http::Response;
use http::header::{self, HeaderValue};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::runtime_api::Handed;
use crate::event::MAX_RESULT_BYTES;

/// The largest head served here. A runtime's usual heads are a few hundred bytes; larger ones
/// (an error's X-Ray cause can take 1 MiB) are hyper's.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Runtime heads carry a handful of headers; more go to hyper.
const MAX_HEADERS: usize = 32;
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
const RESPONSE_MODE: &str = "lambda-runtime-function-response-mode";

#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Next,
    Response {
        request_id: String,
        body_length: usize,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A request served here, and the length of its head.
    Fast {
        request: Request,
        head_length: usize,
    },
    /// A request for hyper.
    Other,
}

/// What the start of a connection's unread bytes holds.
pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut []);
    let head_length = match head.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if head.version != Some(1) {
        return Parsed::Other;
    }
    let mut body_length = None;
    for header in head.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str()) {
            if body_length.is_some() {
                return Parsed::Other;
            }
            body_length = Some(content_length(header.value));
        } else if name.eq_ignore_ascii_case(header::TRANSFER_ENCODING.as_str())
            || name.eq_ignore_ascii_case(header::EXPECT.as_str())
            || name.eq_ignore_ascii_case(RESPONSE_MODE)
            || (name.eq_ignore_ascii_case(header::CONNECTION.as_str())
                && !header.value.eq_ignore_ascii_case(b"keep-alive"))
        {
            return Parsed::Other;
        }
    }
    let route = head.path.and_then(|path| path.strip_prefix(INVOCATION));
    let request = match (head.method, route, body_length) {
        (Some("GET"), Some("next"), None | Some(Some(0))) => Request::Next,
        (Some("POST"), Some(route), Some(Some(body_length))) => match route.split_once('/') {
            Some((request_id, "response")) if body_length <= MAX_RESULT_BYTES => {
                Request::Response {
                    request_id: request_id.to_owned(),
                    body_length,
                }
            }
            _ => return Parsed::Other,
        },
        _ => return Parsed::Other,
    };
    Parsed::Fast {
        request,
        head_length,
    }
}

/// `Content-Length = 1*DIGIT` (RFC 9110, section 8.6); `None` for anything else.
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Writes `response` with its length, in one `writev` where the socket takes it.
pub async fn write_response<W: AsyncWrite + Unpin>(
    out: &mut W,
    response: Response<Bytes>,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        append_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    finish_head(&mut head, body.len());
    out.write_all_buf(&mut Buf::chain(&head[..], body)).await
}

/// What `/response` is answered when it settles its invocation.
pub const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
    content-length: 15\r\n\r\n{\"status\":\"OK\"}";

/// `/next`'s answer: the invocation's event, and its headers, written in `head` (the
/// connection's, reused for every invocation).
pub async fn write_next<W: AsyncWrite + Unpin>(
    out: &mut W,
    head: &mut Vec<u8>,
    handed: Handed,
    function_arn: Option<&HeaderValue>,
) -> io::Result<()> {
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    handed.for_each_header(function_arn, |name, value| {
        append_header(head, name.as_str().as_bytes(), value);
    });
    finish_head(head, handed.event.len());
    out.write_all_buf(&mut Buf::chain(&head[..], handed.event))
        .await
}

fn append_header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

fn finish_head(head: &mut Vec<u8>, body_length: usize) {
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(itoa::Buffer::new().format(body_length).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn response(id: &str, length: usize) -> Parsed {
        let head = format!(
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\n\
             host: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        parse(head.as_bytes())
    }

    #[test]
    fn next_and_buffered_responses_are_served_here() {
        let next = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\
                     Connection: Keep-Alive\r\n\r\nPOST";
        assert_eq!(
            parse(next),
            Parsed::Fast {
                request: Request::Next,
                head_length: next.len() - 4
            }
        );
        let Parsed::Fast {
            request,
            head_length,
        } = response("8f1c-42", 15)
        else {
            panic!("a buffered response is served here");
        };
        assert_eq!(
            request,
            Request::Response {
                request_id: "8f1c-42".into(),
                body_length: 15
            }
        );
        assert!(head_length > 100);
        assert!(matches!(
            response("a", MAX_RESULT_BYTES),
            Parsed::Fast { .. }
        ));
    }

    #[test]
    fn a_head_is_partial_until_its_blank_line() {
        let next = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n";
        for end in 0..next.len() {
            assert_eq!(parse(&next[..end]), Parsed::Partial, "{end} bytes");
        }
    }

    #[test]
    fn everything_else_is_hyper_s() {
        let others: &[&[u8]] = &[
            // Another route, method or version, or a query.
            b"POST /2018-06-01/runtime/invocation/a/error HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"POST /2018-06-01/runtime/invocation/a/b/response HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"POST /2020-01-01/extension/register HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"PUT /2018-06-01/runtime/invocation/a/response HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"GET /2018-06-01/runtime/invocation/next?x=1 HTTP/1.1\r\n\r\n",
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.0\r\n\r\n",
            // A body framed otherwise, or none where one is needed, or one where none is.
            b"POST /2018-06-01/runtime/invocation/a/response HTTP/1.1\r\n\r\n",
            b"POST /2018-06-01/runtime/invocation/a/response HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST /2018-06-01/runtime/invocation/a/response HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
            b"POST /2018-06-01/runtime/invocation/a/response HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
            // What hyper handles: streaming, 100-continue, connection options.
            b"POST /2018-06-01/runtime/invocation/a/response HTTP/1.1\r\ncontent-length: 2\r\n\
              Lambda-Runtime-Function-Response-Mode: streaming\r\n\r\n",
            b"POST /2018-06-01/runtime/invocation/a/response HTTP/1.1\r\ncontent-length: 2\r\n\
              expect: 100-continue\r\n\r\n",
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nConnection: close\r\n\r\n",
            // Malformed.
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nbad header\r\n\r\n",
        ];
        for other in others {
            assert_eq!(
                parse(other),
                Parsed::Other,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        assert_eq!(response("a", MAX_RESULT_BYTES + 1), Parsed::Other);
        let many = format!(
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n{}\r\n",
            "x-a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(many.as_bytes()), Parsed::Other);
    }

    #[tokio::test]
    async fn a_response_is_written_with_its_length() {
        let mut response = Response::new(Bytes::from_static(b"{\"status\":\"OK\"}"));
        *response.status_mut() = StatusCode::ACCEPTED;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        let mut written = Vec::new();
        write_response(&mut written, response).await.unwrap();
        assert_eq!(
            written,
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\
              \r\n{\"status\":\"OK\"}"
        );
    }
}
