//! Every event format through real consumers: the Rust `lambda_http` crate, the Lambda Web
//! Adapter in front of a plain web app, and awslambdaric with a handler that returns the raw
//! event. One request, sent through each format, must reach the web handler identically, and
//! each format's own fields must be there. Then each front door's answers to failures.

mod common;

use std::path::{Path, PathBuf};

use common::fake_rie::FakeRie;
use common::{Lrp, Reply, example_binary, free_port, send, tool};
use serde_json::{Value, json};

/// Each format as a rule writes it. REST passes binary bodies as base64 only for its binary
/// media types, and ALB sends every value of a repeated header only in multi-value mode, so
/// those are set: the test is about the same request arriving the same way.
const FORMATS: [(&str, &str); 5] = [
    ("http-api", "http-api"),
    ("http-api-v1", "http-api-v1"),
    ("rest", "{type: rest, binary_media_types: ['*/*']}"),
    ("alb", "{type: alb, multi_value_headers: true}"),
    ("function-url", "function-url"),
];

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// A `command` rule per format for one consumer; `extra(format)` adds keys to each.
fn rules(consumer: &str, command: &[String], extra: impl Fn(&str) -> String) -> String {
    FORMATS
        .iter()
        .map(|(name, event)| {
            format!(
                "  - hostname: {name}.{consumer}\n    command: {command:?}\n    \
                 working_dir: {:?}\n    event: {event}\n{}",
                peers().display().to_string(),
                extra(name)
            )
        })
        .collect()
}

fn lambda_http_rules() -> String {
    let binary = example_binary("http-echo").display().to_string();
    rules("lambda-http", &[binary], |_| String::new())
}

fn lwa_rules() -> String {
    let bootstrap = peers().join("lwa_bootstrap.sh").display().to_string();
    let python = tool("python").display().to_string();
    let adapter = tool("lambda-adapter").display().to_string();
    rules("lwa", &[bootstrap], |_| {
        // Each format's instance runs its own web app, on a port of its own.
        let port = free_port();
        format!(
            "    env: {{PORT: {port}, AWS_LWA_PORT: {port}, PYTHON: {python:?}, LAMBDA_ADAPTER: {adapter:?}}}\n"
        )
    })
}

fn awslambdaric_rules() -> String {
    let python = tool("python").display().to_string();
    let command = [
        python,
        "-m".into(),
        "awslambdaric".into(),
        "python_function.echo_event".into(),
    ];
    rules("awslambdaric", &command, |_| String::new())
}

/// The one request every format carries: an encoded path, a repeated and an encoded query
/// key, a repeated header, two cookies, and a binary body.
async fn the_request(lrp: &Lrp, host: &str) -> Reply {
    let request = lrp
        .request("POST", host, "/items/a%20b?x=1&x=2&y=%2B&z=a+b")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("cookie", "a=1; b=2")
        .header("content-type", "application/octet-stream");
    send(request, vec![0u8, 1, 2, 255, 10]).await
}

/// What a web handler saw, in a form every format can be compared in. Differences the formats
/// document are folded away here: payload 2.0 joins a repeated header's values with `,` into
/// one value; HTTP API sends cookies in `cookies`, which `lambda_http` joins back into one
/// `cookie` header with `;` (payload 1.0 and ALB pass the client's header as sent); and
/// payload 1.0 and ALB carry the query as maps, which keep no order between keys.
fn as_seen(echo: &Value) -> Value {
    let headers = &echo["headers"];
    let joined = |name: &str| -> String {
        let values = headers[name].as_array().cloned().unwrap_or_default();
        let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        values.join(",")
    };
    let cookie = joined("cookie");
    let cookies: Vec<&str> = cookie.split(';').map(str::trim).collect();
    let mut query = echo["query"].as_array().cloned().unwrap_or_default();
    // Stable: the values of one key stay in their order.
    query.sort_by_key(|pair| pair[0].as_str().unwrap_or("").to_owned());
    json!({
        "method": echo["method"],
        "path": echo["path"],
        "query": query,
        "x-multi": joined("x-multi"),
        "cookies": cookies,
        "content-type": joined("content-type"),
        "body": echo["body"],
    })
}

