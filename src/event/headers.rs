//! Headers, both ways: the request headers every front door passes on (the client's, plus the
//! ones AWS adds), and the headers a function's result may set.

use std::borrow::Cow;
use std::fmt;

use http::HeaderMap;
use http::header::{self, GetAll, HeaderName, HeaderValue};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{EventError, IncomingRequest};

static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// A header value as text: bytes that are not UTF-8 become U+FFFD. Visible ASCII, the common
/// case, is checked by `to_str` at a fraction of what a lossy conversion costs.
pub fn value_text(value: &HeaderValue) -> Cow<'_, str> {
    value
        .to_str()
        .map_or_else(|_| String::from_utf8_lossy(value.as_bytes()), Cow::Borrowed)
}

/// The values of one header as a front door passes it on.
pub enum Values<'a> {
    /// The client's only value (most headers: found without a lookup by name).
    One(&'a HeaderValue),
    /// As the client sent them, in order.
    Client(GetAll<'a, HeaderValue>),
    /// One value the front door sets itself.
    Added(Cow<'a, str>),
}

impl<'a> Values<'a> {
    /// Every value joined with `separator` (payload 2.0 joins with `,`).
    pub fn joined(&self, separator: &str) -> Cow<'a, str> {
        match self {
            Values::Added(value) => value.clone(),
            Values::One(value) => value_text(value),
            Values::Client(values) => {
                let mut values = values.iter();
                let Some(first) = values.next() else {
                    return Cow::Borrowed("");
                };
                let mut joined = value_text(first);
                for value in values {
                    let joined = joined.to_mut();
                    joined.push_str(separator);
                    joined.push_str(&value_text(value));
                }
                joined
            }
        }
    }

    /// The last value (payload 1.0 and ALB's single-value mode: the last one wins).
    pub fn last(&self) -> Cow<'a, str> {
        match self {
            Values::Added(value) => value.clone(),
            Values::One(value) => value_text(value),
            Values::Client(values) => values
                .iter()
                .next_back()
                .map_or(Cow::Borrowed(""), value_text),
        }
    }
}

/// Serialized as the list of every value (`multiValueHeaders`).
impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Values::Added(value) => [value].serialize(serializer),
            Values::One(value) => [value_text(value)].serialize(serializer),
            Values::Client(values) => {
                let mut seq = serializer.serialize_seq(None)?;
                for value in values.iter() {
                    seq.serialize_element(&value_text(value))?;
                }
                seq.end()
            }
        }
    }
}

/// Calls `emit` once for each header name the function receives, in order: the client's
/// headers (lower-case names; `cookie` too unless `skip_cookie`), then the ones AWS adds:
/// `host` and `x-amzn-trace-id` when missing, `x-forwarded-for` with the client's address
/// appended to any chain before it, `x-forwarded-port` and `x-forwarded-proto`.
pub fn for_each<'a, E>(
    request: &'a IncomingRequest<'a>,
    skip_cookie: bool,
    mut emit: impl FnMut(&'a str, Values<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let headers = &request.parts.headers;
    // Lookups by `HeaderName`, not by text: a text name would be parsed again on every call.
    let (mut has_host, mut has_trace_id, mut forwarded_for) = (false, false, None);
    // Every value in turn, a name's values next to each other: a name repeated by the next
    // value has several, looked up by name; any other has one, with no lookup.
    let mut values = headers.iter().peekable();
    while let Some((name, value)) = values.next() {
        let mut repeated = false;
        while values.next_if(|(next, _)| *next == name).is_some() {
            repeated = true;
        }
        if *name == FORWARDED_FOR {
            forwarded_for = Some(headers.get_all(name));
            continue;
        }
        if (skip_cookie && name == header::COOKIE)
            || *name == FORWARDED_PORT
            || *name == FORWARDED_PROTO
        {
            continue;
        }
        has_host |= name == header::HOST;
        has_trace_id |= *name == TRACE_ID;
        let values = match repeated {
            true => Values::Client(headers.get_all(name)),
            false => Values::One(value),
        };
        emit(name.as_str(), values)?;
    }
    if !has_host {
        emit("host", Values::Added(Cow::Borrowed(request.host.as_str())))?;
    }
    if !has_trace_id {
        emit(
            TRACE_ID.as_str(),
            Values::Added(Cow::Borrowed(request.trace_id)),
        )?;
    }
    let source_ip = request.connection.source_ip();
    let forwarded_for = match forwarded_for {
        Some(chain) => {
            let chain = Values::Client(chain).joined(", ");
            Cow::Owned(format!("{chain}, {source_ip}"))
        }
        None => Cow::Borrowed(source_ip),
    };
    emit(FORWARDED_FOR.as_str(), Values::Added(forwarded_for))?;
    emit(
        FORWARDED_PORT.as_str(),
        Values::Added(Cow::Borrowed(request.connection.local_port())),
    )?;
    emit(
        FORWARDED_PROTO.as_str(),
        Values::Added(Cow::Borrowed("http")),
    )
}

