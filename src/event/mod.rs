//! Pure HTTP ⇄ Lambda event translation: no I/O, no async. One file per payload format:
//! `v2.rs` (HTTP API payload 2.0, and Function URLs, which use its shape), `v1.rs` (payload
//! 1.0: REST API proxy integrations and HTTP API with payload 1.0) and `alb.rs` (ALB target
//! groups). What they truly share lives here, in `headers.rs` and in `body.rs`.

mod alb;
mod body;
mod headers;
pub mod prelude;
#[cfg(test)]
mod testing;
mod v1;
mod v2;

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode, Version};
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::router::Host;

pub use headers::TRACE_ID as TRACE_ID_HEADER;

/// Lambda's synchronous invocation payload limit. lrp measures it on the serialized event,
/// because base64 makes a binary body a third larger on the way in.
pub const MAX_EVENT_BYTES: usize = 6_291_456;
/// The largest result Lambda returns: the limit as Lambda prints it.
pub const MAX_RESULT_BYTES: usize = 6_291_556;
/// lrp stands in for the API; there is no account behind it (function URLs with `NONE` auth
/// report `anonymous` too).
const ACCOUNT_ID: &str = "anonymous";
const API_ID: &str = "lrp";

/// The event format a rule sends, named after the AWS front door it stands in for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Format {
    /// API Gateway HTTP API, payload format 2.0.
    #[default]
    HttpApi,
    /// API Gateway HTTP API, payload format 1.0.
    HttpApiV1,
    /// API Gateway REST API, Lambda proxy integration (payload format 1.0).
    Rest(RestOptions),
    /// An Application Load Balancer target group.
    Alb { multi_value_headers: bool },
    /// A Lambda function URL.
    FunctionUrl,
}

/// What a REST API stage adds to its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestOptions {
    pub stage: String,
    pub stage_variables: Vec<(String, String)>,
    /// Request bodies with these media types are sent base64-encoded, and base64 results are
    /// decoded for requests whose first `Accept` type matches; `*/*` matches everything.
    pub binary_media_types: Vec<String>,
}

/// Whose answers a client gets when lrp answers for the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    HttpApi,
    Rest,
    FunctionUrl,
    Alb,
}

impl Format {
    pub fn front_door(&self) -> FrontDoor {
        match self {
            Format::HttpApi | Format::HttpApiV1 => FrontDoor::HttpApi,
            Format::Rest(_) => FrontDoor::Rest,
            Format::Alb { .. } => FrontDoor::Alb,
            Format::FunctionUrl => FrontDoor::FunctionUrl,
        }
    }

    /// The name the configuration file uses.
    pub fn name(&self) -> &'static str {
        match self {
            Format::HttpApi => "http-api",
            Format::HttpApiV1 => "http-api-v1",
            Format::Rest(_) => "rest",
            Format::Alb { .. } => "alb",
            Format::FunctionUrl => "function-url",
        }
    }

    /// The event this format sends for `request`, never larger than the front door allows.
    pub fn to_event(&self, request: &IncomingRequest<'_>) -> Result<Vec<u8>, EventTooLarge> {
        match self {
            Format::HttpApi => v2::to_event(request, v2::Flavor::HttpApi),
            Format::FunctionUrl => v2::to_event(request, v2::Flavor::FunctionUrl),
            Format::HttpApiV1 => v1::to_event(request, v1::Flavor::HttpApi),
            Format::Rest(options) => v1::to_event(request, v1::Flavor::Rest(options)),
            Format::Alb {
                multi_value_headers,
            } => alb::to_event(request, *multi_value_headers),
        }
    }

    /// Whether this front door decodes a base64 result body for a request with `headers`:
    /// REST does when the first media type the request accepts is one of the API's binary
    /// media types. Read before the request's head is let go, so the result needs no copy of
    /// the head.
    pub fn decodes_base64_result(&self, headers: &http::HeaderMap) -> bool {
        let Format::Rest(options) = self else {
            return false;
        };
        headers
            .get(http::header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| body::first_accept_is_binary(accept, &options.binary_media_types))
    }

    /// The response this front door makes of a function's result; `decode_base64` is
    /// [`Format::decodes_base64_result`] for the request. A streaming function's answer,
    /// buffered by its endpoint, is the response its prelude describes, whatever the format.
    pub fn from_result(
        &self,
        result: Bytes,
        decode_base64: bool,
    ) -> Result<Response<Bytes>, EventError> {
        if let Some(streamed) = prelude::buffered_stream(&result) {
            return streamed;
        }
        match self {
            Format::HttpApi | Format::FunctionUrl => v2::from_result(result),
            Format::HttpApiV1 => v1::from_result(result, v1::ResultRules::HttpApi),
            Format::Rest(_) => v1::from_result(result, v1::ResultRules::Rest { decode_base64 }),
            Format::Alb {
                multi_value_headers,
            } => alb::from_result(result, *multi_value_headers),
        }
    }

    /// A fresh request id in this front door's shape: HTTP API's short one, else a UUID.
    pub fn request_id(&self) -> String {
        match self.front_door() {
            FrontDoor::HttpApi => crate::ids::api_request_id(),
            _ => crate::ids::lambda_request_id(),
        }
    }
}

