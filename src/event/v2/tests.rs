use std::net::{IpAddr, Ipv6Addr};

use serde_json::{Value, json};

use super::*;
use crate::event::{Connection, Format};
use crate::router::Host;
use http::Version;
use std::net::Ipv4Addr;
use std::time::UNIX_EPOCH;

use crate::event::testing::{TRACE_ID, header_values, request};

#[test]
fn the_spec_example_becomes_exactly_the_documented_event() {
    let event = request("GET", "/a/b?x=1&x=2&y=%20z")
        .header("Host", "api.example.com")
        .header("Cookie", "s=1; t=2")
        .header("X-Multi", "one")
        .header("X-Multi", "two")
        .header("User-Agent", "curl/8.5")
        .event(&Format::HttpApi);
    let expected: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/v2_spec_example_event.json"
    ))
    .unwrap();
    assert_eq!(event, expected);
}

#[test]
fn raw_path_and_query_are_byte_exact() {
    let event = request(
        "GET",
        "/a%2Fb/%7Euser/caf%C3%A9?q=a%20b&r=%2B+x&empty=&flag",
    )
    .header("Host", "h")
    .event(&Format::HttpApi);
    assert_eq!(event["rawPath"], "/a%2Fb/%7Euser/caf%C3%A9");
    assert_eq!(
        event["requestContext"]["http"]["path"],
        "/a%2Fb/%7Euser/caf%C3%A9"
    );
    assert_eq!(event["rawQueryString"], "q=a%20b&r=%2B+x&empty=&flag");
    assert_eq!(
        event["queryStringParameters"],
        json!({"q": "a b", "r": "+ x", "empty": "", "flag": ""})
    );
}

#[test]
fn no_query_means_empty_raw_query_and_no_parameters() {
    for target in ["/", "/?"] {
        let event = request("GET", target)
            .header("Host", "h")
            .event(&Format::HttpApi);
        assert_eq!(event["rawQueryString"], "", "{target}");
        assert!(event.get("queryStringParameters").is_none(), "{target}");
    }
}

#[test]
fn headers_are_lower_case_joined_and_cookies_move_out() {
    let event = request("GET", "/")
        .header("Host", "Api.Example.com:8080")
        .header("X-Custom", "a")
        .header("x-custom", "b, c")
        .header("Cookie", "a=1; b=2")
        .header("Cookie", "c=3;")
        .event(&Format::HttpApi);
    let headers = &event["headers"];
    assert_eq!(headers["x-custom"], "a,b, c");
    assert_eq!(
        headers["host"], "Api.Example.com:8080",
        "host passes through as sent"
    );
    assert!(headers.get("cookie").is_none());
    assert_eq!(event["cookies"], json!(["a=1", "b=2", "c=3"]));
    assert_eq!(event["requestContext"]["domainName"], "api.example.com");
    assert_eq!(event["requestContext"]["domainPrefix"], "api");
}

#[test]
fn no_cookie_header_means_no_cookies_key() {
    let event = request("GET", "/")
        .header("Host", "h")
        .event(&Format::HttpApi);
    assert!(event.get("cookies").is_none());
}

#[test]
fn forwarding_headers_are_added_and_the_chain_extended() {
    let event = request("GET", "/")
        .header("Host", "h")
        .header("X-Forwarded-For", "198.51.100.1")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Port", "443")
        .header("X-Amzn-Trace-Id", "Root=1-abc")
        .peer(IpAddr::V6(Ipv6Addr::LOCALHOST))
        .event(&Format::HttpApi);
    let headers = &event["headers"];
    assert_eq!(headers["x-forwarded-for"], "198.51.100.1, ::1");
    assert_eq!(headers["x-forwarded-port"], "8080");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-amzn-trace-id"], "Root=1-abc",
        "a client's trace id is kept"
    );
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "::1");
}

#[test]
fn http2_requests_get_host_from_authority_and_protocol_http_2_0() {
    let event = request("POST", "http://svc.local:8080/x")
        .version(Version::HTTP_2)
        .event(&Format::HttpApi);
    assert_eq!(event["requestContext"]["http"]["protocol"], "HTTP/2.0");
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["headers"]["host"], "svc.local");
    assert_eq!(event["requestContext"]["http"]["userAgent"], "");
}