/// What the handler should see through `format`. Payload 1.0 sends a repeated header both in
/// `headers` (the last value) and in `multiValueHeaders` (every value); `lambda_http`, and the
/// Lambda Web Adapter built on it, let `headers` win, so the handler sees the last value only.
fn expected_view(format: &str) -> Value {
    let x_multi = match format {
        "http-api-v1" | "rest" => "two",
        _ => "one,two",
    };
    json!({
        "method": "POST",
        "path": "/items/a%20b",
        "query": [["x", "1"], ["x", "2"], ["y", "+"], ["z", "a b"]],
        "x-multi": x_multi,
        "cookies": ["a=1", "b=2"],
        "content-type": "application/octet-stream",
        "body": "AAEC/wo=",
    })
}

async fn a_web_handler_sees_the_same_request_through_every_format(consumer: &str, rules: String) {
    let lrp = Lrp::start(&format!("local:\n{rules}"));
    for (format, _) in FORMATS {
        let reply = the_request(&lrp, &format!("{format}.{consumer}")).await;
        assert_eq!(
            reply.status,
            200,
            "{format}: {}\n{}",
            reply.text(),
            lrp.logs()
        );
        assert_eq!(as_seen(&reply.json()), expected_view(format), "{format}");
        // And back: the status, the content type and both cookies, whatever the format.
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{format}"
        );
        assert_eq!(
            reply.all("set-cookie"),
            ["a=1; Path=/", "b=2; Path=/"],
            "{format}"
        );
    }
}

#[tokio::test]
async fn lambda_http_reads_every_format_and_answers_in_it() {
    a_web_handler_sees_the_same_request_through_every_format("lambda-http", lambda_http_rules())
        .await;
}

#[tokio::test]
async fn the_lambda_web_adapter_serves_a_web_app_through_every_format() {
    a_web_handler_sees_the_same_request_through_every_format("lwa", lwa_rules()).await;
}

