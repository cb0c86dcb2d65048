//! Bodies: how each front door puts a request body in an event (text or base64), and how it
//! takes a result's body out.

use std::borrow::Cow;

use base64::Engine;
use base64::display::Base64Display;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;
use http::HeaderMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::EventError;
use super::headers::JsonText;

/// Media types HTTP API, function URLs and ALB send as text; everything else, a missing
/// Content-Type included, is base64 (measured on AWS for HTTP API and function URLs; the ALB
/// guide's "Lambda functions as targets" page lists the same types).
const TEXT_MEDIA_TYPES: [&str; 3] = [
    "application/json",
    "application/xml",
    "application/javascript",
];

/// Results may pad base64 or not; the front doors decode both.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A request body as it goes into an event's `body` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody<'a> {
    Text(Cow<'a, str>),
    Base64(&'a [u8]),
}

impl<'a> EventBody<'a> {
    /// HTTP API and function URLs: text for the text media types, else base64. `None` for an
    /// empty body.
    pub fn of(headers: &HeaderMap, body: &'a [u8]) -> Option<Self> {
        if body.is_empty() {
            return None;
        }
        Some(Self::text_or_base64(
            content_type(headers).is_some_and(is_text_media_type),
            body,
        ))
    }

    /// ALB: as [`EventBody::of`], except that a body with a `Content-Encoding` is always
    /// base64 (the ALB guide, "Lambda functions as targets").
    pub fn for_alb(headers: &HeaderMap, body: &'a [u8]) -> Option<Self> {
        if body.is_empty() {
            return None;
        }
        let text = !headers.contains_key(http::header::CONTENT_ENCODING)
            && content_type(headers).is_some_and(is_text_media_type);
        Some(Self::text_or_base64(text, body))
    }

    /// REST: base64 only when the Content-Type matches one of the API's binary media types;
    /// anything else is text, as REST sends it (bytes that are not UTF-8 are mangled, as REST
    /// mangles them).
    pub fn for_rest(headers: &HeaderMap, body: &'a [u8], binary_types: &[String]) -> Option<Self> {
        if body.is_empty() {
            return None;
        }
        let binary = content_type(headers).is_some_and(|ct| matches_any(ct, binary_types));
        Some(if binary {
            EventBody::Base64(body)
        } else {
            EventBody::Text(String::from_utf8_lossy(body))
        })
    }

    fn text_or_base64(declared_text: bool, body: &'a [u8]) -> Self {
        // Text that is not valid UTF-8 cannot travel in a JSON string unchanged: base64 it.
        match std::str::from_utf8(body) {
            Ok(text) if declared_text => EventBody::Text(Cow::Borrowed(text)),
            _ => EventBody::Base64(body),
        }
    }

    pub fn is_base64(&self) -> bool {
        matches!(self, EventBody::Base64(_))
    }
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// Whether `media_type` (parameters ignored) matches one of `patterns`: an exact type, a
/// `type/*` wildcard, or `*/*`, compared without regard to case.
fn matches_any(media_type: &str, patterns: &[String]) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    let (kind, _) = essence.split_once('/').unwrap_or((essence, ""));
    patterns.iter().any(|pattern| {
        let pattern = pattern.trim();
        pattern == "*/*"
            || pattern.eq_ignore_ascii_case(essence)
            || pattern
                .strip_suffix("/*")
                .is_some_and(|p| p.eq_ignore_ascii_case(kind))
    })
}

/// REST decodes a base64 result only when the request's first `Accept` media type is one of
/// the binary media types: "API Gateway only honors the first Accept media type" (API
/// Gateway guide, "Content type conversions in API Gateway").
pub fn first_accept_is_binary(accept: &str, binary_types: &[String]) -> bool {
    let first = accept.split(',').next().unwrap_or("");
    !first.trim().is_empty() && matches_any(first, binary_types)
}

/// A result's `body` field as the bytes to send: decoded from base64 when `decode`, else the
/// text itself, which is a slice of the payload when it has no JSON escapes (no copy).
pub fn result_body(
    payload: &Bytes,
    raw: Option<&RawValue>,
    decode: bool,
) -> Result<Bytes, EventError> {
    let body: Option<JsonText> = super::optional(raw, "body must be a string")?;
    let Some(JsonText(body)) = body else {
        return Ok(Bytes::new());
    };
    if decode {
        return BASE64_LENIENT
            .decode(body.as_bytes())
            .map(Bytes::from)
            .map_err(|e| EventError::Malformed(format!("body is not valid base64: {e}")));
    }
    Ok(match body {
        Cow::Borrowed(text) if within(payload, text.as_bytes()) => {
            payload.slice_ref(text.as_bytes())
        }
        Cow::Borrowed(text) => Bytes::copy_from_slice(text.as_bytes()),
        Cow::Owned(text) => Bytes::from(text),
    })
}

/// Whether `part` lies inside `whole`'s memory (so that `Bytes::slice_ref` takes it).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (whole, part) = (whole.as_ptr_range(), part.as_ptr_range());
    whole.start <= part.start && part.end <= whole.end
}

