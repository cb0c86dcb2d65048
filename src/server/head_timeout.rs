//! The bound on how long an HTTP/1.1 request head may take to arrive, from its first byte
//! (slow heads are the slowloris attack). hyper's own `header_read_timeout` starts as soon as
//! a connection waits for its next request, so on a keep-alive connection it also acts as an
//! idle timeout, and `connection_idle_timeout` could never exceed it. It also arms a timer for
//! every request; this one arms a timer only for a head that does not arrive in one read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::Activity;

pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What a client sends first on an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection's reading half (joined to its writing half with `tokio::io::join`),
/// failing a read with `TimedOut` once a request head has been arriving for [`HEAD_TIMEOUT`].
/// A head starts with the first bytes read while no request is in flight, and ends when the
/// connection's next request begins (`activity`).
pub struct HeadTimeout<T> {
    io: T,
    activity: Arc<Activity>,
    /// The deadline of the head arriving, with the number of requests begun before it.
    head: Option<(Instant, u64)>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Known with the first bytes: HTTP/2 has no request heads to bound.
    http2: Option<bool>,
}

impl<T> HeadTimeout<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        HeadTimeout {
            io,
            activity,
            head: None,
            timer: None,
            http2: None,
        }
    }

    fn on_read(&mut self, bytes: &[u8]) {
        let http2 = *self.http2.get_or_insert_with(|| {
            let start = &bytes[..bytes.len().min(HTTP2_PREFACE.len())];
            HTTP2_PREFACE.starts_with(start)
        });
        if http2 {
            return;
        }
        let begun = self.activity.begun();
        match self.head {
            Some((_, begun_before)) if begun_before == begun => {}
            // The body of the request in flight, or what a refused request left unread.
            _ if self.activity.busy() => self.head = None,
            _ => self.head = Some((Instant::now() + HEAD_TIMEOUT, begun)),
        }
    }

    /// With nothing to read: waits for the deadline of a head that has started and is not
    /// complete yet.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((deadline, begun_before)) = self.head else {
            return Poll::Pending;
        };
        if self.activity.begun() != begun_before {
            self.head = None;
            return Poll::Pending;
        }
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the request head took longer than {HEAD_TIMEOUT:?}"),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.poll_deadline(cx),
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.on_read(read);
                }
                Poll::Ready(Ok(()))
            }
            error => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn connection() -> (DuplexStream, HeadTimeout<DuplexStream>, Arc<Activity>) {
        let (client, server) = tokio::io::duplex(1024);
        let activity = Arc::new(Activity::new());
        (client, HeadTimeout::new(server, activity.clone()), activity)
    }

    /// Reads until the client has nothing more to send for a while (or an error).
    async fn read_on(server: &mut HeadTimeout<DuplexStream>) -> io::Result<usize> {
        let mut buffer = [0u8; 1024];
        server.read(&mut buffer).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_trickles_fails_after_the_limit() {
        let (mut client, mut server, _activity) = connection();
        let start = Instant::now();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(read_on(&mut server).await.unwrap() > 0);
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(b"Host: a\r\n").await.unwrap();
        assert!(
            read_on(&mut server).await.unwrap() > 0,
            "the head is still in time"
        );
        let error = read_on(&mut server).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            start.elapsed(),
            HEAD_TIMEOUT,
            "counted from the head's first byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_not_bounded_by_it() {
        let (_client, mut server, _activity) = connection();
        let waited = tokio::time::timeout(HEAD_TIMEOUT * 10, read_on(&mut server)).await;
        assert!(
            waited.is_err(),
            "no head started: the idle timeout's business"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_began_ends_its_head_and_its_body_is_not_bounded() {
        let (mut client, mut server, activity) = connection();
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(read_on(&mut server).await.unwrap() > 0);
        let busy = activity.begin();
        client.write_all(b"part of a body").await.unwrap();
        assert!(read_on(&mut server).await.unwrap() > 0);
        let waited = tokio::time::timeout(HEAD_TIMEOUT * 10, read_on(&mut server)).await;
        assert!(
            waited.is_err(),
            "a slow body is the request deadline's business"
        );
        drop(busy);

        // The next head is bounded again.
        let start = Instant::now();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(read_on(&mut server).await.unwrap() > 0);
        let error = read_on(&mut server).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), HEAD_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_are_left_alone() {
        let (mut client, mut server, _activity) = connection();
        client.write_all(&HTTP2_PREFACE[..10]).await.unwrap();
        assert!(read_on(&mut server).await.unwrap() > 0);
        let waited = tokio::time::timeout(HEAD_TIMEOUT * 10, read_on(&mut server)).await;
        assert!(waited.is_err());
    }
}
