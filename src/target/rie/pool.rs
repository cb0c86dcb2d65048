//! Keep-alive HTTP/1.1 connections to local endpoints, owned by the worker thread that opened
//! them: hyper's bare client connections (`hyper::client::conn::http1`), each driven by a task
//! on the worker's own runtime, and a thread-local list of the idle ones per endpoint. A
//! request never waits on another thread, and no lock or shared pool is touched.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::uri::Authority;
use http_body_util::Full;
use hyper::Response;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// An idle connection is not reused after this long (the endpoint may have forgotten it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections one worker keeps per endpoint, at most.
const MAX_IDLE: usize = 1024;

type Sender = SendRequest<Full<Bytes>>;
/// An endpoint's idle connections, each with the time it became idle.
type Idle = Vec<(Sender, Instant)>;

thread_local! {
    /// Keyed by the authority's text, hashed in one piece: `Authority`'s own case-folding
    /// `Hash` feeds the hasher a byte at a time. Callers pass authorities in lower case.
    static IDLE: RefCell<HashMap<Box<str>, Idle>> = RefCell::new(HashMap::new());
}

#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened: nothing was sent.
    Connect(String),
    /// The request or its response failed on an open connection.
    Transport(String),
}

/// A connection a response is being read from; [`Connection::release`] gives it back.
pub struct Connection {
    sender: Sender,
}

/// Sends `request` to `authority` on an idle connection of this thread's, else a new one.
/// A request that an idle connection closed before it was written goes to the next one.
pub async fn send(
    authority: &Authority,
    mut request: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Connection), SendError> {
    while let Some(mut sender) = take_idle(authority) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Connection { sender })),
            Err(mut error) => match error.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(SendError::Transport(error_chain(error.error()))),
            },
        }
    }
    let mut sender = connect(authority).await?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| SendError::Transport(error_chain(&e)))?;
    Ok((response, Connection { sender }))
}

impl Connection {
    /// Keeps the connection for the next request to `authority`, the endpoint it was sent
    /// to. Call it only once the response has been read to its end; a dropped `Connection`
    /// is closed instead.
    pub fn release(self, authority: &Authority) {
        if self.sender.is_closed() {
            return;
        }
        IDLE.with_borrow_mut(|idle| {
            let senders = match idle.get_mut(authority.as_str()) {
                Some(senders) => senders,
                None => idle.entry(authority.as_str().into()).or_default(),
            };
            if senders.len() < MAX_IDLE {
                senders.push((self.sender, Instant::now()));
            }
        });
    }
}

/// The most recently used idle connection that is still open and fresh; older or closed
/// ones met on the way are dropped, which closes them.
fn take_idle(authority: &Authority) -> Option<Sender> {
    IDLE.with_borrow_mut(|idle| {
        let senders = idle.get_mut(authority.as_str())?;
        while let Some((sender, since)) = senders.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    })
}

async fn connect(authority: &Authority) -> Result<Sender, SendError> {
    let address = (authority.host(), authority.port_u16().unwrap_or(80));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| SendError::Connect(format!("connecting to {authority} timed out")))?
        .map_err(|e| SendError::Connect(format!("cannot connect to {authority}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(error_chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a connection to an endpoint ended with an error");
        }
    });
    Ok(sender)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An endpoint that answers `ok` to every request, closing each connection after
    /// `per_connection` answers; it counts the connections it accepted.
    async fn endpoint(per_connection: usize) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    for _ in 0..per_connection {
                        // Each test request fits one read: headers and a 2-byte body.
                        if stream.read(&mut buffer).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    async fn post(authority: &Authority) -> Result<Bytes, SendError> {
        let request = Request::post("/invocations")
            .header(http::header::HOST, authority.as_str())
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (response, connection) = send(authority, request).await?;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        connection.release(authority);
        Ok(body)
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_is_read() {
        let (authority, accepted) = endpoint(usize::MAX).await;
        for _ in 0..3 {
            assert_eq!(post(&authority).await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_endpoint_closed_is_replaced_without_failing_the_request() {
        let (authority, accepted) = endpoint(1).await;
        for _ in 0..3 {
            assert_eq!(post(&authority).await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_endpoint_that_is_not_listening_is_a_connect_error() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = unused.local_addr().unwrap().to_string().parse().unwrap();
        drop(unused);
        assert!(matches!(post(&authority).await, Err(SendError::Connect(_))));
    }
}
