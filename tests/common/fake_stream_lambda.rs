//! A faithful stand-in for Lambda's InvokeWithResponseStream, written from the API reference
//! because the peers that serve it locally are not faithful (the cargo-lambda emulator sends
//! the prelude's status as the HTTP status, strips the prelude from the chunks, and omits the
//! `:message-type` header of every event-stream message). It answers
//! `POST /2021-11-15/functions/{name}/response-streaming-invocations` with 200, the function's
//! stream content type in `Content-Type`, and an event stream: `PayloadChunk` events carrying
//! the function's bytes (prelude, eight NULs, body), then `InvokeComplete`.
//!
//! The function it stands for depends on the event's `rawPath`, like the streaming test
//! function: `/gated?dir=D` (`first`, then `second` once `D/go` exists), `/fail` (`partial`,
//! then an `InvokeComplete` with an `ErrorCode`), anything else `hello`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Chunks = StreamBody<tokio_stream_shim::Receiver>;

pub struct FakeStreamLambda {
    pub addr: SocketAddr,
}

impl FakeStreamLambda {
    pub async fn start() -> FakeStreamLambda {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service =
                        service_fn(|request| async { Ok::<_, Infallible>(answer(request).await) });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeStreamLambda { addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn answer(request: Request<Incoming>) -> Response<Chunks> {
    let event: serde_json::Value = request
        .into_body()
        .collect()
        .await
        .ok()
        .and_then(|body| serde_json::from_slice(&body.to_bytes()).ok())
        .unwrap_or_default();
    let path = event["rawPath"].as_str().unwrap_or("/").to_owned();
    let dir = event["queryStringParameters"]["dir"]
        .as_str()
        .map(str::to_owned);
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let prelude =
            br#"{"statusCode":200,"headers":{"content-type":"text/plain"},"cookies":["s=1"]}"#;
        let mut first = prelude.to_vec();
        first.extend_from_slice(&[0; 8]);
        let send = |bytes: Vec<u8>| {
            let sender = sender.clone();
            async move {
                sender
                    .send(Ok(Frame::data(Bytes::from(bytes))))
                    .await
                    .is_ok()
            }
        };
        match path.as_str() {
            "/gated" => {
                first.extend_from_slice(b"first\n");
                send(payload_chunk(&first)).await;
                let go = std::path::Path::new(&dir.unwrap_or_default()).join("go");
                for _ in 0..1000 {
                    if go.exists() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                send(payload_chunk(b"second\n")).await;
                send(invoke_complete(None)).await;
            }
            "/fail" => {
                first.extend_from_slice(b"partial\n");
                send(payload_chunk(&first)).await;
                send(invoke_complete(Some(("Unhandled", "failed mid-stream")))).await;
            }
            _ => {
                first.extend_from_slice(b"hello\n");
                send(payload_chunk(&first)).await;
                send(invoke_complete(None)).await;
            }
        }
    });
    Response::builder()
        .status(200)
        .header(
            "content-type",
            "application/vnd.awslambda.http-integration-response",
        )
        .header("x-amz-executed-version", "$LATEST")
        .body(StreamBody::new(tokio_stream_shim::Receiver(receiver)))
        .expect("a valid response")
}

fn event(event_type: &'static str, content_type: &'static str, payload: Vec<u8>) -> Vec<u8> {
    let message = Message::new(payload)
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String(content_type.into()),
        ));
    let mut frame = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut frame).expect("a frame");
    frame
}

fn payload_chunk(bytes: &[u8]) -> Vec<u8> {
    event("PayloadChunk", "application/octet-stream", bytes.to_vec())
}

fn invoke_complete(error: Option<(&str, &str)>) -> Vec<u8> {
    let body = match error {
        None => serde_json::json!({}),
        Some((code, details)) => serde_json::json!({"ErrorCode": code, "ErrorDetails": details}),
    };
    event(
        "InvokeComplete",
        "application/json",
        body.to_string().into_bytes(),
    )
}

/// A channel receiver as a `Stream`, for `StreamBody`.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;
    use tokio::sync::mpsc;

    pub struct Receiver(pub mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>);

    impl futures_util::Stream for Receiver {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}
