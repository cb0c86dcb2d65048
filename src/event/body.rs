//! Request bodies in events: sent as text or as base64, by AWS's content-type rule.

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use serde::{Serialize, Serializer};

/// Media types HTTP API sends as text; everything else, a missing Content-Type included, is
/// base64 (measured on AWS: spec §1.3).
const TEXT_MEDIA_TYPES: [&str; 3] = [
    "application/json",
    "application/xml",
    "application/javascript",
];

/// A request body as it goes into an event's `body` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventBody<'a> {
    Text(&'a str),
    Base64(&'a [u8]),
}

impl<'a> EventBody<'a> {
    /// `None` for an empty body, which events omit.
    pub fn of(headers: &HeaderMap, body: &'a [u8]) -> Option<Self> {
        if body.is_empty() {
            return None;
        }
        let declared_text = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_text_media_type);
        // Text that is not valid UTF-8 cannot travel in a JSON string unchanged: base64 it.
        Some(match std::str::from_utf8(body) {
            Ok(text) if declared_text => EventBody::Text(text),
            _ => EventBody::Base64(body),
        })
    }

    pub fn is_base64(&self) -> bool {
        matches!(self, EventBody::Base64(_))
    }
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
            Some(EventBody::Text("hi"))
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
    fn base64_uses_the_standard_padded_alphabet() {
        let json = serde_json::to_string(&EventBody::Base64(&[0xfb, 0xff])).unwrap();
        assert_eq!(json, "\"+/8=\"");
        let json = serde_json::to_string(&EventBody::Text("a\"b")).unwrap();
        assert_eq!(json, r#""a\"b""#);
    }
}
