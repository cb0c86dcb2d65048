//! Payload format 1.0, both ways: API Gateway REST API proxy integrations, and HTTP API with
//! `payloadFormatVersion` 1.0. AWS documents it in the API Gateway guide ("Set up Lambda proxy
//! integrations in API Gateway": input and output formats, and "Working with AWS Lambda proxy
//! integrations for HTTP APIs" for version 1.0 on HTTP API).
//!
//! The two differ where [`Flavor`] and [`ResultRules`] say: REST has no `version`, a named
//! stage in `requestContext.path`, `binaryMediaTypes`, and rejects unknown result keys.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response};
use indexmap::IndexMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::body::{EventBody, result_body};
use super::headers::{self, AllValues, LastValues};
use super::{
    ACCOUNT_ID, API_ID, EventError, EventTooLarge, IncomingRequest, MAX_EVENT_BYTES, RestOptions,
    domain_prefix, parse_status, protocol, serialize_limited,
};

/// The route lrp stands in for: a greedy proxy resource, which REST matches for every path but
/// `/` (matched by the root resource `/`).
const PROXY_RESOURCE: &str = "/{proxy+}";
/// HTTP API's catch-all route, which payload 1.0 reports as its resource.
const DEFAULT_ROUTE: &str = "$default";
/// REST resources have ids; lrp's one resource has this one.
const RESOURCE_ID: &str = "lrp000";
/// The content type REST gives a result that names none.
const DEFAULT_CONTENT_TYPE: &str = "application/json";

#[derive(Debug, Clone, Copy)]
pub enum Flavor<'a> {
    HttpApi,
    Rest(&'a RestOptions),
}

/// Serializes the request as the payload 1.0 event, refusing past [`MAX_EVENT_BYTES`].
pub fn to_event(
    request: &IncomingRequest<'_>,
    flavor: Flavor<'_>,
) -> Result<Vec<u8>, EventTooLarge> {
    let parts = request.parts;
    let path = request.path;
    let host = request.host.as_str();
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    let (resource, path_parameters) = match flavor {
        Flavor::HttpApi => (DEFAULT_ROUTE, None),
        Flavor::Rest(_) if path == "/" => ("/", None),
        Flavor::Rest(_) => (PROXY_RESOURCE, Some(proxy_parameter(path))),
    };
    let (body, stage, stage_variables) = match flavor {
        Flavor::HttpApi => (
            EventBody::of(&parts.headers, request.body),
            "$default",
            None,
        ),
        Flavor::Rest(options) => (
            EventBody::for_rest(&parts.headers, request.body, &options.binary_media_types),
            options.stage.as_str(),
            (!options.stage_variables.is_empty()).then_some(&options.stage_variables),
        ),
    };
    let context_path = match flavor {
        Flavor::HttpApi => Cow::Borrowed(path),
        // REST's requestContext.path includes the stage; the top-level path does not.
        Flavor::Rest(options) => Cow::Owned(format!("/{}{path}", options.stage)),
    };
    let event = Event {
        version: matches!(flavor, Flavor::HttpApi).then_some("1.0"),
        resource,
        path,
        http_method: parts.method.as_str(),
        headers: LastValues(request),
        multi_value_headers: AllValues(request),
        query_string_parameters: query.as_ref().map(Query::last_values),
        multi_value_query_string_parameters: query.as_ref().map(|q| &q.0),
        path_parameters,
        stage_variables: stage_variables.map(|v| StageVariables(v.as_slice())),
        request_context: RequestContext {
            account_id: ACCOUNT_ID,
            api_id: API_ID,
            domain_name: host,
            domain_prefix: domain_prefix(host),
            extended_request_id: crate::ids::api_request_id(),
            http_method: parts.method.as_str(),
            identity: Identity::new(request),
            path: context_path,
            protocol: protocol(parts.version),
            request_id: request.request_id,
            request_time: super::clf_time(request.received),
            request_time_epoch: crate::ids::epoch_millis(request.received),
            resource_id: match flavor {
                Flavor::HttpApi => None,
                Flavor::Rest(_) => Some(RESOURCE_ID),
            },
            resource_path: resource,
            stage,
        },
        is_base64_encoded: body.as_ref().is_some_and(EventBody::is_base64),
        body,
    };
    serialize_limited(&event, request.body.len(), MAX_EVENT_BYTES)
}

/// Every field is present, with `null` where the request has nothing: payload 1.0 sends
/// `null`, not `{}` and not an absent key, for an empty query, path or stage variables.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    resource: &'static str,
    path: &'a str,
    http_method: &'a str,
    headers: LastValues<'a>,
    multi_value_headers: AllValues<'a>,
    query_string_parameters: Option<IndexMap<&'a str, &'a str>>,
    multi_value_query_string_parameters: Option<&'a IndexMap<Cow<'a, str>, Vec<Cow<'a, str>>>>,
    path_parameters: Option<HashMap<&'static str, Cow<'a, str>>>,
    stage_variables: Option<StageVariables<'a>>,
    request_context: RequestContext<'a>,
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
    extended_request_id: String,
    http_method: &'a str,
    identity: Identity<'a>,
    path: Cow<'a, str>,
    protocol: &'static str,
    request_id: &'a str,
    request_time: super::ClfTime,
    request_time_epoch: u64,
    resource_id: Option<&'static str>,
    resource_path: &'static str,
    stage: &'a str,
}