#[tokio::test]
async fn awslambdaric_receives_each_formats_own_fields() {
    let lrp = Lrp::start(&format!("local:\n{}", awslambdaric_rules()));
    let mut events = std::collections::HashMap::new();
    for (format, _) in FORMATS {
        let reply = the_request(&lrp, &format!("{format}.awslambdaric")).await;
        assert_eq!(
            reply.status,
            200,
            "{format}: {}\n{}",
            reply.text(),
            lrp.logs()
        );
        events.insert(format, reply.json());
    }

    let v2 = &events["http-api"];
    assert_eq!(v2["version"], "2.0");
    assert_eq!(v2["rawQueryString"], "x=1&x=2&y=%2B&z=a+b");
    assert_eq!(
        v2["queryStringParameters"],
        json!({"x": "1,2", "y": "+", "z": "a b"})
    );
    assert_eq!(v2["cookies"], json!(["a=1", "b=2"]));
    assert!(
        v2["headers"].get("cookie").is_none(),
        "HTTP API moves cookie to cookies"
    );
    assert_eq!(v2["headers"]["x-multi"], "one,two");

    let url = &events["function-url"];
    assert_eq!(url["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(
        url["headers"]["cookie"], "a=1; b=2",
        "function URLs keep it in headers too"
    );

    let v1 = &events["http-api-v1"];
    assert_eq!(v1["version"], "1.0");
    assert_eq!(v1["resource"], "$default");
    assert_eq!(v1["headers"]["x-multi"], "two", "the last value wins");
    assert_eq!(v1["multiValueHeaders"]["x-multi"], json!(["one", "two"]));
    assert_eq!(
        v1["queryStringParameters"],
        json!({"x": "2", "y": "+", "z": "a b"})
    );
    assert_eq!(v1["pathParameters"], Value::Null);

    let rest = &events["rest"];
    assert!(rest.get("version").is_none());
    assert_eq!(rest["resource"], "/{proxy+}");
    assert_eq!(rest["pathParameters"], json!({"proxy": "items/a b"}));
    assert_eq!(rest["requestContext"]["stage"], "Prod");
    assert_eq!(rest["requestContext"]["path"], "/Prod/items/a%20b");
    assert_eq!(rest["stageVariables"], Value::Null);
    assert_eq!(
        (rest["body"].as_str(), rest["isBase64Encoded"].as_bool()),
        (Some("AAEC/wo="), Some(true))
    );

    let alb = &events["alb"];
    assert!(alb["requestContext"]["elb"]["targetGroupArn"].is_string());
    assert_eq!(
        alb["multiValueQueryStringParameters"],
        json!({"x": ["1", "2"], "y": ["%2B"], "z": ["a+b"]}),
        "ALB passes the query as sent"
    );
    assert!(alb.get("headers").is_none() && alb.get("queryStringParameters").is_none());
}

/// Each front door's answer to each failure: `(status, body)` for a function error, a
/// malformed result, a timeout, an oversized request and an oversized result.
#[tokio::test]
async fn each_front_door_answers_failures_its_own_way() {
    let fake = FakeRie::start().await;
    let mut rules = String::new();
    for (format, event) in FORMATS {
        for (failure, behaviour, extra) in [
            ("error", "error200", ""),
            ("garbage", "garbage", ""),
            ("timeout", "stall", "    timeout: 300ms\n"),
            ("huge", "huge", ""),
            ("echo", "echo", ""),
        ] {
            let extra = format!("    event: {event}\n{extra}");
            rules.push_str(&fake.rule(&format!("{failure}.{format}"), behaviour, &extra));
        }
    }
    let lrp = Lrp::start(&format!("local:\n{rules}"));
    let alb_page = |title: &str| {
        format!(
            "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
        )
    };
    let http_api = |status: u16, message: &str| (status, format!(r#"{{"message":"{message}"}}"#));
    let rest = |status: u16, message: &str| (status, format!(r#"{{"message": "{message}"}}"#));
    let url_error = (502, "Internal Server Error".to_owned());
    let expected: [(&str, [(u16, String); 5]); 5] = [
        (
            "http-api",
            [
                http_api(500, "Internal Server Error"),
                http_api(500, "Internal Server Error"),
                http_api(503, "Service Unavailable"),
                http_api(413, "Request Too Long"),
                http_api(500, "Internal Server Error"),
            ],
        ),
        (
            "http-api-v1",
            [
                http_api(500, "Internal Server Error"),
                http_api(500, "Internal Server Error"),
                http_api(503, "Service Unavailable"),
                http_api(413, "Request Too Long"),
                http_api(500, "Internal Server Error"),
            ],
        ),
        (
            "rest",
            [
                rest(502, "Internal server error"),
                rest(502, "Internal server error"),
                rest(504, "Endpoint request timed out"),
                rest(413, "Request Too Long"),
                rest(502, "Internal server error"),
            ],
        ),
        (
            "function-url",
            [
                url_error.clone(),
                url_error.clone(),
                url_error.clone(),
                http_api(413, "Request Too Long"),
                url_error.clone(),
            ],
        ),
        (
            "alb",
            [
                (502, alb_page("502 Bad Gateway")),
                (502, alb_page("502 Bad Gateway")),
                (502, alb_page("502 Bad Gateway")),
                (413, alb_page("413 Request Entity Too Large")),
                (502, alb_page("502 Bad Gateway")),
            ],
        ),
    ];
    for (format, [error, garbage, timeout, too_large, huge]) in expected {
        let lrp = &lrp;
        let get = |failure: &str| {
            let host = format!("{failure}.{format}");
            async move { send(lrp.request("GET", &host, "/"), "").await }
        };
        let answer = |reply: &Reply| (reply.status, reply.text());
        let reply = get("error").await;
        assert_eq!(answer(&reply), error, "{format}: function error");
        assert_eq!(reply.header("x-lrp-error"), Some("function-error"));
        let reply = get("garbage").await;
        assert_eq!(answer(&reply), garbage, "{format}: malformed result");
        assert_eq!(reply.header("x-lrp-error"), Some("malformed-result"));
        let reply = get("timeout").await;
        assert_eq!(answer(&reply), timeout, "{format}: timeout");
        assert_eq!(reply.header("x-lrp-error"), Some("timeout"));
        let reply = get("huge").await;
        assert_eq!(answer(&reply), huge, "{format}: result too large");
        assert_eq!(reply.header("x-lrp-error"), Some("result-too-large"));
        // ALB takes 1 MB of body, Lambda 6 MB of event.
        let size = if format == "alb" {
            1024 * 1024 + 1
        } else {
            6_291_457
        };
        let request = lrp
            .request("POST", &format!("echo.{format}"), "/")
            .header("content-type", "text/plain");
        let reply = send(request, vec![b'a'; size]).await;
        assert_eq!(answer(&reply), too_large, "{format}: request too large");
        assert_eq!(reply.header("x-lrp-error"), Some("request-too-large"));
    }
    // A body over ALB's limit still passes the other formats (the echoed event is a result
    // without statusCode, which HTTP API sends as JSON).
    let request = lrp
        .request("POST", "echo.http-api", "/")
        .header("content-type", "text/plain");
    assert_eq!(send(request, vec![b'a'; 1024 * 1024 + 1]).await.status, 200);
}