/// Everything a payload format needs to know about one request, gathered once by the server.
#[derive(Debug)]
pub struct IncomingRequest<'a> {
    pub parts: &'a http::request::Parts,
    /// The path the function sees: the request's, less a rule's stripped prefix.
    pub path: &'a str,
    pub body: &'a [u8],
    pub host: &'a Host,
    pub connection: &'a Connection,
    pub request_id: &'a str,
    /// `x-amzn-trace-id` for requests that do not bring one.
    pub trace_id: &'a str,
    pub received: SystemTime,
}

/// What events say about the connection a request came on, formatted once per connection
/// rather than once per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The client's address (`sourceIp`, the end of `x-forwarded-for`).
    source_ip: String,
    /// The port the client connected to (`x-forwarded-port`).
    local_port: String,
}

impl Connection {
    pub fn new(peer_ip: IpAddr, local_port: u16) -> Self {
        Connection {
            source_ip: peer_ip.to_canonical().to_string(),
            local_port: local_port.to_string(),
        }
    }

    pub fn source_ip(&self) -> &str {
        &self.source_ip
    }

    pub fn local_port(&self) -> &str {
        &self.local_port
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("malformed function result: {0}")]
    Malformed(String),
    #[error("the function's result is larger than the front door's {0} byte limit")]
    TooLarge(usize),
}

/// The event would be larger than the front door allows.
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

/// Serializes `event`, refusing once it would pass `limit` bytes: an event is never buffered
/// beyond what the front door allows. `body_len` sizes the buffer so it rarely grows.
fn serialize_limited(
    event: &impl Serialize,
    body_len: usize,
    limit: usize,
) -> Result<Vec<u8>, EventTooLarge> {
    let mut writer = EventWriter::new(body_len, limit);
    writer.value(event)?;
    writer.into_bytes()
}

/// An event written piece by piece: literal JSON text for its fixed shape, serialized values,
/// never more than `limit` bytes in all.
struct EventWriter {
    out: LimitedWriter,
    /// Set once the limit is passed: every later write is refused too.
    over: bool,
}

impl EventWriter {
    /// `body_len` sizes the buffer so it rarely grows.
    fn new(body_len: usize, limit: usize) -> Self {
        /// What an event adds around the body, typically: headers, context, field names.
        const EVENT_OVERHEAD: usize = 1024;
        let capacity = (EVENT_OVERHEAD + body_len * 4 / 3).min(limit);
        EventWriter {
            out: LimitedWriter {
                buffer: Vec::with_capacity(capacity),
                limit,
            },
            over: false,
        }
    }

    /// JSON text written as it is: only ever the event's own punctuation and field names, and
    /// header names, which are tokens (nothing in them needs escaping). Inlined: the length of
    /// a literal is then known where it is copied, and the copy takes a few moves instead of a
    /// call to `memcpy`.
    #[inline(always)]
    fn raw(&mut self, json: &str) {
        use std::io::Write;
        self.over |= self.out.write_all(json.as_bytes()).is_err();
    }

