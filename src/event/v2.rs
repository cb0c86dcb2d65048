//! API Gateway HTTP API payload format 2.0, both directions (spec §1 and §4.1).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode, Version};
use indexmap::IndexMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::body::EventBody;
use super::{EventError, IncomingRequest, MAX_EVENT_BYTES};

const ROUTE_KEY: &str = "$default";
const STAGE: &str = "$default";
/// lrp stands in for the API; there is no account behind it (function URLs with `NONE` auth
/// report `anonymous` too).
const ACCOUNT_ID: &str = "anonymous";
const API_ID: &str = "lrp";
/// The content type HTTP API gives a response that names none (spec §4.1).
const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Headers that describe one hop, which the gateway computes itself rather than pass on.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];
/// What an event adds around the body, typically: headers, context, field names.
const EVENT_OVERHEAD: usize = 1024;
/// Functions pad base64 or not; HTTP API decodes both.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Serializes the request as the payload 2.0 event HTTP API would send, or refuses once the
/// event would pass [`MAX_EVENT_BYTES`]: it is never buffered beyond Lambda's limit.
pub fn to_event(request: &IncomingRequest<'_>) -> Result<Vec<u8>, EventTooLarge> {
    let parts = request.parts;
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    let body = EventBody::of(&parts.headers, request.body);
    let host = request.host.as_str();
    let event = Event {
        version: "2.0",
        route_key: ROUTE_KEY,
        raw_path,
        raw_query_string: raw_query,
        cookies: cookies(&parts.headers),
        headers: EventHeaders { request },
        query_string_parameters: query_parameters(raw_query),
        request_context: RequestContext {
            account_id: ACCOUNT_ID,
            api_id: API_ID,
            domain_name: host,
            domain_prefix: host.split('.').next().unwrap_or(host),
            http: HttpDescription {
                method: parts.method.as_str(),
                path: raw_path,
                protocol: protocol(parts.version),
                source_ip: request.peer_ip,
                user_agent: parts
                    .headers
                    .get(header::USER_AGENT)
                    .map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes())),
            },
            request_id: request.request_id,
            route_key: ROUTE_KEY,
            stage: STAGE,
            time: super::clf_time(request.received),
            time_epoch: crate::ids::epoch_millis(request.received),
        },
        is_base64_encoded: body.is_some_and(|b| b.is_base64()),
        body,
    };
    // Room for the body (a third more as base64) and the ~1 KiB around it, so the event is
    // written without growing the buffer. The only way writing can fail is the limit.
    let capacity = (EVENT_OVERHEAD + request.body.len() * 4 / 3).min(MAX_EVENT_BYTES);
    let mut writer = LimitedWriter(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut writer, &event).map_err(|_| EventTooLarge)?;
    Ok(writer.0)
}

/// The event would be larger than Lambda's 6 MB invocation limit.
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

/// A buffer that refuses to grow past [`MAX_EVENT_BYTES`].
struct LimitedWriter(Vec<u8>);

impl std::io::Write for LimitedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(std::io::Error::other("the event is over Lambda's limit"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    version: &'static str,
    route_key: &'static str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: EventHeaders<'a>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    query_string_parameters: IndexMap<Cow<'a, str>, Cow<'a, str>>,
    request_context: RequestContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<EventBody<'a>>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    account_id: &'static str,
    api_id: &'static str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpDescription<'a>,
    request_id: &'a str,
    route_key: &'static str,
    stage: &'static str,
    time: String,
    time_epoch: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpDescription<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    source_ip: IpAddr,
    user_agent: Cow<'a, str>,
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Every `name=value` pair of every Cookie header, in order.
fn cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// Decoded parameters; a repeated key's values joined with `,` in arrival order.
fn query_parameters(raw_query: &str) -> IndexMap<Cow<'_, str>, Cow<'_, str>> {
    let mut parameters: IndexMap<Cow<str>, Cow<str>> = IndexMap::new();
    for (key, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        match parameters.get_mut(&key) {
            Some(joined) => {
                let joined = joined.to_mut();
                joined.push(',');
                joined.push_str(&value);
            }
            None => {
                parameters.insert(key, value);
            }
        }
    }
    parameters
}

/// The event's `headers`: lower-case names, repeated values joined with `,`, `cookie` moved
/// to `cookies`, and the `x-forwarded-*`, `host` and `x-amzn-trace-id` headers AWS adds.
struct EventHeaders<'a> {
    request: &'a IncomingRequest<'a>,
}

impl Serialize for EventHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const FORWARDED_FOR: &str = "x-forwarded-for";
        const FORWARDED_PORT: &str = "x-forwarded-port";
        const FORWARDED_PROTO: &str = "x-forwarded-proto";
        const TRACE_ID: &str = "x-amzn-trace-id";
        let request = self.request;
        let headers = &request.parts.headers;
        let mut map = serializer.serialize_map(None)?;
        for name in headers.keys() {
            let name = name.as_str();
            if matches!(
                name,
                "cookie" | FORWARDED_FOR | FORWARDED_PORT | FORWARDED_PROTO
            ) {
                continue;
            }
            map.serialize_entry(name, &joined_values(headers, name, ","))?;
        }
        if !headers.contains_key(header::HOST) {
            map.serialize_entry("host", request.host.as_str())?;
        }
        if !headers.contains_key(TRACE_ID) {
            map.serialize_entry(TRACE_ID, request.trace_id)?;
        }
        // The client's address is appended to whatever chain of proxies came before.
        let peer = request.peer_ip;
        if headers.contains_key(FORWARDED_FOR) {
            let chain = joined_values(headers, FORWARDED_FOR, ", ");
            map.serialize_entry(FORWARDED_FOR, &format_args!("{chain}, {peer}"))?;
        } else {
            map.serialize_entry(FORWARDED_FOR, &format_args!("{peer}"))?;
        }
        map.serialize_entry(FORWARDED_PORT, &request.local_port.to_string())?;
        map.serialize_entry(FORWARDED_PROTO, "http")?;
        map.end()
    }
}