#[test]
fn bodies_are_text_base64_or_omitted() {
    let text = request("POST", "/")
        .header("Host", "h")
        .header("Content-Type", "application/json")
        .body(br#"{"a":"\u00e9"}"#)
        .event(&Format::HttpApi);
    assert_eq!(text["body"], r#"{"a":"\u00e9"}"#);
    assert_eq!(text["isBase64Encoded"], false);

    let form = request("POST", "/")
        .header("Host", "h")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(b"a=1&b=2")
        .event(&Format::HttpApi);
    assert_eq!(form["body"], "YT0xJmI9Mg==");
    assert_eq!(form["isBase64Encoded"], true);

    let empty = request("GET", "/")
        .header("Host", "h")
        .event(&Format::HttpApi);
    assert!(empty.get("body").is_none());
    assert_eq!(empty["isBase64Encoded"], false);
}

#[test]
fn request_ids_and_times_come_from_the_request() {
    let event = request("GET", "/")
        .header("Host", "h")
        .event(&Format::HttpApi);
    let context = &event["requestContext"];
    assert_eq!(context["requestId"], "QQCtFipSIAMEPNQ=");
    assert_eq!(context["time"], "12/Mar/2020:19:03:58 +0000");
    assert_eq!(context["timeEpoch"], 1_584_039_838_000u64);
    assert_eq!(event["headers"]["x-amzn-trace-id"], TRACE_ID);
}

#[test]
fn a_rust_function_reads_the_event_with_aws_lambda_events() {
    use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    let bytes = request("PUT", "/items/42?x=1&x=2")
        .header("Host", "svc.example.com")
        .header("Cookie", "s=1")
        .header("Content-Type", "image/png")
        .body(&[0, 1, 2, 255])
        .event_bytes(&Format::HttpApi);
    let parsed: ApiGatewayV2httpRequest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(parsed.version.as_deref(), Some("2.0"));
    assert_eq!(parsed.raw_path.as_deref(), Some("/items/42"));
    assert_eq!(parsed.raw_query_string.as_deref(), Some("x=1&x=2"));
    assert_eq!(parsed.cookies, Some(vec!["s=1".to_owned()]));
    assert_eq!(parsed.request_context.http.method, http::Method::PUT);
    assert_eq!(parsed.request_context.time_epoch, 1_584_039_838_000);
    // lambda_http's reader splits HTTP API's comma-joined values back into a list.
    assert_eq!(
        parsed.query_string_parameters.all("x"),
        Some(vec!["1", "2"])
    );
    assert!(parsed.is_base64_encoded);
    assert_eq!(parsed.body.as_deref(), Some("AAEC/w=="));
    assert_eq!(parsed.headers["host"], "svc.example.com");
}

// ---------------------------------------------------------------------------------------------
// Results

fn respond(result: &str) -> Result<Response<Bytes>, EventError> {
    from_result(Bytes::copy_from_slice(result.as_bytes()))
}

#[test]
fn a_full_result_maps_every_documented_field() {
    let response = respond(include_str!("../../../tests/fixtures/v2_result_full.json")).unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header_values(&response, "content-type"),
        ["application/json"]
    );
    assert_eq!(header_values(&response, "x-number"), ["42"]);
    assert_eq!(header_values(&response, "x-flag"), ["true"]);
    assert_eq!(
        header_values(&response, "set-cookie"),
        ["a=1; Path=/", "b=2; Path=/x; HttpOnly"]
    );
    for absent in [
        "x-null",
        "x-ignored",
        "connection",
        "transfer-encoding",
        "content-length",
    ] {
        assert!(!response.headers().contains_key(absent), "{absent}");
    }
    assert_eq!(response.body().as_ref(), br#"{"ok":true}"#);
}

#[test]
fn a_result_without_content_type_is_plain_text() {
    let response = respond(r#"{"statusCode": 404, "body": "nope"}"#).unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header_values(&response, "content-type"),
        ["text/plain; charset=utf-8"]
    );
    assert_eq!(response.body().as_ref(), b"nope");
}

#[test]
fn missing_body_is_empty_and_escapes_are_decoded() {
    let response = respond(r#"{"statusCode": 204}"#).unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.body().is_empty());
    let response = respond(r#"{"statusCode": 200, "body": "line\n\u00e9", "body2": 1}"#).unwrap();
    assert_eq!(response.body().as_ref(), "line\né".as_bytes());
    let response =
        respond(r#"{"statusCode": 200, "body": null, "isBase64Encoded": null}"#).unwrap();
    assert!(response.body().is_empty());
}

#[test]
fn base64_bodies_decode_with_or_without_padding() {
    for body in ["AAEC/w==", "AAEC/w"] {
        let response = respond(&format!(
            r#"{{"statusCode": 200, "body": "{body}", "isBase64Encoded": true}}"#
        ))
        .unwrap();
        assert_eq!(response.body().as_ref(), [0, 1, 2, 255]);
    }
    let plain =
        respond(r#"{"statusCode": 200, "body": "AAEC/w==", "isBase64Encoded": false}"#).unwrap();
    assert_eq!(plain.body().as_ref(), b"AAEC/w==");
}

#[test]
fn results_without_status_code_are_inferred_as_json() {
    for result in [
        r#""Hello, world!""#,
        r#"{"message": "x"}"#,
        "42",
        "[1, 2]",
        "null",
        r#" {"body": "not used", "headers": {"x": "y"}} "#,
    ] {
        let response = respond(result).unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{result}");
        assert_eq!(
            header_values(&response, "content-type"),
            ["application/json"]
        );
        assert_eq!(
            response.body().as_ref(),
            result.as_bytes(),
            "the raw JSON text"
        );
        assert!(!response.headers().contains_key("x"));
    }
    assert_eq!(respond(r#""Hello, world!""#).unwrap().body().len(), 15);
}

#[test]
fn malformed_results_are_errors() {
    for result in [
        "",
        "not json",
        "{\"statusCode\": 200",
        r#"{"statusCode": 99}"#,
        r#"{"statusCode": 100}"#,
        r#"{"statusCode": 101}"#,
        r#"{"statusCode": "199"}"#,
        r#"{"statusCode": 600}"#,
        r#"{"statusCode": "abc"}"#,
        r#"{"statusCode": true}"#,
        r#"{"statusCode": 200.5}"#,
        r#"{"statusCode": 200, "body": {"a": 1}}"#,
        r#"{"statusCode": 200, "body": "!!", "isBase64Encoded": true}"#,
        r#"{"statusCode": 200, "isBase64Encoded": "yes"}"#,
        r#"{"statusCode": 200, "headers": ["a"]}"#,
        r#"{"statusCode": 200, "headers": {"a": ["b"]}}"#,
        r#"{"statusCode": 200, "cookies": "a=1"}"#,
        r#"{"statusCode": 200, "cookies": [1]}"#,
    ] {
        assert!(
            matches!(respond(result), Err(EventError::Malformed(_))),
            "{result:?} should be malformed"
        );
    }
}

#[test]
fn invalid_header_names_and_values_are_dropped_not_fatal() {
    let response = respond(
        r#"{"statusCode": 200, "headers": {"bad name": "x", "x-bad": "a\nb", "x-ok": "y"}}"#,
    )
    .unwrap();
    assert_eq!(header_values(&response, "x-ok"), ["y"]);
    assert!(!response.headers().contains_key("x-bad"));
}

#[test]
fn an_event_over_the_limit_is_refused_without_being_built_whole() {
    // 5 MB of binary is 6.7 MB as base64: under the body limit, over the event limit.
    let (parts, ()) = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("Host", "h")
        .header("Content-Type", "application/octet-stream")
        .body(())
        .unwrap()
        .into_parts();
    let host = Host::parse("h").unwrap();
    let connection = Connection::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    let incoming = |body: &'static [u8]| IncomingRequest {
        parts: &parts,
        path: "/",
        body,
        host: &host,
        connection: &connection,
        request_id: "id",
        trace_id: TRACE_ID,
        received: UNIX_EPOCH,
    };
    let big: &'static [u8] = Box::leak(vec![0u8; 5 * 1024 * 1024].into_boxed_slice());
    assert_eq!(
        to_event(&incoming(big), Flavor::HttpApi),
        Err(EventTooLarge)
    );
    let fits: &'static [u8] = Box::leak(vec![0u8; 4 * 1024 * 1024].into_boxed_slice());
    let event = to_event(&incoming(fits), Flavor::HttpApi).unwrap();
    assert!(event.len() <= crate::event::MAX_EVENT_BYTES);
}

// ---------------------------------------------------------------------------------------------
// Function URLs

#[test]
fn the_function_url_documentation_example_becomes_exactly_that_event() {
    let event = request(
        "POST",
        "/my/path?parameter1=value1&parameter1=value2&parameter2=value",
    )
    .header("Header1", "value1")
    .header("Header2", "value1")
    .header("Header2", "value2")
    .header("Cookie", "cookie1; cookie2")
    .header("Content-Type", "text/plain")
    .header("Host", "abcdefghijklmnop.lambda-url.us-west-2.on.aws")
    .header("User-Agent", "agent")
    .body(b"Hello from client!")
    .event(&Format::FunctionUrl);
    let expected: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/function_url_doc_example_event.json"
    ))
    .unwrap();
    assert_eq!(event, expected);
}

#[test]
fn a_rust_function_reads_a_function_url_event_with_aws_lambda_events() {
    use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
    let bytes = request("GET", "/p?x=1")
        .header("Host", "id.lambda-url.eu-west-1.on.aws")
        .header("Cookie", "s=1")
        .event_bytes(&Format::FunctionUrl);
    let parsed: LambdaFunctionUrlRequest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(parsed.raw_path.as_deref(), Some("/p"));
    assert_eq!(parsed.cookies, Some(vec!["s=1".to_owned()]));
    assert_eq!(parsed.headers["cookie"], "s=1");
    assert_eq!(parsed.request_context.apiid.as_deref(), Some("id"));
}
