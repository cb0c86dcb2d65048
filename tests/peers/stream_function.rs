//! A streaming Lambda function on the Rust `lambda_runtime` crate's streaming API, for the
//! streaming tests. What it streams depends on the event's `rawPath`:
//! - `/gated?dir=D`: `first`, then waits (up to 10 s) until the file `D/go` exists, then
//!   `second`: a test that creates the file only after reading `first` proves the first chunk
//!   arrived while the function was still writing;
//! - `/big/{mb}`: that many MiB, in 64 KiB chunks;
//! - `/created`: status 201, two headers of one name, two cookies, then `created`;
//! - `/endless`: a chunk every 10 ms, until the runtime is stopped.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use lambda_runtime::streaming::{Body, Response, channel};
use lambda_runtime::{Error, LambdaEvent, MetadataPrelude, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Response<Body>, Error> {
    let event = event.payload;
    let path = event["rawPath"].as_str().unwrap_or("/").to_owned();
    let (mut sender, body) = channel();
    let mut prelude = MetadataPrelude {
        status_code: StatusCode::OK,
        headers: HeaderMap::new(),
        cookies: Vec::new(),
    };
    prelude
        .headers
        .insert("content-type", HeaderValue::from_static("text/plain"));
    if path == "/created" {
        prelude.status_code = StatusCode::CREATED;
        prelude
            .headers
            .append("x-multi", HeaderValue::from_static("one"));
        prelude
            .headers
            .append("x-multi", HeaderValue::from_static("two"));
        prelude.cookies = vec!["a=1; Path=/".into(), "b=2; Path=/".into()];
    }
    let dir = event["queryStringParameters"]["dir"]
        .as_str()
        .map(PathBuf::from);
    tokio::spawn(async move {
        match path.as_str() {
            "/gated" => {
                let _ = sender.send_data("first\n".into()).await;
                let go = dir.unwrap_or_default().join("go");
                for _ in 0..1000 {
                    if go.exists() {
                        let _ = sender.send_data("second\n".into()).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = sender.send_data("never released\n".into()).await;
            }
            "/created" => {
                let _ = sender.send_data("created".into()).await;
            }
            "/endless" => loop {
                if sender.send_data("tick\n".into()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            },
            big if big.starts_with("/big/") => {
                let mib: usize = big["/big/".len()..].parse().unwrap_or(1);
                let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                for _ in 0..mib * 16 {
                    if sender.send_data(chunk.clone()).await.is_err() {
                        return;
                    }
                }
            }
            _ => {
                let _ = sender.send_data("hello\n".into()).await;
            }
        }
    });
    Ok(Response {
        metadata_prelude: prelude,
        stream: body,
    })
}
