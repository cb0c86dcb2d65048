//! Payload format 2.0, both ways: API Gateway HTTP API, and Lambda function URLs, which send
//! "the same schema as payload format 2.0" with a few differences (see [`Flavor`]). AWS
//! documents both in the API Gateway guide ("Working with AWS Lambda proxy integrations for
//! HTTP APIs") and the Lambda guide ("Invoking Lambda function URLs").

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::body::{EventBody, result_body};
use super::headers::{self, JoinedValues, cookies};
use super::{
    ACCOUNT_ID, API_ID, EventError, EventTooLarge, IncomingRequest, MAX_EVENT_BYTES, domain_prefix,
    parse_status, protocol, serialize_limited,
};

const ROUTE_KEY: &str = "$default";
const STAGE: &str = "$default";
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
pub fn to_event(request: &IncomingRequest<'_>, flavor: Flavor) -> Result<Vec<u8>, EventTooLarge> {
    let parts = request.parts;
    let raw_path = request.path;
    let raw_query = parts.uri.query().unwrap_or("");
    let body = EventBody::of(&parts.headers, request.body);
    let host = request.host.as_str();
    let event = Event {
        version: "2.0",
        route_key: ROUTE_KEY,
        raw_path,
        raw_query_string: raw_query,
        cookies: cookies(&parts.headers),
        headers: JoinedValues {
            request,
            // HTTP API moves `cookie` to `cookies`; function URLs keep it in both.
            skip_cookie: flavor == Flavor::HttpApi,
        },
        query_string_parameters: query_parameters(raw_query),
        request_context: RequestContext {
            account_id: ACCOUNT_ID,
            api_id: match flavor {
                Flavor::HttpApi => API_ID,
                Flavor::FunctionUrl => domain_prefix(host),
            },
            domain_name: host,
            domain_prefix: domain_prefix(host),
            http: HttpDescription {
                method: parts.method.as_str(),
                path: raw_path,
                protocol: protocol(parts.version),
                source_ip: request.connection.source_ip(),
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
        is_base64_encoded: body.as_ref().is_some_and(EventBody::is_base64),
        body,
    };
    serialize_limited(&event, request.body.len(), MAX_EVENT_BYTES)
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
    headers: JoinedValues<'a>,
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
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpDescription<'a>,
    request_id: &'a str,
    route_key: &'static str,
    stage: &'static str,
    time: super::ClfTime,
    time_epoch: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpDescription<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    source_ip: &'a str,
    user_agent: Cow<'a, str>,
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