/// The request's headers as a map of each name's last value (payload 1.0's `headers`, ALB's
/// single-value mode).
pub struct LastValues<'a>(pub &'a IncomingRequest<'a>);

impl Serialize for LastValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for_each(self.0, false, |name, values| {
            map.serialize_entry(name, &values.last())
        })?;
        map.end()
    }
}

/// The request's headers as a map of every value in arrival order (`multiValueHeaders`).
pub struct AllValues<'a>(pub &'a IncomingRequest<'a>);

impl Serialize for AllValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for_each(self.0, false, |name, values| {
            map.serialize_entry(name, &values)
        })?;
        map.end()
    }
}

/// Every `name=value` pair of every Cookie header, in order.
pub fn cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Headers in a function's result

/// Headers that describe one hop, which a front door computes itself rather than pass on.
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

/// Appends a result's `headers` object (`{"name": "value"}`) to `headers`.
pub fn copy_single(raw: &RawValue, headers: &mut HeaderMap) -> Result<(), EventError> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    ResultHeaders {
        headers,
        lists: false,
    }
    .deserialize(&mut deserializer)
    .map_err(|e| EventError::Malformed(format!("headers must be an object of strings: {e}")))
}

/// Appends a result's `multiValueHeaders` object (`{"name": ["value", …]}`) to `headers`.
pub fn copy_multi(raw: &RawValue, headers: &mut HeaderMap) -> Result<(), EventError> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    ResultHeaders {
        headers,
        lists: true,
    }
    .deserialize(&mut deserializer)
    .map_err(|e| {
        EventError::Malformed(format!(
            "multiValueHeaders must be an object of string lists: {e}"
        ))
    })
}

/// A result's headers, written straight into the response: no intermediate JSON values.
/// Strings without escapes are borrowed from the result; numbers and booleans become text,
/// `null` is skipped, hop-by-hop headers are dropped, and a name or value HTTP cannot carry
/// is dropped with a warning.
struct ResultHeaders<'h> {
    headers: &'h mut HeaderMap,
    /// Each value is a list of values (`multiValueHeaders`).
    lists: bool,
}

impl ResultHeaders<'_> {
    fn append(&mut self, name: &HeaderName, value: &str) {
        match HeaderValue::from_str(value) {
            Ok(value) => {
                self.headers.append(name.clone(), value);
            }
            Err(_) => {
                tracing::warn!(header = %name, "dropped a response header with an invalid value")
            }
        }
    }
}

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

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(JsonText(name)) = map.next_key()? {
            let values: Vec<JsonHeaderValue> = if self.lists {
                map.next_value::<Option<Vec<JsonHeaderValue>>>()?
                    .unwrap_or_default()
            } else {
                vec![map.next_value()?]
            };
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                tracing::warn!(header = %name, "dropped a response header with an invalid name");
                continue;
            };
            if HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            for value in values.iter().filter_map(|v| v.0.as_deref()) {
                self.append(&name, value);
            }
        }
        Ok(())
    }
}

/// A JSON string, borrowed from the input when it has no escapes. (serde's own `Cow<str>`
/// always copies: it borrows only as a derived struct's `#[serde(borrow)]` field.)
pub(super) struct JsonText<'de>(pub(super) Cow<'de, str>);

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
