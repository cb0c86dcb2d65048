//! Payload format 2.0, both ways: API Gateway HTTP API, and Lambda function URLs, which send
//! "the same schema as payload format 2.0" with a few differences (see [`Flavor`]). AWS
//! documents both in the API Gateway guide ("Working with AWS Lambda proxy integrations for
//! HTTP APIs") and the Lambda guide ("Invoking Lambda function URLs").

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{EventBody, result_body};
use super::headers::{self, cookies};
use super::{
    ACCOUNT_ID, API_ID, EventError, EventTooLarge, EventWriter, IncomingRequest, MAX_EVENT_BYTES,
    domain_prefix, parse_status, protocol,
};

/// The content type HTTP API gives a response that names none.
const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Which front door sends the payload 2.0 event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    HttpApi,
    /// Function URLs keep the `cookie` header in `headers` as well as in `cookies`, use a
    /// UUID request id, and name the URL id as the API id.
    FunctionUrl,
}

/// Serializes the request as the payload 2.0 event the front door would send, or refuses once
/// the event would pass [`MAX_EVENT_BYTES`]: it is never buffered beyond Lambda's limit.
///
/// The event's fixed shape is written as literal text and only its values go through the
/// serializer: this is the default format, on every request, and serde spends as much on each
/// field name as on its value.
pub fn to_event(request: &IncomingRequest<'_>, flavor: Flavor) -> Result<Vec<u8>, EventTooLarge> {
    let parts = request.parts;
    let raw_path = request.path;
    let raw_query = parts.uri.query().unwrap_or("");
    let body = EventBody::of(&parts.headers, request.body);
    let host = request.host.as_str();
    let mut event = EventWriter::new(request.body.len(), MAX_EVENT_BYTES);
    event.raw(r#"{"version":"2.0","routeKey":"$default","rawPath":"#);
    event.string(raw_path)?;
    event.raw(r#","rawQueryString":"#);
    event.string(raw_query)?;
    let cookies = cookies(&parts.headers);
    if !cookies.is_empty() {
        event.raw(r#","cookies":["#);
        for (i, cookie) in cookies.iter().enumerate() {
            event.raw(if i == 0 { "" } else { "," });
            event.string(cookie)?;
        }
        event.raw("]");
    }
    // Each name's values joined with `,`. HTTP API moves `cookie` to `cookies`; function URLs
    // keep it in both.
    event.raw(r#","headers":{"#);
    let mut first = true;
    headers::for_each(request, flavor == Flavor::HttpApi, |name, values| {
        event.raw(if first { "\"" } else { ",\"" });
        first = false;
        // A header name is a token (RFC 9110 §5.6.2): nothing in it needs escaping.
        event.raw(name);
        event.raw("\":");
        event.string(&values.joined(","))
    })?;
    event.raw("}");
    let query = query_parameters(raw_query);
    if !query.is_empty() {
        event.raw(r#","queryStringParameters":{"#);
        for (i, (key, value)) in query.iter().enumerate() {
            event.raw(if i == 0 { "" } else { "," });
            event.string(key)?;
            event.raw(":");
            event.string(value)?;
        }
        event.raw("}");
    }
    event.raw(r#","requestContext":{"accountId":"#);
    event.string(ACCOUNT_ID)?;
    event.raw(r#","apiId":"#);
    event.string(match flavor {
        Flavor::HttpApi => API_ID,
        Flavor::FunctionUrl => domain_prefix(host),
    })?;
    event.raw(r#","domainName":"#);
    event.string(host)?;
    event.raw(r#","domainPrefix":"#);
    event.string(domain_prefix(host))?;
    event.raw(r#","http":{"method":"#);
    event.string(parts.method.as_str())?;
    event.raw(r#","path":"#);
    event.string(raw_path)?;
    event.raw(r#","protocol":"#);
    event.string(protocol(parts.version))?;
    event.raw(r#","sourceIp":"#);
    event.string(request.connection.source_ip())?;
    event.raw(r#","userAgent":"#);
    let user_agent = parts.headers.get(header::USER_AGENT);
    event.string(&user_agent.map_or(Cow::Borrowed(""), headers::value_text))?;
    event.raw(r#"},"requestId":"#);
    event.string(request.request_id)?;
    event.raw(r#","routeKey":"$default","stage":"$default","time":"#);
    event.string(super::clf_time(request.received).as_str())?;
    event.raw(r#","timeEpoch":"#);
    event.value(&crate::ids::epoch_millis(request.received))?;
    event.raw("}");
    if let Some(body) = &body {
        event.raw(r#","body":"#);
        match body {
            EventBody::Text(text) => event.string(text)?,
            EventBody::Base64(_) => event.value(body)?,
        }
    }
    event.raw(match body.as_ref().is_some_and(EventBody::is_base64) {
        true => r#","isBase64Encoded":true}"#,
        false => r#","isBase64Encoded":false}"#,
    });
    event.into_bytes()
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

/// Turns a function's result into the response HTTP API would send (the API Gateway guide,
/// "Lambda function response for format 2.0").
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
        headers::copy_single(raw, headers)?;
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
    let is_base64: Option<bool> = super::optional(fields.is_base64_encoded, "isBase64Encoded")?;
    *response.body_mut() = result_body(&payload, fields.body, is_base64 == Some(true))?;
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

#[cfg(test)]
mod tests;
