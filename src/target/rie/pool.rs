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

thread_local! {
    static IDLE: RefCell<HashMap<Authority, Vec<(Sender, Instant)>>> = RefCell::new(HashMap::new());
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
    authority: Authority,
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
            Ok(response) => return Ok((response, Connection::new(authority, sender))),
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
    Ok((response, Connection::new(authority, sender)))
}

impl Connection {
    fn new(authority: &Authority, sender: Sender) -> Self {
        Connection {
            authority: authority.clone(),
            sender,
        }
    }

    /// Keeps the connection for the next request to its endpoint. Call it only once the
    /// response has been read to its end; a dropped `Connection` is closed instead.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        IDLE.with_borrow_mut(|idle| {
            let senders = idle.entry(self.authority).or_default();
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
        let senders = idle.get_mut(authority)?;
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

pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
