use serde_json::{Value, json};

use super::*;
use crate::event::testing::{REQUEST_ID, header_values, request};
use crate::event::{Format, RestOptions};

fn rest() -> Format {
    Format::Rest(RestOptions {
        stage: "testStage".into(),
        stage_variables: vec![("stageVariableName".into(), "stageVariableValue".into())],
        binary_media_types: vec!["image/png".into()],
    })
}

/// The event without `extendedRequestId`, which is random, after checking its shape.
fn without_extended_id(mut event: Value) -> Value {
    let context = event["requestContext"].as_object_mut().unwrap();
    let id = context.remove("extendedRequestId").unwrap();
    assert_eq!(id.as_str().map(str::len), Some(16), "{id}");
    event
}

#[test]
fn the_rest_documentation_example_becomes_exactly_that_event() {
    let event = request(
        "POST",
        "/hello/world?name=me&multivalueName=you&multivalueName=me",
    )
    .header("Accept", "*/*")
    .header("Accept-Encoding", "gzip, deflate")
    .header("Cache-Control", "no-cache")
    .header("Content-Type", "application/json")
    .header("Host", "gy415nuibc.execute-api.us-east-1.amazonaws.com")
    .header("User-Agent", "PostmanRuntime/2.4.5")
    .body(b"{\r\n\t\"a\": 1\r\n}")
    .event(&rest());
    let expected: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/rest_doc_example_event.json"
    ))
    .unwrap();
    assert_eq!(without_extended_id(event), expected);
}

#[test]
fn the_http_api_1_0_documentation_example_becomes_exactly_that_event() {
    let event = request(
        "GET",
        "/my/path?parameter1=value1&parameter1=value2&parameter2=value",
    )
    .header("Header1", "value1")
    .header("Header2", "value1")
    .header("Header2", "value2")
    .header("Content-Type", "text/plain")
    .header("Host", "id.execute-api.us-east-1.amazonaws.com")
    .body(b"Hello from Lambda!")
    .event(&Format::HttpApiV1);
    let expected: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/http_api_v1_doc_example_event.json"
    ))
    .unwrap();
    assert_eq!(without_extended_id(event), expected);
}

#[test]
fn no_query_path_or_body_is_null_not_empty_or_absent() {
    for format in [rest(), Format::HttpApiV1] {
        let event = request("GET", "/").header("Host", "h").event(&format);
        for field in [
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "pathParameters",
            "body",
        ] {
            assert_eq!(event.get(field), Some(&Value::Null), "{field}");
        }
        assert_eq!(event["isBase64Encoded"], false);
    }
    let root = request("GET", "/").header("Host", "h").event(&rest());
    assert_eq!(
        (root["resource"].as_str(), root["path"].as_str()),
        (Some("/"), Some("/"))
    );
    let no_variables = Format::Rest(RestOptions {
        stage: "Prod".into(),
        stage_variables: Vec::new(),
        binary_media_types: Vec::new(),
    });
    let event = request("GET", "/").header("Host", "h").event(&no_variables);
    assert_eq!(event["stageVariables"], Value::Null);
    assert!(
        event.get("version").is_none(),
        "REST events have no version"
    );
}

#[test]
fn the_path_is_sent_as_received_and_the_proxy_parameter_decoded() {
    let event = request("GET", "/a%2Fb/caf%C3%A9?q=a+b%26c&q=2&flag")
        .header("Host", "h")
        .event(&rest());
    assert_eq!(event["path"], "/a%2Fb/caf%C3%A9");
    assert_eq!(
        event["requestContext"]["path"],
        "/testStage/a%2Fb/caf%C3%A9"
    );
    assert_eq!(event["pathParameters"], json!({"proxy": "a/b/café"}));
    assert_eq!(
        event["queryStringParameters"],
        json!({"q": "2", "flag": ""})
    );
    assert_eq!(
        event["multiValueQueryStringParameters"],
        json!({"q": ["a b&c", "2"], "flag": [""]})
    );
}

#[test]
fn repeated_headers_keep_the_last_value_and_every_value_in_the_multi_map() {
    let event = request("GET", "/")
        .header("Host", "h")
        .header("X-Multi", "one")
        .header("X-Multi", "two")
        .header("Cookie", "a=1")
        .header("Cookie", "b=2")
        .event(&Format::HttpApiV1);
    assert_eq!(event["headers"]["x-multi"], "two");
    assert_eq!(event["multiValueHeaders"]["x-multi"], json!(["one", "two"]));
    assert_eq!(
        event["headers"]["cookie"], "b=2",
        "payload 1.0 keeps cookie as a header"
    );
    assert_eq!(event["multiValueHeaders"]["cookie"], json!(["a=1", "b=2"]));
    assert!(event.get("cookies").is_none());
}