impl Serialize for EventBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EventBody::Text(text) => serializer.serialize_str(text),
            // Streams the encoding into the output instead of building a second copy.
            EventBody::Base64(bytes) => {
                serializer.collect_str(&Base64Display::new(bytes, &STANDARD))
            }
        }
    }
}

pub fn is_text_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let starts_with_ignore_case = |prefix: &str| {
        essence
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    starts_with_ignore_case("text/")
        || TEXT_MEDIA_TYPES
            .iter()
            .any(|t| essence.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_for(content_type: Option<&str>, body: &[u8]) -> Option<EventBody<'static>> {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        let body: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
        EventBody::of(&headers, body)
    }

    #[test]
    fn text_types_follow_the_aws_list() {
        for ct in [
            "text/plain",
            "TEXT/HTML; charset=utf-8",
            "application/json",
            "application/json; charset=utf-8",
            "Application/XML",
            "application/javascript",
        ] {
            assert!(is_text_media_type(ct), "{ct} is text");
        }
        for ct in [
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
            "image/png",
            "application/vnd.api+json",
            "application/jsonx",
            "",
        ] {
            assert!(!is_text_media_type(ct), "{ct} is binary");
        }
    }

    #[test]
    fn empty_bodies_are_omitted_and_missing_content_type_is_binary() {
        assert_eq!(body_for(Some("text/plain"), b""), None);
        assert_eq!(body_for(None, b"hi"), Some(EventBody::Base64(b"hi")));
        assert_eq!(
            body_for(Some("text/plain"), b"hi"),
            Some(EventBody::Text("hi".into()))
        );
    }

    #[test]
    fn text_that_is_not_utf8_falls_back_to_base64() {
        assert_eq!(
            body_for(Some("text/plain"), b"\xff\xfe"),
            Some(EventBody::Base64(b"\xff\xfe"))
        );
    }

    #[test]
    fn alb_sends_encoded_bodies_as_base64() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(
            EventBody::for_alb(&headers, b"hi"),
            Some(EventBody::Text("hi".into()))
        );
        headers.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(
            EventBody::for_alb(&headers, b"hi"),
            Some(EventBody::Base64(b"hi"))
        );
    }

    #[test]
    fn rest_sends_base64_only_for_its_binary_media_types() {
        let types = vec!["image/*".to_owned(), "application/octet-stream".to_owned()];
        let mut headers = HeaderMap::new();
        // No binary media types match: text, even for bytes that are not UTF-8.
        assert_eq!(
            EventBody::for_rest(&headers, b"\xffa", &types),
            Some(EventBody::Text("\u{fffd}a".into()))
        );
        headers.insert(http::header::CONTENT_TYPE, "IMAGE/png".parse().unwrap());
        assert!(
            EventBody::for_rest(&headers, b"a", &types)
                .unwrap()
                .is_base64()
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert!(
            !EventBody::for_rest(&headers, b"a", &types)
                .unwrap()
                .is_base64()
        );
        assert!(
            EventBody::for_rest(&headers, b"a", &["*/*".to_owned()])
                .unwrap()
                .is_base64()
        );
    }

    #[test]
    fn only_the_first_accept_type_counts() {
        let types = vec!["image/png".to_owned()];
        assert!(first_accept_is_binary("image/png, text/html", &types));
        assert!(first_accept_is_binary("image/png;q=0.9", &types));
        assert!(!first_accept_is_binary("text/html, image/png", &types));
        assert!(!first_accept_is_binary("", &["*/*".to_owned()]));
    }

    fn body_of(payload: &Bytes, decode: bool) -> Result<Bytes, EventError> {
        let raw: &RawValue = serde_json::from_slice(payload).unwrap();
        result_body(payload, Some(raw), decode)
    }

    #[test]
    fn result_bodies_decode_padded_and_unpadded_base64() {
        let padded = Bytes::from_static(br#""aGk=""#);
        assert_eq!(body_of(&padded, true).unwrap(), "hi");
        assert_eq!(
            body_of(&Bytes::from_static(br#""aGk""#), true).unwrap(),
            "hi"
        );
        assert_eq!(body_of(&padded, false).unwrap(), "aGk=");
        assert!(body_of(&Bytes::from_static(br#""!!""#), true).is_err());
        assert!(body_of(&Bytes::from_static(b"12"), false).is_err());
        assert_eq!(body_of(&Bytes::from_static(b"null"), false).unwrap(), "");
    }

    #[test]
    fn a_text_body_is_a_slice_of_the_result_unless_it_has_escapes() {
        let payload = Bytes::from(br#""hello from the function""#.to_vec());
        let body = body_of(&payload, false).unwrap();
        assert_eq!(body, "hello from the function");
        assert!(within(&payload, &body), "borrowed, not copied");
        let escaped = Bytes::from(br#""a\"b""#.to_vec());
        let body = body_of(&escaped, false).unwrap();
        assert_eq!(body, "a\"b");
        assert!(!within(&escaped, &body));
    }

    #[test]
    fn base64_uses_the_standard_padded_alphabet() {
        let json = serde_json::to_string(&EventBody::Base64(&[0xfb, 0xff])).unwrap();
        assert_eq!(json, "\"+/8=\"");
        let json = serde_json::to_string(&EventBody::Text("a\"b".into())).unwrap();
        assert_eq!(json, r#""a\"b""#);
    }
}