/// The caller: its address and user agent. The other fields describe IAM and Cognito
/// callers and API keys, which lrp has none of, so they are `null` as AWS sends them then.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    access_key: Option<()>,
    account_id: Option<()>,
    api_key: Option<()>,
    api_key_id: Option<()>,
    caller: Option<()>,
    cognito_authentication_provider: Option<()>,
    cognito_authentication_type: Option<()>,
    cognito_identity_id: Option<()>,
    cognito_identity_pool_id: Option<()>,
    principal_org_id: Option<()>,
    source_ip: &'a str,
    user: Option<()>,
    user_agent: Cow<'a, str>,
    user_arn: Option<()>,
}

impl<'a> Identity<'a> {
    fn new(request: &'a IncomingRequest<'a>) -> Self {
        Identity {
            access_key: None,
            account_id: None,
            api_key: None,
            api_key_id: None,
            caller: None,
            cognito_authentication_provider: None,
            cognito_authentication_type: None,
            cognito_identity_id: None,
            cognito_identity_pool_id: None,
            principal_org_id: None,
            source_ip: request.connection.source_ip(),
            user: None,
            user_agent: request
                .parts
                .headers
                .get(header::USER_AGENT)
                .map_or(Cow::Borrowed(""), headers::value_text),
            user_arn: None,
        }
    }
}

/// `pathParameters` of the greedy `/{proxy+}` resource: the path without its leading slash,
/// percent-decoded.
fn proxy_parameter(path: &str) -> HashMap<&'static str, Cow<'_, str>> {
    let proxy = path.strip_prefix('/').unwrap_or(path);
    let decoded = percent_encoding::percent_decode_str(proxy).decode_utf8_lossy();
    HashMap::from([("proxy", decoded)])
}

/// The query, decoded (`+` as a space), every value of each key in arrival order. `None` when
/// the request has no query.
struct Query<'a>(IndexMap<Cow<'a, str>, Vec<Cow<'a, str>>>);

impl<'a> Query<'a> {
    fn parse(raw: &'a str) -> Option<Self> {
        let mut parameters: IndexMap<Cow<str>, Vec<Cow<str>>> = IndexMap::new();
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            parameters.entry(key).or_default().push(value);
        }
        (!parameters.is_empty()).then_some(Query(parameters))
    }

    /// `queryStringParameters`: when a key repeats, the last value wins.
    fn last_values(&self) -> IndexMap<&str, &str> {
        self.0
            .iter()
            .filter_map(|(key, values)| Some((key.as_ref(), values.last()?.as_ref())))
            .collect()
    }
}

struct StageVariables<'a>(&'a [(String, String)]);

impl Serialize for StageVariables<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

// ---------------------------------------------------------------------------------------------
// Function result → HTTP response

/// How strictly the front door reads a payload 1.0 result.
#[derive(Debug, Clone, Copy)]
pub enum ResultRules {
    /// HTTP API ignores keys it does not know, and decodes base64 on the flag alone.
    HttpApi,
    /// REST refuses a result with any other key ("Malformed Lambda proxy response"), and
    /// decodes a base64 body only when the request's first `Accept` type is binary.
    Rest { decode_base64: bool },
}

/// The result keys payload 1.0 allows (REST also takes the undocumented `base64Encoded`).
const RESULT_KEYS: [&str; 6] = [
    "statusCode",
    "headers",
    "multiValueHeaders",
    "body",
    "isBase64Encoded",
    "base64Encoded",
];

/// Turns a function's result into the response the front door would send. `statusCode` is
/// required: payload 1.0 has no inference.
pub fn from_result(payload: Bytes, rules: ResultRules) -> Result<Response<Bytes>, EventError> {
    let malformed = |why: String| EventError::Malformed(why);
    let fields: HashMap<Cow<str>, &RawValue> = serde_json::from_slice(&payload)
        .map_err(|e| malformed(format!("the result is not a JSON object: {e}")))?;
    if let ResultRules::Rest { .. } = rules
        && let Some(unknown) = fields.keys().find(|k| !RESULT_KEYS.contains(&k.as_ref()))
    {
        return Err(malformed(format!(
            "REST allows only {RESULT_KEYS:?} in a result, not {unknown:?}"
        )));
    }
    let status = fields
        .get("statusCode")
        .ok_or_else(|| malformed("the result has no statusCode".to_owned()))
        .and_then(|raw| parse_status(raw))?;
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    merge_headers(
        response.headers_mut(),
        fields.get("headers").copied(),
        fields.get("multiValueHeaders").copied(),
    )?;
    if !response.headers().contains_key(header::CONTENT_TYPE) {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        );
    }
    let flag = match fields.get("isBase64Encoded") {
        Some(raw) => super::optional::<bool>(Some(raw), "isBase64Encoded")?,
        None => super::optional::<bool>(fields.get("base64Encoded").copied(), "base64Encoded")?,
    };
    let decode = flag == Some(true)
        && match rules {
            ResultRules::HttpApi => true,
            ResultRules::Rest { decode_base64 } => decode_base64,
        };
    *response.body_mut() = result_body(&payload, fields.get("body").copied(), decode)?;
    Ok(response)
}

/// `headers` and `multiValueHeaders` merged, as API Gateway documents: every value of
/// `multiValueHeaders`, then each `headers` value whose name and value it does not already
/// hold.
fn merge_headers(
    headers: &mut HeaderMap,
    single: Option<&RawValue>,
    multi: Option<&RawValue>,
) -> Result<(), EventError> {
    if let Some(multi) = multi {
        headers::copy_multi(multi, headers)?;
    }
    if let Some(single) = single {
        let mut singles = HeaderMap::new();
        headers::copy_single(single, &mut singles)?;
        for (name, value) in &singles {
            if !headers.get_all(name).iter().any(|v| v == value) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
