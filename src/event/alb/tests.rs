use serde_json::{Value, json};

use super::*;
use crate::event::Format;
use crate::event::testing::request;

const SINGLE: Format = Format::Alb {
    multi_value_headers: false,
};
const MULTI: Format = Format::Alb {
    multi_value_headers: true,
};

#[test]
fn the_elb_guide_example_becomes_exactly_that_event() {
    let event = request("GET", "/lambda?query=1234ABCD")
        .header("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,image/apng,*/*;q=0.8")
        .header("Accept-Encoding", "gzip")
        .header("Accept-Language", "en-US,en;q=0.9")
        .header("Connection", "keep-alive")
        .header("Host", "lambda-alb-123578498.us-east-1.elb.amazonaws.com")
        .header("Upgrade-Insecure-Requests", "1")
        .header("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/71.0.3578.98 Safari/537.36")
        .event(&SINGLE);
    let expected: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/alb_doc_example_event.json"
    ))
    .unwrap();
    assert_eq!(event, expected);
}

#[test]
fn the_query_is_passed_as_sent_and_the_last_value_wins() {
    let event = request("GET", "/a%2Fb?myKey=%3FshowAll%3Dtrue&k=a+b&k=2&flag")
        .header("Host", "h")
        .header("X-Multi", "one")
        .header("X-Multi", "two")
        .event(&SINGLE);
    assert_eq!(event["path"], "/a%2Fb");
    assert_eq!(
        event["queryStringParameters"],
        json!({"myKey": "%3FshowAll%3Dtrue", "k": "2", "flag": ""})
    );
    assert_eq!(event["headers"]["x-multi"], "two");
    assert!(event.get("multiValueHeaders").is_none());
    assert!(event.get("multiValueQueryStringParameters").is_none());
}

#[test]
fn multi_value_mode_sends_only_the_multi_value_maps() {
    let event = request("GET", "/?k=a+b&k=2")
        .header("Host", "h")
        .header("Cookie", "a=1")
        .header("Cookie", "b=2")
        .event(&MULTI);
    assert_eq!(
        event["multiValueQueryStringParameters"],
        json!({"k": ["a+b", "2"]})
    );
    assert_eq!(event["multiValueHeaders"]["cookie"], json!(["a=1", "b=2"]));
    assert!(event.get("headers").is_none());
    assert!(event.get("queryStringParameters").is_none());
    let empty = request("GET", "/").header("Host", "h").event(&MULTI);
    assert_eq!(empty["multiValueQueryStringParameters"], json!({}));
    assert_eq!(empty["body"], "");
}

#[test]
fn bodies_over_one_megabyte_are_refused() {
    let fits = request("POST", "/")
        .header("Host", "h")
        .body(&vec![b'a'; ALB_LIMIT]);
    assert!(fits.try_event_bytes(&SINGLE).is_some());
    let over = request("POST", "/")
        .header("Host", "h")
        .body(&vec![b'a'; ALB_LIMIT + 1]);
    assert!(over.try_event_bytes(&SINGLE).is_none());
}

#[test]
fn consumers_read_the_events_with_aws_lambda_events() {
    use aws_lambda_events::alb::AlbTargetGroupRequest;
    for format in [SINGLE, MULTI] {
        let bytes = request("POST", "/items?x=1")
            .header("Host", "svc")
            .header("Content-Type", "application/octet-stream")
            .body(&[0, 255])
            .event_bytes(&format);
        let parsed: AlbTargetGroupRequest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.http_method, http::Method::POST);
        assert_eq!(parsed.path.as_deref(), Some("/items"));
        assert!(parsed.is_base64_encoded);
        assert_eq!(parsed.body.as_deref(), Some("AP8="));
        assert!(parsed.request_context.elb.target_group_arn.is_some());
    }
}

// ---------------------------------------------------------------------------------------------
// Results

fn respond(result: &str, multi_value: bool) -> Result<Response<Bytes>, EventError> {
    from_result(Bytes::copy_from_slice(result.as_bytes()), multi_value)
}

#[test]
fn the_guide_results_map_status_description_headers_and_body() {
    let response = respond(
        r#"{"statusCode": 200, "statusDescription": "200 OK", "isBase64Encoded": false,
            "headers": {"Content-Type": "text/html"}, "body": "<h1>Hello from Lambda!</h1>"}"#,
        false,
    )
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert_eq!(response.body(), "<h1>Hello from Lambda!</h1>");
    let reason = response.extensions().get::<ReasonPhrase>().unwrap();
    assert_eq!(reason.as_bytes(), b"OK");

    let response = respond(
        r#"{"statusCode": 200, "multiValueHeaders": {"Set-cookie": ["a=1", "b=2"]}}"#,
        true,
    )
    .unwrap();
    assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(response.body(), "");
}

#[test]
fn only_the_header_field_of_the_mode_counts_and_oversized_results_are_refused() {
    let both = r#"{"statusCode": 200, "headers": {"a": "single"},
                   "multiValueHeaders": {"a": ["m1", "m2"]}}"#;
    let values = |response: Response<Bytes>| -> Vec<String> {
        let values = response.headers().get_all("a").iter();
        values.map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    assert_eq!(values(respond(both, false).unwrap()), ["single"]);
    assert_eq!(values(respond(both, true).unwrap()), ["m1", "m2"]);
    let huge = format!(
        r#"{{"statusCode": 200, "body": "{}"}}"#,
        "x".repeat(ALB_LIMIT)
    );
    assert_eq!(
        respond(&huge, false).err(),
        Some(EventError::TooLarge(ALB_LIMIT))
    );
    assert!(respond(r#"{"body": "no status"}"#, false).is_err());
}
