//! Streamed HTTP responses: a function that streams writes a JSON metadata prelude
//! (`statusCode`, `headers`, `cookies`), then eight NUL bytes, then the body, with the content
//! type `application/vnd.awslambda.http-integration-response` (Node's `aws-lambda-ric`,
//! `HttpResponseStream.js`; the Rust `lambda_runtime` crate, `MetadataPrelude`). An endpoint
//! such as the Runtime Interface Emulator buffers the stream and drops its content type, so
//! the answer arrives as one payload: this finds the prelude in it and makes the response.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{EventError, parse_status};

/// What ends the prelude.
pub const DELIMITER: [u8; 8] = [0; 8];
/// The content type of a stream that a prelude leads.
pub const PRELUDE_CONTENT_TYPE: &str = "application/vnd.awslambda.http-integration-response";
/// What a streamed response without a content type is sent with.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The response a buffered stream stands for, if `payload` is one: a JSON object, eight NUL
/// bytes, and the body. JSON text cannot hold a raw NUL, so the first eight end the prelude.
pub fn buffered_stream(payload: &Bytes) -> Option<Result<Response<Bytes>, EventError>> {
    if payload.first() != Some(&b'{') {
        return None;
    }
    // JSON text holds no raw NUL byte, so the prelude ends at the first one. Looking for
    // one byte is several times cheaper than setting up a search for all eight.
    let end = memchr::memchr(0, payload)?;
    if !payload[end..].starts_with(&DELIMITER) {
        return None;
    }
    let fields: HashMap<Cow<str>, &RawValue> = serde_json::from_slice(&payload[..end]).ok()?;
    let body = payload.slice(end + DELIMITER.len()..);
    Some(response(&fields, body))
}

/// The response head a live stream's prelude (the JSON before the delimiter) describes.
pub fn head(prelude: &[u8]) -> Result<Response<()>, EventError> {
    let fields: HashMap<Cow<str>, &RawValue> = serde_json::from_slice(prelude).map_err(|e| {
        EventError::Malformed(format!("the stream's prelude is not a JSON object: {e}"))
    })?;
    response(&fields, ())
}

/// The head of a stream without a prelude: 200, with the runtime's content type.
pub fn raw_head(content_type: Option<&str>) -> Response<()> {
    let mut response = Response::new(());
    let content_type = content_type
        .and_then(|ct| HeaderValue::from_str(ct).ok())
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

fn response<B>(fields: &HashMap<Cow<str>, &RawValue>, body: B) -> Result<Response<B>, EventError> {
    let status = match fields.get("statusCode") {
        Some(raw) => parse_status(raw)?,
        None => StatusCode::OK,
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let prelude_headers: Option<HashMap<String, OneOrMany>> =
        super::optional(fields.get("headers").copied(), "prelude headers")?;
    for (name, values) in prelude_headers.unwrap_or_default() {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values.0 {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(name.clone(), value);
            }
        }
    }
    let cookies: Option<Vec<String>> = super::optional(fields.get("cookies").copied(), "cookies")?;
    for cookie in cookies.unwrap_or_default() {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    // The gateway computes these itself.
    for hop in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        headers.remove(hop);
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        );
    }
    Ok(response)
}

/// A header value written as a string, or (the Rust runtime's form for a repeated header) a
/// list of strings.
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        Ok(OneOrMany(match Written::deserialize(deserializer)? {
            Written::One(value) => vec![value],
            Written::Many(values) => values,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(prelude: &str, body: &[u8]) -> Bytes {
        let mut payload = prelude.as_bytes().to_vec();
        payload.extend_from_slice(&DELIMITER);
        payload.extend_from_slice(body);
        Bytes::from(payload)
    }

    #[test]
    fn a_buffered_stream_becomes_its_status_headers_cookies_and_body() {
        let payload = streamed(
            r#"{"statusCode":201,"headers":{"content-type":"text/event-stream","x-multi":["a","b"]},"cookies":["s=1; Path=/"]}"#,
            b"data: one\n\ndata: two\n\n\0binary\0",
        );
        let response = buffered_stream(&payload).unwrap().unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers().get_all("x-multi").iter().count(), 2);
        assert_eq!(response.headers()["set-cookie"], "s=1; Path=/");
        assert_eq!(
            response.body(),
            &b"data: one\n\ndata: two\n\n\0binary\0"[..]
        );
    }

    #[test]
    fn defaults_apply_and_other_payloads_are_not_streams() {
        let response = buffered_stream(&streamed("{}", b"raw")).unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], DEFAULT_CONTENT_TYPE);
        assert_eq!(response.body(), "raw");
        let binary = buffered_stream(&streamed("{}", b"\0\0\0\0\0\0\0\0\0x"));
        assert_eq!(binary.unwrap().unwrap().body(), &b"\0\0\0\0\0\0\0\0\0x"[..]);
        for payload in [
            &br#"{"statusCode":200,"body":"x"}"#[..],
            b"[1,2]",
            b"{not json\0\0\0\0\0\0\0\0body",
            // Fewer than eight NULs are no delimiter, even with eight further on.
            b"{}\0\0\0body\0\0\0\0\0\0\0\0",
            b"",
        ] {
            assert!(buffered_stream(&Bytes::from_static(payload)).is_none());
        }
        let bad_status = buffered_stream(&streamed(r#"{"statusCode":101}"#, b""));
        assert!(matches!(bad_status, Some(Err(EventError::Malformed(_)))));
    }
}
