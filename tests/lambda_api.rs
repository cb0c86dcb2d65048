//! lrp as a local Lambda service: the Invoke API on its own listener, through the real AWS SDK
//! for Rust and through boto3, for a `command` rule, an `endpoint` rule (the cargo-lambda
//! emulator) and an `aws:` rule (moto).

mod common;

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_lambda::config::{BehaviorVersion, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use common::{Emulator, Lrp, Moto, python_rule, tool};
use serde_json::{Value, json};

/// lrp with `rules` and the Invoke API on a port of its own; returns it and the API's URL.
fn start(rules: &str, env: Vec<(&'static str, String)>) -> (Lrp, String) {
    let lrp = Lrp::start_with(&format!("lambda_api_port: 0\n{rules}"), env);
    let line = lrp
        .process
        .output
        .wait_for("Lambda Invoke API listening on ", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no Invoke API:\n{}", lrp.logs()));
    let address = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (lrp, format!("http://{address}"))
}

fn sdk(endpoint: &str) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDLRPTEST",
            "secret",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

#[tokio::test]
async fn the_rust_sdk_invokes_a_command_rule_by_name() {
    let (lrp, api) = start(
        &format!(
            "local:\n{}{}",
            python_rule("hostname: echo.test", "echo_event", ""),
            python_rule("hostname: hello.test", "handler", "")
        ),
        vec![],
    );
    let client = sdk(&api);
    let payload = json!({"rawPath": "/x", "anything": [1, 2]});

    // The payload reaches the function unchanged: no HTTP translation.
    let output = client
        .invoke()
        .function_name("echo")
        .payload(Blob::new(payload.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", lrp.logs()));
    assert_eq!(output.status_code, 200);
    assert_eq!(output.executed_version.as_deref(), Some("$LATEST"));
    assert!(output.function_error.is_none());
    let result: Value = serde_json::from_slice(output.payload.unwrap().as_ref()).unwrap();
    let event: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(event, payload);

    // A function error: 200, X-Amz-Function-Error, the error as the payload.
    let output = client
        .invoke()
        .function_name("arn:aws:lambda:us-east-1:000000000000:function:hello:$LATEST")
        .payload(Blob::new(r#"{"rawPath": "/error"}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(output.function_error.as_deref(), Some("Unhandled"));
    let error: Value = serde_json::from_slice(output.payload.unwrap().as_ref()).unwrap();
    assert_eq!(error["errorType"], "ValueError");
    assert_eq!(error["errorMessage"], "boom from python");

    // Tail: the last 4 KB of the invocation's log, in base64, framed as Lambda frames it.
    let output = client
        .invoke()
        .function_name("hello")
        .log_type(aws_sdk_lambda::types::LogType::Tail)
        .payload(Blob::new(r#"{"rawPath": "/log"}"#))
        .send()
        .await
        .unwrap();
    use base64::Engine;
    let log = base64::engine::general_purpose::STANDARD
        .decode(output.log_result.expect("a log result"))
        .unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(log.starts_with("START RequestId: "), "{log}");
    assert!(log.contains("a line from the function\n"), "{log}");
    assert!(
        log.contains("\nEND RequestId: ") && log.contains("\nREPORT RequestId: "),
        "{log}"
    );

    // Event: accepted at once, run in the background; DryRun: checked, not run.
    let event = client
        .invoke()
        .function_name("echo")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new("{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(event.status_code, 202);
    let dry = client
        .invoke()
        .function_name("echo")
        .invocation_type(InvocationType::DryRun)
        .send()
        .await
        .unwrap();
    assert_eq!(dry.status_code, 204);

    // Unknown functions and versions: ResourceNotFoundException.
    for (name, qualifier) in [("nope", None), ("echo", Some("7"))] {
        let error = client
            .invoke()
            .function_name(name)
            .set_qualifier(qualifier.map(str::to_owned))
            .send()
            .await
            .unwrap_err();
        let error = error.into_service_error();
        assert!(error.is_resource_not_found_exception(), "{name}: {error:?}");
    }
    lrp.expect_log("invocation_type=\"Event\"").await;
}

/// A boto3 client's answer, as JSON: `{"status", "error", "payload", "log"}`.
async fn boto3(endpoint: &str, function: &str, payload: &Value) -> Value {
    boto3_with(endpoint, function, payload, "RequestResponse", "None").await
}

async fn boto3_with(
    endpoint: &str,
    function: &str,
    payload: &Value,
    invocation_type: &str,
    log_type: &str,
) -> Value {
    let script = r#"
import base64, boto3, json, sys
client = boto3.client("lambda", endpoint_url=sys.argv[1], region_name="us-east-1",
                      aws_access_key_id="AKIDLRPTEST", aws_secret_access_key="secret")
try:
    answer = client.invoke(FunctionName=sys.argv[2], Payload=sys.argv[3].encode(),
                           InvocationType=sys.argv[4], LogType=sys.argv[5])
    log = answer.get("LogResult")
    print(json.dumps({"status": answer["StatusCode"], "error": answer.get("FunctionError"),
                      "payload": answer["Payload"].read().decode(),
                      "log": base64.b64decode(log).decode() if log else None}))
except client.exceptions.ResourceNotFoundException as error:
    print(json.dumps({"status": 404, "error": error.response["Error"]["Code"], "payload": None}))
"#;
    let output = tokio::process::Command::new(tool("python"))
        .args([
            "-c",
            script,
            endpoint,
            function,
            &payload.to_string(),
            invocation_type,
            log_type,
        ])
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("boto3's answer as JSON")
}

#[tokio::test]
async fn boto3_invokes_endpoint_aws_and_command_rules() {
    let emulator = Emulator::start().await;
    let _runtime = emulator.attach_rust_function("function");
    let moto = Moto::start().await;
    moto.use_simple_lambda().await;
    let (lrp, api) = start(
        &format!(
            "region: us-east-1\nlocal:\n  - hostname: orders.test\n    endpoint: {}\n{}\
             aws:\n  - hostname: remote.test\n    function_name: remote\n",
            emulator.endpoint(),
            python_rule("hostname: hello.test", "handler", ""),
        ),
        moto.lrp_env(),
    );
    // The RIE's function answers as `function`, and as its hostname's first label.
    for name in ["function", "orders"] {
        let answer = boto3(
            &api,
            name,
            &json!({"rawPath": "/respond", "body": "{\"ok\": 1}"}),
        )
        .await;
        assert_eq!(answer["status"], 200, "{name}: {answer}\n{}", lrp.logs());
        assert_eq!(answer["payload"], r#"{"ok":1}"#);
    }
    let failed = boto3(&api, "orders", &json!({"rawPath": "/error"})).await;
    assert_eq!(failed["error"], "Unhandled");
    let error: Value = serde_json::from_str(failed["payload"].as_str().unwrap()).unwrap();
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("boom from the rust function")
    );

    // An aws: rule: lrp invokes Lambda (moto echoes the payload).
    let remote = boto3(&api, "remote", &json!({"hello": "aws"})).await;
    assert_eq!(remote["status"], 200, "{remote}");
    assert_eq!(
        serde_json::from_str::<Value>(remote["payload"].as_str().unwrap()).unwrap(),
        json!({"hello": "aws"})
    );

    // A command rule: its log tail, and the other invocation types.
    let logged = boto3_with(
        &api,
        "hello",
        &json!({"rawPath": "/log"}),
        "RequestResponse",
        "Tail",
    )
    .await;
    assert_eq!(logged["status"], 200, "{logged}");
    assert!(
        logged["log"]
            .as_str()
            .unwrap()
            .contains("a line from the function"),
        "{logged}"
    );
    let event = boto3_with(&api, "hello", &json!({}), "Event", "None").await;
    assert_eq!(event["status"], 202);
    let dry = boto3_with(&api, "remote", &json!({}), "DryRun", "None").await;
    assert_eq!(dry["status"], 204);

    let unknown = boto3(&api, "nope", &json!({})).await;
    assert_eq!(
        (unknown["status"].as_i64(), unknown["error"].as_str()),
        (Some(404), Some("ResourceNotFoundException"))
    );
}

#[tokio::test]
async fn a_payload_that_never_arrives_is_cut_at_the_rules_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = common::fake_rie::FakeRie::start().await;
    let (lrp, api) = start(
        &format!("local:\n{}", fake.rule("hang", "hang", "    timeout: 1s\n")),
        vec![],
    );
    let address = api.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // Ten bytes promised, two sent, and the connection held open.
    stream
        .write_all(
            b"POST /2015-03-31/functions/hang/invocations HTTP/1.1\r\nHost: lambda\r\n\
              Content-Length: 10\r\n\r\n{}",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("no answer within 10 s:\n{}", lrp.logs()));
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(
        answer.contains("x-amzn-errortype: requesttimeoutexception"),
        "{answer}"
    );
    assert_eq!(
        fake.counters
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was invoked"
    );
}
