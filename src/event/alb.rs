//! Application Load Balancer target groups, both ways, as the Elastic Load Balancing guide
//! documents them ("Lambda functions as targets"): the query is passed as sent, not decoded;
//! a target group sends either single-value maps (the last value wins) or, with
//! `lambda.multi_value_headers.enabled`, multi-value maps, never both; requests and results are
//! limited to 1 MB.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use http::Response;
use http::StatusCode;
use http::header::{self, HeaderValue};
use hyper::ext::ReasonPhrase;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::value::RawValue;

use super::body::{EventBody, result_body};
use super::headers::{self, AllValues, LastValues};
use super::{EventError, EventTooLarge, IncomingRequest, parse_status, serialize_limited};

/// The largest request body and result an ALB passes to or takes from Lambda.
pub const ALB_LIMIT: usize = 1024 * 1024;
/// A target group ARN in the documented shape; lrp has no real one.
const TARGET_GROUP_ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/lrp/0000000000000000";
/// What ALB gives a result that names no content type.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Serializes the request as an ALB event. A body over 1 MB is refused, as ALB refuses it.
pub fn to_event(
    request: &IncomingRequest<'_>,
    multi_value: bool,
) -> Result<Vec<u8>, EventTooLarge> {
    if request.body.len() > ALB_LIMIT {
        return Err(EventTooLarge);
    }
    let parts = request.parts;
    let query = raw_query(parts.uri.query().unwrap_or(""));
    let body = EventBody::for_alb(&parts.headers, request.body);
    let event = Event {
        request_context: Context {
            elb: Elb {
                target_group_arn: TARGET_GROUP_ARN,
            },
        },
        http_method: parts.method.as_str(),
        path: request.path,
        query_string_parameters: (!multi_value).then(|| last_values(&query)),
        multi_value_query_string_parameters: multi_value.then_some(&query),
        headers: (!multi_value).then_some(LastValues(request)),
        multi_value_headers: multi_value.then_some(AllValues(request)),
        is_base64_encoded: body.as_ref().is_some_and(EventBody::is_base64),
        // ALB sends an empty string for no body.
        body: body.unwrap_or(EventBody::Text(Cow::Borrowed(""))),
    };
    // The body is at most 1 MB; its event, base64 and headers included, stays far below 6 MB.
    serialize_limited(&event, request.body.len(), super::MAX_EVENT_BYTES)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    request_context: Context,
    http_method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string_parameters: Option<IndexMap<&'a str, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_value_query_string_parameters: Option<&'a IndexMap<&'a str, Vec<&'a str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<LastValues<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_value_headers: Option<AllValues<'a>>,
    is_base64_encoded: bool,
    body: EventBody<'a>,
}

#[derive(Serialize)]
struct Context {
    elb: Elb,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Elb {
    target_group_arn: &'static str,
}

/// The query's keys and values exactly as sent ("If the query parameters are URL-encoded, the
/// load balancer does not decode them"); a key without `=` has the value `""`.
fn raw_query(raw: &str) -> IndexMap<&str, Vec<&str>> {
    let mut parameters: IndexMap<&str, Vec<&str>> = IndexMap::new();
    for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        parameters.entry(key).or_default().push(value);
    }
    parameters
}

fn last_values<'a>(query: &IndexMap<&'a str, Vec<&'a str>>) -> IndexMap<&'a str, &'a str> {
    query
        .iter()
        .filter_map(|(key, values)| Some((*key, *values.last()?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Function result → HTTP response

/// Turns a function's result into the response ALB would send. Only the header field of the
/// target group's mode counts; the other is ignored (the Rust `lambda_http` crate returns
/// both for that reason: lambda-http/src/response.rs).
pub fn from_result(payload: Bytes, multi_value: bool) -> Result<Response<Bytes>, EventError> {
    if payload.len() > ALB_LIMIT {
        return Err(EventError::TooLarge(ALB_LIMIT));
    }
    let malformed = |why: String| EventError::Malformed(why);
    let fields: HashMap<Cow<str>, &RawValue> = serde_json::from_slice(&payload)
        .map_err(|e| malformed(format!("the result is not a JSON object: {e}")))?;
    let status = fields
        .get("statusCode")
        .ok_or_else(|| malformed("the result has no statusCode".to_owned()))
        .and_then(|raw| parse_status(raw))?;
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    let used = match multi_value {
        true => "multiValueHeaders",
        false => "headers",
    };
    if let Some(raw) = fields.get(used) {
        let headers = response.headers_mut();
        match multi_value {
            true => headers::copy_multi(raw, headers)?,
            false => headers::copy_single(raw, headers)?,
        }
    }
    if !response.headers().contains_key(header::CONTENT_TYPE) {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        );
    }
    let description: Option<Cow<str>> = super::optional(
        fields.get("statusDescription").copied(),
        "statusDescription",
    )?;
    if let Some(reason) = description
        .as_deref()
        .and_then(|d| reason_phrase(d, status))
    {
        response.extensions_mut().insert(reason);
    }
    let decode: Option<bool> =
        super::optional(fields.get("isBase64Encoded").copied(), "isBase64Encoded")?;
    *response.body_mut() =
        result_body(&payload, fields.get("body").copied(), decode == Some(true))?;
    Ok(response)
}

/// The reason phrase in a `statusDescription` such as `200 OK` (the status line's text after
/// the code), when it is one HTTP/1.1 can carry.
fn reason_phrase(description: &str, status: StatusCode) -> Option<ReasonPhrase> {
    let text = description.trim();
    let text = text
        .strip_prefix(status.as_str())
        .map_or(text, str::trim_start);
    (!text.is_empty())
        .then(|| ReasonPhrase::try_from(text.as_bytes().to_vec()).ok())
        .flatten()
}

#[cfg(test)]
mod tests;
