//! A function's response as it streams: chunks in the order the runtime writes them, through a
//! small bounded channel (so a slow client slows the runtime, and memory stays bounded
//! whatever the size), ending when the runtime ends it, the function fails mid-stream, or
//! the invocation's deadline passes.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::sync::mpsc;
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
/// [`MAX_STREAM_BYTES`].
pub struct ChunkSender {
    sender: mpsc::Sender<Result<Bytes, StreamError>>,
    sent: u64,
}

impl ChunkSender {
    /// A stream's two ends; the reading end waits in a [`ResultStream`].
    pub fn channel() -> (Self, mpsc::Receiver<Result<Bytes, StreamError>>) {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        (ChunkSender { sender, sent: 0 }, receiver)
    }

    /// Hands `chunk` on, waiting while the reader is behind. False when the stream is over:
    /// the reader is gone, or the chunk passed the size limit (the reader is told).
    pub async fn send(&mut self, chunk: Bytes) -> bool {
        self.sent += chunk.len() as u64;
        if self.sent > MAX_STREAM_BYTES {
            self.fail(StreamError::TooLarge).await;
            return false;
        }
        self.sender.send(Ok(chunk)).await.is_ok()
    }

    /// Ends the stream with `failure`.
    pub async fn fail(&self, failure: StreamError) {
        let _ = self.sender.send(Err(failure)).await;
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

/// A streamed result, as the server reads it.
pub struct ResultStream {
    /// The runtime's content type: `application/vnd.awslambda.http-integration-response` when
    /// a prelude leads the body.
    pub content_type: Option<String>,
    chunks: mpsc::Receiver<Result<Bytes, StreamError>>,
    deadline: Pin<Box<Sleep>>,
    /// How it ended, once it has.
    ending: Option<Ending>,
    end: Option<Box<dyn StreamEnd>>,
    /// The invocation's concurrency slot: the function is busy until its stream ends.
    slot: Option<Slot>,
}

impl ResultStream {
    /// A stream of `chunks`, cut with [`StreamError::Timeout`] at `deadline`. `end` is told,
    /// when the stream is dropped, how it ended.
    pub fn new(
        content_type: Option<String>,
        chunks: mpsc::Receiver<Result<Bytes, StreamError>>,
        deadline: Instant,
        end: Box<dyn StreamEnd>,
    ) -> Self {
        ResultStream {
            content_type,
            chunks,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            ending: None,
            end: Some(end),
            slot: None,
        }
    }

    /// Keeps the invocation's slot until the stream is dropped.
    pub fn hold(&mut self, slot: Slot) {
        self.slot = Some(slot);
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
        if let Some(end) = self.end.take() {
            end.end(self.ending.unwrap_or(Ending::Abandoned), self.slot.take());
        }
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
