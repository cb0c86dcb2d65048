//! A function's response as it streams: chunks in the order the runtime writes them, through a
//! small bounded channel (so a slow client slows the runtime, and memory stays bounded
//! whatever the size), ending when the runtime ends it, the function fails mid-stream, or
//! the invocation's deadline passes. The deadline holds on both sides even when nobody
//! reads: a client that stops reading cannot keep the writer waiting or the function's slot
//! taken past it.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::admission::Slot;

/// Chunks that may wait between the runtime and the client: with hyper's reads of at most a
/// few hundred KiB, a stream holds at most a few MiB whatever its size.
pub const STREAM_BUFFER: usize = 8;
/// The most a response stream may carry (Lambda's limit for streamed responses).
pub const MAX_STREAM_BYTES: u64 = 200 * 1024 * 1024;

/// Why a stream ended before its end.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("the function failed mid-stream: {error_type}: {message}")]
    Function { error_type: String, message: String },
    #[error("the runtime's stream broke off")]
    Broken,
    #[error("the stream passed Lambda's {MAX_STREAM_BYTES} byte limit for streamed responses")]
    TooLarge,
    #[error("the stream did not end within the rule's timeout")]
    Timeout,
}

/// The writing end of a stream: hands chunks on in order, counting them against
/// [`MAX_STREAM_BYTES`], never waiting for the reader past the invocation's deadline.
pub struct ChunkSender {
    sender: mpsc::Sender<Result<Bytes, StreamError>>,
    sent: u64,
    deadline: Instant,
}

impl ChunkSender {
    /// A stream's two ends, for an invocation due by `deadline`; the reading end waits in a
    /// [`ResultStream`].
    pub fn channel(deadline: Instant) -> (Self, mpsc::Receiver<Result<Bytes, StreamError>>) {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let sender = ChunkSender {
            sender,
            sent: 0,
            deadline,
        };
        (sender, receiver)
    }

    /// Hands `chunk` on, waiting while the reader is behind. False when the stream is over:
    /// the reader is gone, the deadline passed, or the chunk passed the size limit (the
    /// reader is told).
    pub async fn send(&mut self, chunk: Bytes) -> bool {
        self.sent += chunk.len() as u64;
        if self.sent > MAX_STREAM_BYTES {
            self.fail(StreamError::TooLarge).await;
            return false;
        }
        let sent = tokio::time::timeout_at(self.deadline, self.sender.send(Ok(chunk))).await;
        matches!(sent, Ok(Ok(())))
    }

    /// Ends the stream with `failure`, unless the reader is gone or the deadline passed.
    pub async fn fail(&self, failure: StreamError) {
        let _ = tokio::time::timeout_at(self.deadline, self.sender.send(Err(failure))).await;
    }

    /// Resolves when nobody reads the stream any more (the client went away).
    pub async fn closed(&self) {
        self.sender.closed().await;
    }
}

/// How a stream ended, as far as the function that wrote it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The runtime ended it, or reported an error in its trailers: it is done.
    Finished,
    /// The client went away: the runtime is told to stop, and can serve again.
    Abandoned,
    /// It passed its deadline or its size limit, or broke off: the runtime may still be
    /// writing, and must be stopped.
    Cut,
}

/// Told once, when a stream is dropped, how it ended (see [`ResultStream::new`]). It is handed
/// the invocation's slot too, to free once what the stream held is back: an instance freed
/// after its slot would let the next request start a second one.
pub trait StreamEnd: Send + Sync {
    fn end(self: Box<Self>, ending: Ending, slot: Option<Slot>);
}

/// What a stream holds of its function until it ends: told once how it ended.
struct Holding {
    end: Box<dyn StreamEnd>,
    /// The invocation's concurrency slot: the function is busy until its stream ends.
    slot: Option<Slot>,
}

type Held = Arc<Mutex<Option<Holding>>>;

/// Gives back what a stream holds, once, however it ended.
fn release(held: &Held, ending: Ending) {
    let holding = held.lock().ok().and_then(|mut held| held.take());
    if let Some(Holding { end, slot }) = holding {
        end.end(ending, slot);
    }
}

/// A streamed result, as the server reads it.
pub struct ResultStream {
    /// The runtime's content type: `application/vnd.awslambda.http-integration-response` when
    /// a prelude leads the body.
    pub content_type: Option<String>,
    chunks: mpsc::Receiver<Result<Bytes, StreamError>>,
    deadline: Pin<Box<Sleep>>,
    /// How it ended, once it has.
    ending: Option<Ending>,
    held: Held,
    /// Dropped with the stream, which stops its deadline's watchdog.
    _dropped: oneshot::Sender<()>,
}