fn joined_values<'h>(headers: &'h HeaderMap, name: &str, separator: &str) -> Cow<'h, str> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Cow::Borrowed("");
    };
    let mut joined = String::from_utf8_lossy(first.as_bytes());
    for value in values {
        let joined = joined.to_mut();
        joined.push_str(separator);
        joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    joined
}

// ---------------------------------------------------------------------------------------------
// Function result → HTTP response

/// The documented result fields, kept raw so each can be checked on its own terms.
#[derive(Deserialize)]
struct RawResult<'a> {
    #[serde(rename = "statusCode", borrow, default)]
    status_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    headers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cookies: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
    #[serde(rename = "isBase64Encoded", borrow, default)]
    is_base64_encoded: Option<&'a RawValue>,
}

/// Turns a function's result into the response HTTP API would send (spec §4.1).
pub fn from_result(payload: Bytes) -> Result<Response<Bytes>, EventError> {
    let malformed = |why: String| EventError::Malformed(why);
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    let fields = if first == Some(&b'{') {
        let fields: RawResult = serde_json::from_slice(&payload)
            .map_err(|e| malformed(format!("result is not valid JSON: {e}")))?;
        fields.status_code.is_some().then_some(fields)
    } else {
        serde_json::from_slice::<serde::de::IgnoredAny>(&payload)
            .map_err(|e| malformed(format!("result is not valid JSON: {e}")))?;
        None
    };
    let Some(fields) = fields else {
        // Valid JSON without statusCode: 200, application/json, the result text as the body.
        return Ok(inferred_response(payload));
    };

    let status = fields
        .status_code
        .map(parse_status)
        .transpose()?
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(raw) = fields.headers {
        copy_headers(raw, headers)?;
    }
    if let Some(raw) = fields.cookies {
        let cookies: Option<Vec<Cow<str>>> = serde_json::from_str(raw.get())
            .map_err(|e| malformed(format!("cookies must be a list of strings: {e}")))?;
        for cookie in cookies.unwrap_or_default() {
            match HeaderValue::from_str(&cookie) {
                Ok(value) => {
                    headers.append(header::SET_COOKIE, value);
                }
                Err(_) => {
                    tracing::warn!(cookie = %cookie, "dropped a cookie that is not a valid header value")
                }
            }
        }
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        );
    }
    let is_base64: Option<bool> = fields
        .is_base64_encoded
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| malformed(format!("isBase64Encoded must be a boolean: {e}")))?
        .flatten();
    let body: Option<Cow<str>> = fields
        .body
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| malformed(format!("body must be a string: {e}")))?
        .flatten();
    *response.body_mut() = match body {
        None => Bytes::new(),
        Some(body) if is_base64 == Some(true) => BASE64_LENIENT
            .decode(body.as_bytes())
            .map(Bytes::from)
            .map_err(|e| malformed(format!("body is not valid base64: {e}")))?,
        Some(Cow::Borrowed(text)) => payload.slice_ref(text.as_bytes()),
        Some(Cow::Owned(text)) => Bytes::from(text),
    };
    Ok(response)
}

fn inferred_response(payload: Bytes) -> Response<Bytes> {
    let mut response = Response::new(payload);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `statusCode` as an integer or a numeric string, 200–599: a 1xx is no final answer (hyper
/// would turn `101` into a protocol switch and `100` into a bare 500 on a closed connection).
fn parse_status(raw: &RawValue) -> Result<StatusCode, EventError> {
    let text = raw.get();
    let number = if text.starts_with('"') {
        serde_json::from_str::<Cow<str>>(text)
            .ok()
            .and_then(|quoted| quoted.trim().parse::<u16>().ok())
    } else {
        text.parse::<u16>().ok()
    };
    number
        .filter(|n| (200..=599).contains(n))
        .and_then(|n| StatusCode::from_u16(n).ok())
        .ok_or_else(|| {
            EventError::Malformed(format!(
                "statusCode {text} is not a final HTTP status (200-599)"
            ))
        })
}

fn copy_headers(raw: &RawValue, headers: &mut HeaderMap) -> Result<(), EventError> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    ResultHeaders(headers)
        .deserialize(&mut deserializer)
        .map_err(|e| EventError::Malformed(format!("headers must be an object of strings: {e}")))
}

/// A result's `headers`, written straight into the response: no intermediate JSON values.
/// Strings without escapes are borrowed from the result; numbers and booleans become text,
/// `null` is skipped, and a name or value HTTP cannot carry is dropped with a warning.
struct ResultHeaders<'h>(&'h mut HeaderMap);

impl<'de> DeserializeSeed<'de> for ResultHeaders<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ResultHeaders<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of header names and values")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(JsonText(name)) = map.next_key()? {
            let Some(value) = map.next_value::<JsonHeaderValue>()?.0 else {
                continue;
            };
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                tracing::warn!(header = %name, "dropped a response header with an invalid name");
                continue;
            };
            if HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    self.0.append(name, value);
                }
                Err(_) => {
                    tracing::warn!(header = %name, "dropped a response header with an invalid value")
                }
            }
        }
        Ok(())
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
struct JsonText<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for JsonText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = JsonText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A header value as a function may write it: text, a number, a boolean, or `null` (`None`).
struct JsonHeaderValue<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for JsonHeaderValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = JsonHeaderValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonHeaderValue(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonHeaderValue(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JsonHeaderValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonHeaderValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonHeaderValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JsonHeaderValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonHeaderValue(None))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

#[cfg(test)]
mod tests;
