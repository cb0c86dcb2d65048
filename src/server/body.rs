//! Response bodies: whole (everything lrp answers itself, and buffered results), or streaming
//! chunk by chunk as the function writes them.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Response;
use hyper::body::{Body, Frame, SizeHint};

use crate::error::ProxyError;
use crate::event::EventError;
use crate::event::prelude::{self, DELIMITER, PRELUDE_CONTENT_TYPE};
use crate::target::TargetError;
use crate::target::stream::{ResultStream, StreamError};

/// The most a stream's prelude may be, before its first body byte.
const MAX_PRELUDE_BYTES: usize = 64 * 1024;

pub enum ResponseBody {
    /// `None` once sent.
    Whole(Option<Bytes>),
    Streaming {
        /// What came after the prelude in the chunk that ended it.
        first: Option<Bytes>,
        stream: ResultStream,
        /// An error held back one poll, so that hyper flushes what came before it.
        failure: Option<StreamError>,
    },
}

impl ResponseBody {
    pub fn whole(bytes: Bytes) -> Self {
        ResponseBody::Whole(Some(bytes))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match self.get_mut() {
            ResponseBody::Whole(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ResponseBody::Streaming {
                first,
                stream,
                failure,
            } => {
                if let Some(first) = first.take().filter(|b| !b.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                // An error ends the response mid-way, as Lambda ends it: HTTP/1.1 closes the
                // connection without the last chunk, HTTP/2 resets the stream. It is held
                // back one poll: hyper flushes what it has written when the body is pending,
                // so the bytes before the error reach the client.
                if let Some(failure) = failure.take() {
                    return Poll::Ready(Some(Err(failure)));
                }
                match std::task::ready!(stream.poll_chunk(cx)) {
                    Some(Err(error)) => {
                        tracing::warn!(cause = %error, "a streamed response ended early");
                        *failure = Some(error);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    chunk => Poll::Ready(chunk.map(|chunk| chunk.map(Frame::data))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Streaming { .. } => SizeHint::default(),
        }
    }
}

/// The response for a stream: the head its prelude describes (or, without a prelude, 200 with
/// the runtime's content type), then every chunk as it arrives. A stream that fails before its
/// first body byte gets an ordinary error answer.
pub async fn streaming_response(
    mut stream: ResultStream,
) -> Result<Response<ResponseBody>, ProxyError> {
    let has_prelude = stream
        .content_type
        .as_deref()
        .is_some_and(|ct| ct.eq_ignore_ascii_case(PRELUDE_CONTENT_TYPE));
    if !has_prelude {
        let head = prelude::raw_head(stream.content_type.as_deref());
        return Ok(head.map(|()| ResponseBody::Streaming {
            first: None,
            stream,
            failure: None,
        }));
    }
    let mut read = BytesMut::new();
    loop {
        match stream.next_chunk().await {
            Some(Ok(chunk)) => read.extend_from_slice(&chunk),
            Some(Err(failure)) => return Err(ProxyError::Target(failure.into())),
            None => {
                return Err(EventError::Malformed(
                    "the stream ended before its prelude did".into(),
                )
                .into());
            }
        }
        if let Some(end) = memchr::memmem::find(&read, &DELIMITER) {
            let head = prelude::head(&read[..end])?;
            let first = read.split_off(end + DELIMITER.len()).freeze();
            return Ok(head.map(|()| ResponseBody::Streaming {
                first: Some(first),
                stream,
                failure: None,
            }));
        }
        if read.len() > MAX_PRELUDE_BYTES {
            return Err(EventError::Malformed(format!(
                "the stream's prelude is longer than {MAX_PRELUDE_BYTES} bytes"
            ))
            .into());
        }
    }
}

impl From<StreamError> for TargetError {
    fn from(failure: StreamError) -> Self {
        match failure {
            StreamError::Function {
                error_type,
                message,
            } => TargetError::Function {
                error_type,
                message,
            },
            StreamError::Broken => TargetError::Transport(failure.to_string()),
            StreamError::TooLarge => TargetError::ResultTooLarge,
            StreamError::Timeout => TargetError::Timeout,
        }
    }
}
