//! Keep-alive connections to local endpoints, owned by the worker thread that opened them: a
//! thread-local list of the idle ones per endpoint. A request uses a connection in its own
//! task and gives it back once its response is read whole; no other task, thread, lock or
//! shared pool is involved.

use foldhash::{HashMap, HashMapExt};
use std::cell::{Cell, RefCell};
use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http1::{self, ExchangeError, Response};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// An idle connection is not reused after this long (the endpoint may have forgotten it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections one worker keeps per endpoint, at most.
const MAX_IDLE: usize = 1024;

/// An endpoint's idle connections, each with the time it became idle.
type Idle = Vec<(TcpStream, Instant)>;

thread_local! {
    /// Keyed by the endpoint's authority in lower case.
    static IDLE: RefCell<HashMap<Box<str>, Idle>> = RefCell::new(HashMap::new());
    /// Whether this worker runs [`close_expired`]: while it keeps any idle connection.
    static CLOSING_EXPIRED: Cell<bool> = const { Cell::new(false) };
}

/// Where requests go: `host:port`, and the request head up to its `content-length` value.
pub struct Endpoint {
    /// The authority in lower case: the key of its idle connections.
    pub authority: Box<str>,
    pub host: Box<str>,
    pub port: u16,
    pub head_start: Box<[u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: nothing was sent.
    #[error("{0}")]
    Connect(String),
    /// The request or its response failed on an open connection.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// Sends `event` to `endpoint` on an idle connection of this thread's, else a new one, and
/// reads the response. A request that an idle connection refused before any byte of it was
/// written goes to the next one.
pub async fn send(endpoint: &Endpoint, event: Bytes) -> Result<Response, SendError> {
    while let Some(mut stream) = take_idle(&endpoint.authority) {
        match http1::exchange(&mut stream, &endpoint.head_start, event.clone()).await {
            Err(ExchangeError::Unsent(_)) => continue,
            result => return Ok(keep_if_reusable(endpoint, stream, result?)),
        }
    }
    let mut stream = connect(endpoint).await?;
    let response = http1::exchange(&mut stream, &endpoint.head_start, event).await?;
    Ok(keep_if_reusable(endpoint, stream, response))
}

fn keep_if_reusable(endpoint: &Endpoint, stream: TcpStream, response: Response) -> Response {
    if response.reusable {
        release(&endpoint.authority, stream);
    }
    response
}

fn release(authority: &str, stream: TcpStream) {
    IDLE.with_borrow_mut(|idle| {
        let streams = match idle.get_mut(authority) {
            Some(streams) => streams,
            None => idle.entry(authority.into()).or_default(),
        };
        if streams.len() < MAX_IDLE {
            streams.push((stream, Instant::now()));
        }
    });
    if !CLOSING_EXPIRED.replace(true) {
        tokio::spawn(close_expired());
    }
}

/// Closes this worker's idle connections once they are past [`IDLE_TIMEOUT`], checking every
/// [`IDLE_TIMEOUT`] for as long as any is left. Without it, the connections of a burst, or of
/// an endpoint a reload removed, would stay open until the next request to their endpoint:
/// up to [`MAX_IDLE`] file descriptors per endpoint and worker, for good.
async fn close_expired() {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT).await;
        let any_left = IDLE.with_borrow_mut(|idle| {
            expire(idle, Instant::now());
            !idle.is_empty()
        });
        if !any_left {
            CLOSING_EXPIRED.set(false);
            return;
        }
    }
}

/// Drops (closes) the connections idle for [`IDLE_TIMEOUT`] at `now`, and the endpoints left
/// without one.
fn expire(idle: &mut HashMap<Box<str>, Idle>, now: Instant) {
    idle.retain(|_, streams| {
        streams.retain(|(_, since)| fresh(*since, now));
        !streams.is_empty()
    });
}

/// Whether a connection idle since `since` may still be used at `now`.
fn fresh(since: Instant, now: Instant) -> bool {
    now.saturating_duration_since(since) < IDLE_TIMEOUT
}