#[test]
fn rest_bodies_are_base64_only_for_binary_media_types() {
    let png = request("POST", "/")
        .header("Host", "h")
        .header("Content-Type", "image/png")
        .body(&[0x89, b'P'])
        .event(&rest());
    assert_eq!(
        (png["body"].as_str(), png["isBase64Encoded"].as_bool()),
        (Some("iVA="), Some(true))
    );
    // Not a binary media type: text, even where HTTP API would send base64.
    let form = request("POST", "/")
        .header("Host", "h")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(b"a=1")
        .event(&rest());
    assert_eq!(
        (form["body"].as_str(), form["isBase64Encoded"].as_bool()),
        (Some("a=1"), Some(false))
    );
    let http_api = request("POST", "/")
        .header("Host", "h")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(b"a=1")
        .event(&Format::HttpApiV1);
    assert_eq!(http_api["isBase64Encoded"], true);
}

#[test]
fn consumers_read_the_events_with_aws_lambda_events() {
    use aws_lambda_events::apigw::ApiGatewayProxyRequest;
    for format in [rest(), Format::HttpApiV1] {
        let bytes = request("PUT", "/items/42?x=1&x=2")
            .header("Host", "svc.example.com")
            .header("Content-Type", "image/png")
            .body(&[0, 1, 2, 255])
            .event_bytes(&format);
        let parsed: ApiGatewayProxyRequest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.http_method, http::Method::PUT);
        assert_eq!(parsed.path.as_deref(), Some("/items/42"));
        assert_eq!(
            parsed.multi_value_query_string_parameters.all("x"),
            Some(vec!["1", "2"])
        );
        assert_eq!(
            parsed.request_context.request_id.as_deref(),
            Some(REQUEST_ID)
        );
        assert_eq!(parsed.request_context.request_time_epoch, 1_584_039_838_000);
        assert_eq!(parsed.headers["host"], "svc.example.com");
        assert!(parsed.is_base64_encoded);
        assert_eq!(parsed.body.as_deref(), Some("AAEC/w=="));
    }
}

// ---------------------------------------------------------------------------------------------
// Results

fn respond(result: &str, rules: ResultRules) -> Result<Response<Bytes>, EventError> {
    from_result(Bytes::copy_from_slice(result.as_bytes()), rules)
}

const REST: ResultRules = ResultRules::Rest {
    decode_base64: false,
};

#[test]
fn headers_and_multi_value_headers_merge_as_documented() {
    let response = respond(
        r#"{"statusCode": 201,
            "headers": {"x-a": "1", "x-b": "only-single", "content-type": "text/html"},
            "multiValueHeaders": {"x-a": ["1", "2"], "set-cookie": ["a=1", "b=2"]},
            "body": "<p>hi</p>"}"#,
        REST,
    )
    .unwrap();
    assert_eq!(response.status(), 201);
    // The same pair in both appears once; every other value is kept.
    assert_eq!(header_values(&response, "x-a"), ["1", "2"]);
    assert_eq!(header_values(&response, "x-b"), ["only-single"]);
    assert_eq!(header_values(&response, "set-cookie"), ["a=1", "b=2"]);
    assert_eq!(header_values(&response, "content-type"), ["text/html"]);
    assert_eq!(response.body(), "<p>hi</p>");
}

#[test]
fn a_result_without_content_type_is_json_and_status_is_required() {
    let response = respond(r#"{"statusCode": "200", "body": "{}"}"#, REST).unwrap();
    assert_eq!(
        header_values(&response, "content-type"),
        ["application/json"]
    );
    for rules in [REST, ResultRules::HttpApi] {
        assert!(matches!(
            respond(r#"{"body": "x"}"#, rules),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            respond(r#""just text""#, rules),
            Err(EventError::Malformed(_))
        ));
    }
}

#[test]
fn rest_refuses_unknown_keys_and_http_api_ignores_them() {
    let with_cookies = r#"{"statusCode": 200, "body": "x", "cookies": ["a=1"]}"#;
    assert!(
        matches!(respond(with_cookies, REST), Err(EventError::Malformed(m)) if m.contains("cookies"))
    );
    let response = respond(with_cookies, ResultRules::HttpApi).unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    // The undocumented base64Encoded is one of REST's keys.
    respond(r#"{"statusCode": 200, "base64Encoded": false}"#, REST).unwrap();
}

#[test]
fn rest_decodes_base64_only_when_the_first_accept_type_is_binary() {
    let result = r#"{"statusCode": 200, "body": "aGk=", "isBase64Encoded": true}"#;
    assert_eq!(respond(result, REST).unwrap().body(), "aGk=");
    let decoding = ResultRules::Rest {
        decode_base64: true,
    };
    assert_eq!(respond(result, decoding).unwrap().body(), "hi");
    assert_eq!(respond(result, ResultRules::HttpApi).unwrap().body(), "hi");
    assert!(
        respond(
            r#"{"statusCode": 200, "body": {"a": 1}}"#,
            ResultRules::HttpApi
        )
        .is_err()
    );
}