    /// A JSON string. Text with nothing to escape (paths, header values, ids: the common case)
    /// is copied between quotes in one piece; text with anything to escape is serde_json's.
    fn string(&mut self, text: &str) -> Result<(), EventTooLarge> {
        let bytes = text.as_bytes();
        if needs_escaping(bytes) {
            return self.value(text);
        }
        let buffer = &mut self.out.buffer;
        if self.over || buffer.len() + bytes.len() + 2 > self.out.limit {
            self.over = true;
            return Err(EventTooLarge);
        }
        buffer.reserve(bytes.len() + 2);
        buffer.push(b'"');
        buffer.extend_from_slice(bytes);
        buffer.push(b'"');
        Ok(())
    }

    fn value(&mut self, value: &(impl Serialize + ?Sized)) -> Result<(), EventTooLarge> {
        if self.over || serde_json::to_writer(&mut self.out, value).is_err() {
            self.over = true;
            return Err(EventTooLarge);
        }
        Ok(())
    }

    fn into_bytes(self) -> Result<Vec<u8>, EventTooLarge> {
        match self.over {
            true => Err(EventTooLarge),
            false => Ok(self.out.buffer),
        }
    }
}

/// Whether any byte of `bytes` must be escaped in a JSON string: a quotation mark, a reverse
/// solidus or a control character (RFC 8259, section 7). Eight bytes at a time: serde_json's
/// byte-by-byte table lookup costs as much as the rest of writing a short string.
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Non-zero if and only if some byte of `word` is below `n` (for `n` <= 0x80): the classic
    // "haszero"/"hasless" tests.
    let has_byte_below =
        |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS;
    let has_byte = |word: u64, byte: u8| has_byte_below(word ^ (ONES * u64::from(byte)), 1);
    let (words, rest) = bytes.as_chunks::<8>();
    words.iter().any(|word| {
        let word = u64::from_ne_bytes(*word);
        (has_byte_below(word, 0x20) | has_byte(word, b'"') | has_byte(word, b'\\')) != 0
    }) || rest
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

#[cold]
fn over_the_limit() -> std::io::Error {
    std::io::Error::other("the event is over the limit")
}

/// A buffer that refuses to grow past `limit`.
struct LimitedWriter {
    buffer: Vec<u8>,
    limit: usize,
}

