//! A real Lambda function on the Rust `lambda_runtime` crate, for end-to-end tests. What it
//! does depends on the event's `rawPath`:
//! - `/respond`: returns the request body (JSON) as its result, so a test can script any result;
//! - `/error`: fails, as a handler error;
//! - `/sleep/{ms}`: waits, then echoes;
//! - `/exit`: ends the process mid-invocation;
//! - `/hello`: the small text response `bench/run`'s stand-in endpoint also returns, so the
//!   benchmark compares a command rule and a local rule on the same result;
//! - `/barrier/{n}?dir=D`: marks its arrival in directory D, then waits (up to 10 s) until n
//!   invocations have arrived, and fails if they do not: it succeeds only when n run at once;
//! - anything else: a 200 response whose body is the whole event it received.

use std::time::Duration;

use base64::Engine;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(invocation: LambdaEvent<Value>) -> Result<Value, Error> {
    let event = invocation.payload;
    let path = event["rawPath"].as_str().unwrap_or("/").to_owned();
    if path == "/respond" {
        let body = event["body"].as_str().unwrap_or("null");
        let body = if event["isBase64Encoded"] == true {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body)?)?
        } else {
            body.to_owned()
        };
        return Ok(serde_json::from_str(&body)?);
    }
    if path == "/error" {
        return Err("boom from the rust function".into());
    }
    if path == "/hello" {
        return Ok(json!({
            "statusCode": 200,
            "headers": {"content-type": "text/plain"},
            "body": "hello from the function",
        }));
    }
    if path == "/exit" {
        std::process::exit(3);
    }
    if let Some(count) = path.strip_prefix("/barrier/") {
        let count: usize = count.parse()?;
        let dir = event["queryStringParameters"]["dir"]
            .as_str()
            .ok_or("no dir")?
            .to_owned();
        std::fs::write(format!("{dir}/{}", invocation.context.request_id), "")?;
        for _ in 0..1000 {
            if std::fs::read_dir(&dir)?.count() >= count {
                return Ok(json!({"statusCode": 200, "body": "all arrived"}));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return Err("the other invocations never arrived".into());
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse()?)).await;
    }
    Ok(json!({
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-function": "rust"},
        "body": event.to_string(),
    }))
}