/// The most recently used idle connection that is still open and fresh; older or closed
/// ones met on the way are dropped, which closes them.
fn take_idle(authority: &str) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| {
        let streams = idle.get_mut(authority)?;
        while let Some((stream, since)) = streams.pop() {
            if fresh(since, Instant::now()) && is_open(&stream) {
                return Some(stream);
            }
        }
        None
    })
}

/// An idle connection is open while it has nothing to read. The check costs no system call
/// unless the reactor saw the socket become readable: the endpoint closed it, or wrote to it
/// out of turn, and either way it is not reused.
fn is_open(stream: &TcpStream) -> bool {
    matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

async fn connect(endpoint: &Endpoint) -> Result<TcpStream, SendError> {
    let authority = &endpoint.authority;
    let address = (&*endpoint.host, endpoint.port);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| SendError::Connect(format!("connecting to {authority} timed out")))?
        .map_err(|e| SendError::Connect(format!("cannot connect to {authority}: {e}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An endpoint that answers `ok` to every request, closing each connection after
    /// `per_connection` answers; it counts the connections it accepted.
    async fn endpoint(per_connection: usize) -> (Endpoint, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
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
        let endpoint = Endpoint {
            authority: address.to_string().into(),
            host: address.ip().to_string().into(),
            port: address.port(),
            head_start: b"POST /invocations HTTP/1.1\r\ncontent-length: "[..].into(),
        };
        (endpoint, accepted)
    }

    async fn post(endpoint: &Endpoint) -> Result<Bytes, SendError> {
        Ok(send(endpoint, Bytes::from_static(b"{}")).await?.body)
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_is_read() {
        let (endpoint, accepted) = endpoint(usize::MAX).await;
        for _ in 0..3 {
            assert_eq!(post(&endpoint).await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_endpoint_closed_is_replaced_without_failing_the_request() {
        let (endpoint, accepted) = endpoint(1).await;
        for expected_connections in 1..=3 {
            assert_eq!(post(&endpoint).await.unwrap(), "ok");
            // The reactor must have seen the close before the next request looks.
            let kept = IDLE
                .with_borrow_mut(|idle| idle.get_mut(&endpoint.authority)?.pop())
                .expect("the connection was kept");
            kept.0.readable().await.unwrap();
            IDLE.with_borrow_mut(|idle| idle.get_mut(&endpoint.authority).unwrap().push(kept));
            assert_eq!(accepted.load(Ordering::SeqCst), expected_connections);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_once_expired_then_the_closer_stops() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut endpoint_side, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        release("endpoint", TcpStream::from_std(client).unwrap());
        assert!(
            CLOSING_EXPIRED.get(),
            "keeping a connection starts the closer"
        );

        let idle = || IDLE.with_borrow(|idle| idle.get("endpoint").map_or(0, Vec::len));
        tokio::time::sleep(IDLE_TIMEOUT - Duration::from_secs(1)).await;
        assert_eq!(idle(), 1, "not expired yet");
        tokio::time::sleep(IDLE_TIMEOUT + Duration::from_secs(1)).await;
        assert!(
            IDLE.with_borrow(HashMap::is_empty),
            "expired, and its endpoint forgotten"
        );
        assert!(
            !CLOSING_EXPIRED.get(),
            "the closer stops once nothing is idle"
        );
        endpoint_side
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let read = endpoint_side.read(&mut [0; 1]).unwrap();
        assert_eq!(read, 0, "the endpoint sees the connection closed");
    }

    #[tokio::test]
    async fn an_endpoint_that_is_not_listening_is_a_connect_error() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = unused.local_addr().unwrap();
        drop(unused);
        let endpoint = Endpoint {
            authority: address.to_string().into(),
            host: address.ip().to_string().into(),
            port: address.port(),
            head_start: Box::default(),
        };
        assert!(matches!(post(&endpoint).await, Err(SendError::Connect(_))));
    }
}