impl ResultStream {
    /// A stream of `chunks`, cut with [`StreamError::Timeout`] at `deadline`. `end` is told,
    /// when the stream is dropped or at the deadline if it is still open then (a client that
    /// stopped reading never polls it), how it ended.
    pub fn new(
        content_type: Option<String>,
        chunks: mpsc::Receiver<Result<Bytes, StreamError>>,
        deadline: Instant,
        end: Box<dyn StreamEnd>,
    ) -> Self {
        let held: Held = Arc::new(Mutex::new(Some(Holding { end, slot: None })));
        let (dropped, stream_gone) = oneshot::channel::<()>();
        let watched = held.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stream_gone => {}
                () = tokio::time::sleep_until(deadline) => release(&watched, Ending::Cut),
            }
        });
        ResultStream {
            content_type,
            chunks,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            ending: None,
            held,
            _dropped: dropped,
        }
    }

    /// Keeps the invocation's slot until the stream ends.
    pub fn hold(&mut self, slot: Slot) {
        if let Ok(mut held) = self.held.lock()
            && let Some(holding) = held.as_mut()
        {
            holding.slot = Some(slot);
        }
    }

    /// The next chunk; `None` once the runtime has ended the stream.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        if self.ending.is_some() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(chunk) = self.chunks.poll_recv(cx) {
            self.ending = match &chunk {
                Some(Ok(_)) => None,
                None | Some(Err(StreamError::Function { .. })) => Some(Ending::Finished),
                Some(Err(_)) => Some(Ending::Cut),
            };
            return Poll::Ready(chunk);
        }
        ready!(self.deadline.as_mut().poll(cx));
        self.ending = Some(Ending::Cut);
        Poll::Ready(Some(Err(StreamError::Timeout)))
    }

    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, StreamError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

impl Drop for ResultStream {
    fn drop(&mut self) {
        release(&self.held, self.ending.unwrap_or(Ending::Abandoned));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    type Recording = Arc<Mutex<Option<Ending>>>;

    struct Recorded(Recording);

    impl StreamEnd for Recorded {
        fn end(self: Box<Self>, ending: Ending, _slot: Option<Slot>) {
            *self.0.lock().unwrap() = Some(ending);
        }
    }

    fn new_stream(
        deadline: Instant,
    ) -> (
        mpsc::Sender<Result<Bytes, StreamError>>,
        ResultStream,
        Recording,
    ) {
        let (sender, chunks) = mpsc::channel(STREAM_BUFFER);
        let ended = Arc::new(Mutex::new(None));
        let stream = ResultStream::new(None, chunks, deadline, Box::new(Recorded(ended.clone())));
        (sender, stream, ended)
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_arrive_in_order_and_a_complete_stream_ends_cleanly() {
        let (sender, mut stream, ended) = new_stream(Instant::now() + Duration::from_secs(60));
        sender.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        sender.send(Ok(Bytes::from_static(b"b"))).await.unwrap();
        drop(sender);
        assert_eq!(
            stream.next_chunk().await,
            Some(Ok(Bytes::from_static(b"a")))
        );
        assert_eq!(
            stream.next_chunk().await,
            Some(Ok(Bytes::from_static(b"b")))
        );
        assert_eq!(stream.next_chunk().await, None);
        drop(stream);
        assert_eq!(*ended.lock().unwrap(), Some(Ending::Finished));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unread_stream_ends_at_its_deadline_on_both_sides() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let (mut sender, chunks) = ChunkSender::channel(deadline);
        let ended = Arc::new(Mutex::new(None));
        let stream = ResultStream::new(None, chunks, deadline, Box::new(Recorded(ended.clone())));
        // Nobody polls the stream: the writer fills the buffer, then waits, until the deadline.
        let mut sent = 0;
        while sender.send(Bytes::from_static(b"x")).await {
            sent += 1;
        }
        assert_eq!(sent, STREAM_BUFFER);
        assert!(Instant::now() >= deadline);
        tokio::task::yield_now().await;
        assert_eq!(*ended.lock().unwrap(), Some(Ending::Cut));
        drop(stream);
        assert_eq!(*ended.lock().unwrap(), Some(Ending::Cut), "told once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_a_stream_and_a_dropped_one_is_abandoned() {
        let (_sender, mut stream, ended) = new_stream(Instant::now() + Duration::from_secs(1));
        assert_eq!(stream.next_chunk().await, Some(Err(StreamError::Timeout)));
        assert_eq!(stream.next_chunk().await, None);
        drop(stream);
        assert_eq!(*ended.lock().unwrap(), Some(Ending::Cut));

        let (sender, stream, ended) = new_stream(Instant::now() + Duration::from_secs(60));
        drop(stream);
        assert!(
            sender.is_closed(),
            "the runtime's side sees the client gone"
        );
        assert_eq!(*ended.lock().unwrap(), Some(Ending::Abandoned));
    }
}