impl std::io::Write for LimitedWriter {
    // Inlined into the serializer, which writes every key and punctuation mark through it.
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all(bytes).map(|()| bytes.len())
    }

    #[inline(always)]
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.buffer.len() + bytes.len() > self.limit {
            return Err(over_the_limit());
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Common Log Format time in UTC, as in `requestContext.time`: `12/Mar/2020:19:03:58 +0000`.
/// Formatted once per second per thread: every request of a second shares the text.
fn clf_time(at: SystemTime) -> ClfTime {
    thread_local! {
        static LAST: std::cell::Cell<Option<(u64, ClfTime)>> = const { std::cell::Cell::new(None) };
    }
    let second = crate::ids::epoch_seconds(at);
    LAST.with(|last| match last.get() {
        Some((cached, text)) if cached == second => text,
        _ => {
            let text = ClfTime::format(at);
            last.set(Some((second, text)));
            text
        }
    })
}

/// A formatted [`clf_time`], kept inline: no allocation per event.
#[derive(Clone, Copy)]
struct ClfTime {
    bytes: [u8; 32],
    len: usize,
}

impl ClfTime {
    fn format(at: SystemTime) -> Self {
        let format =
            format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
        let mut time = ClfTime {
            bytes: [0; 32],
            len: 0,
        };
        if let Ok(text) = OffsetDateTime::from(at).format(format)
            && let Some(slot) = time.bytes.get_mut(..text.len())
        {
            slot.copy_from_slice(text.as_bytes());
            time.len = text.len();
        }
        time
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Serialize for ClfTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
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

/// The first DNS label of a host (`domainPrefix`).
fn domain_prefix(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
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

/// An optional JSON value of type `T`, where `null` counts as absent.
fn optional<'a, T: serde::Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &str,
) -> Result<Option<T>, EventError> {
    raw.map(|raw| serde_json::from_str::<Option<T>>(raw.get()))
        .transpose()
        .map(Option::flatten)
        .map_err(|e| EventError::Malformed(format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn clf_time_matches_the_aws_example() {
        // 12/Mar/2020:19:03:58 +0000 is the time of the HTTP API documentation's example.
        let at = UNIX_EPOCH + Duration::from_millis(1_584_039_838_123);
        assert_eq!(clf_time(at).as_str(), "12/Mar/2020:19:03:58 +0000");
        let early = UNIX_EPOCH + Duration::from_secs(5 * 86_400);
        assert_eq!(clf_time(early).as_str(), "06/Jan/1970:00:00:00 +0000");
        assert_eq!(
            clf_time(at + Duration::from_millis(500)).as_str(),
            "12/Mar/2020:19:03:58 +0000",
            "the cached second"
        );
        assert_eq!(
            clf_time(at + Duration::from_secs(1)).as_str(),
            "12/Mar/2020:19:03:59 +0000"
        );
    }

    #[test]
    fn an_event_writer_refuses_text_and_values_past_the_limit() {
        let write = |limit| {
            let mut event = EventWriter::new(0, limit);
            event.raw(r#"{"a":"#);
            let value = event.value("b");
            event.raw("}");
            (value, event.into_bytes())
        };
        assert_eq!(write(9), (Ok(()), Ok(br#"{"a":"b"}"#.to_vec())));
        // The closing brace is one byte too many.
        assert_eq!(write(8), (Ok(()), Err(EventTooLarge)));
        assert_eq!(write(7), (Err(EventTooLarge), Err(EventTooLarge)));
    }

    #[test]
    fn only_rest_decodes_base64_results_and_only_for_a_binary_first_accept_type() {
        let rest = Format::Rest(RestOptions {
            stage: "prod".into(),
            stage_variables: Vec::new(),
            binary_media_types: vec!["image/png".into()],
        });
        let accepting = |accept: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(accept) = accept {
                headers.insert(http::header::ACCEPT, accept.parse().unwrap());
            }
            headers
        };
        assert!(rest.decodes_base64_result(&accepting(Some("image/png, text/html"))));
        assert!(!rest.decodes_base64_result(&accepting(Some("text/html, image/png"))));
        assert!(!rest.decodes_base64_result(&accepting(None)));
        for other in [Format::HttpApi, Format::HttpApiV1, Format::FunctionUrl] {
            assert!(!other.decodes_base64_result(&accepting(Some("image/png"))));
        }
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        // Every byte that needs escaping, at every position of an eight-byte word and in the
        // tail after the last whole word, next to bytes that do not (0x7f and non-ASCII).
        let mut texts = vec![String::new(), "/path?query".into(), "é\u{7f}ü€𝄞".into()];
        for special in ['"', '\\', '\n', '\0', '\u{1f}', '\t'] {
            for at in 0..17 {
                let mut text: String = "abcdefghijklmnopq".chars().take(at).collect();
                text.push(special);
                text.push_str(" \u{7f}é");
                texts.push(text);
            }
        }
        for text in &texts {
            let mut event = EventWriter::new(0, 1024);
            event.string(text).unwrap();
            let written = event.into_bytes().unwrap();
            assert_eq!(written, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        assert!(!needs_escaping(
            b"a plain ASCII path /with/segments?and=query \x7f \xff"
        ));
        assert!(needs_escaping(b"0123456789abcdef\""));
    }

    #[test]
    fn a_string_past_the_limit_is_refused_whether_or_not_it_needs_escaping() {
        for text in ["abc", "a\"c"] {
            let mut event = EventWriter::new(0, 4);
            assert_eq!(event.string(text), Err(EventTooLarge), "{text:?}");
            assert_eq!(event.string(""), Err(EventTooLarge), "refused once over");
            assert_eq!(event.into_bytes(), Err(EventTooLarge));
        }
        let mut event = EventWriter::new(0, 5);
        assert_eq!(event.string("abc"), Ok(()));
        assert_eq!(event.into_bytes(), Ok(br#""abc""#.to_vec()));
    }

    #[test]
    fn events_are_cut_off_at_the_limit() {
        let text = "x".repeat(100);
        assert_eq!(serialize_limited(&text, 100, 101), Err(EventTooLarge));
        assert_eq!(serialize_limited(&text, 100, 102).unwrap().len(), 102);
    }
}
