//! The one HTTP/1.1 exchange lrp has with an RIE endpoint: a `POST` with a known length, and a
//! response read whole into memory, bounded by Lambda's result limit. Parsing is httparse's
//! (the parser inside hyper); the framing around it follows RFC 9112, section 6.
//!
//! hyper's client connection costs a task, a channel and two wake-ups per request: about
//! 20,000 instructions of the 54,000 lrp spent per request (`bench/instructions`). This
//! exchange runs in the request's own task on the connection it owns.

use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use httparse::Status;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::coalesced_writes::CoalescedWrites;
use crate::event::MAX_RESULT_BYTES;

/// The largest response head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// What a response is first read into: a whole small result in one read.
const FIRST_READ_BYTES: usize = 8 * 1024;
/// What each further read of a body of unknown length may add.
const NEXT_READ_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Writing failed before any byte of the request went out.
    #[error("sending the request: {0}")]
    Unsent(io::Error),
    #[error("sending the request: {0}")]
    Send(io::Error),
    #[error("reading the response: {0}")]
    Receive(io::Error),
    #[error("the endpoint closed the connection before its response was complete")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("the result exceeds {MAX_RESULT_BYTES} bytes")]
    TooLarge,
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
    /// The connection can carry another request: the response said nothing against it, its
    /// end was marked, and nothing followed it.
    pub reusable: bool,
}

/// Writes the request (`head_start` is its head up to the `content-length` value), then
/// reads its response.
pub async fn exchange<S>(
    stream: &mut S,
    head_start: &[u8],
    body: Bytes,
) -> Result<Response, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut length = itoa::Buffer::new();
    let length = length.format(body.len()).as_bytes();
    let mut request = Buf::chain(
        Buf::chain(Buf::chain(head_start, length), &b"\r\n\r\n"[..]),
        body,
    );
    let total = request.remaining();
    let written = CoalescedWrites::new(&mut *stream)
        .write_all_buf(&mut request)
        .await;
    if let Err(e) = written {
        return Err(if request.remaining() == total {
            ExchangeError::Unsent(e)
        } else {
            ExchangeError::Send(e)
        });
    }
    read_response(stream).await
}

/// How the body of a response ends (RFC 9112, section 6.3).
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: StatusCode,
    framing: Framing,
    keep_alive: bool,
}

pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Response, ExchangeError> {
    let mut buffer = BytesMut::with_capacity(FIRST_READ_BYTES);
    let mut read_first = true;
    let head = loop {
        if read_first {
            read_more(stream, &mut buffer, FIRST_READ_BYTES).await?;
        }
        match parse_head(&buffer)? {
            None if buffer.len() >= MAX_HEAD_BYTES => {
                return Err(ExchangeError::Malformed("the response head exceeds 64 KiB"));
            }
            None => read_first = true,
            Some((length, head)) => {
                buffer.advance(length);
                // An interim response (100 Continue, 103 Early Hints) precedes the real one.
                if head.status.is_informational() {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(ExchangeError::Malformed("the endpoint switched protocols"));
                    }
                    read_first = buffer.is_empty();
                    continue;
                }
                break head;
            }
        }
    };
    let (body, ended) = match head.framing {
        Framing::Empty => (Bytes::new(), true),
        Framing::Length(length) => (read_length(stream, &mut buffer, length).await?, true),
        Framing::Chunked => (read_chunked(stream, &mut buffer).await?, true),
        Framing::UntilClose => (read_until_close(stream, buffer.split()).await?, false),
    };
    Ok(Response {
        status: head.status,
        body,
        reusable: head.keep_alive && ended && buffer.is_empty(),
    })
}

/// The response head at the start of `bytes` and its length, if it is all there.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, Head)>, ExchangeError> {
    // Left uninitialised: initialising 64 headers costs more than parsing a short head.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        bytes,
        &mut headers,
    );
    let length = match parsed {
        Ok(Status::Complete(length)) => length,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Malformed("more than 64 headers"));
        }
        Err(_) => return Err(ExchangeError::Malformed("not an HTTP/1.1 response head")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(ExchangeError::Malformed("invalid status code"))?;
    let mut keep_alive = response.version == Some(1);
    let mut content_length = None;
    let mut chunked = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value)?;
            if content_length.is_some_and(|known| known != value) {
                return Err(ExchangeError::Malformed(
                    "conflicting content-length headers",
                ));
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides whether the body is chunked.
            let last = header
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("connection")
            && has_token(header.value, b"close")
        {
            keep_alive = false;
        }
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Empty
    } else {
        match (chunked, content_length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
        }
    };
    Ok(Some((
        length,
        Head {
            status,
            framing,
            keep_alive,
        },
    )))
}

fn parse_length(value: &[u8]) -> Result<usize, ExchangeError> {
    let digits = value.trim_ascii();
    let invalid = ExchangeError::Malformed("invalid content-length");
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid);
    }
    // All ASCII digits, so UTF-8; a number too large for memory is too large for a result.
    std::str::from_utf8(digits)
        .map_err(|_| invalid)?
        .parse()
        .map_err(|_| ExchangeError::TooLarge)
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Reads more into `buffer`, with room for at least `room` bytes.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    room: usize,
) -> Result<(), ExchangeError> {
    buffer.reserve(room);
    match stream.read_buf(buffer).await {
        Ok(0) => Err(ExchangeError::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(ExchangeError::Receive(e)),
    }
}

/// A body of `length` bytes, taken from `buffer` without copying.
async fn read_length<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    length: usize,
) -> Result<Bytes, ExchangeError> {
    if length > MAX_RESULT_BYTES {
        return Err(ExchangeError::TooLarge);
    }
    while buffer.len() < length {
        let missing = length - buffer.len();
        read_more(stream, buffer, missing).await?;
    }
    Ok(buffer.split_to(length).freeze())
}

/// A chunked body (RFC 9112, section 7.1), its chunks joined; trailers are read and dropped.
async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<Bytes, ExchangeError> {
    let mut body = BytesMut::new();
    loop {
        let (line, size) = loop {
            match httparse::parse_chunk_size(buffer) {
                Ok(Status::Complete(found)) => break found,
                Ok(Status::Partial) if buffer.len() < MAX_HEAD_BYTES => {
                    read_more(stream, buffer, FIRST_READ_BYTES).await?;
                }
                _ => return Err(ExchangeError::Malformed("invalid chunk size line")),
            }
        };
        buffer.advance(line);
        let size = usize::try_from(size).map_err(|_| ExchangeError::TooLarge)?;
        if size == 0 {
            skip_trailers(stream, buffer).await?;
            return Ok(body.freeze());
        }
        if size > MAX_RESULT_BYTES - body.len() {
            return Err(ExchangeError::TooLarge);
        }
        // The chunk's data and the line end after it.
        while buffer.len() < size + 2 {
            let missing = size + 2 - buffer.len();
            read_more(stream, buffer, missing).await?;
        }
        if &buffer[size..size + 2] != b"\r\n" {
            return Err(ExchangeError::Malformed("a chunk does not end with CRLF"));
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.advance(size + 2);
    }
}

/// The trailer section after the last chunk, up to the empty line that ends the message.
async fn skip_trailers<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<(), ExchangeError> {
    loop {
        if buffer.starts_with(b"\r\n") {
            buffer.advance(2);
            return Ok(());
        }
        if let Some(end) = memchr::memmem::find(buffer, b"\r\n\r\n") {
            buffer.advance(end + 4);
            return Ok(());
        }
        if buffer.len() >= MAX_HEAD_BYTES {
            return Err(ExchangeError::Malformed("the trailers exceed 64 KiB"));
        }
        read_more(stream, buffer, FIRST_READ_BYTES).await?;
    }
}

/// A body that ends where the connection does (a response with no length and not chunked).
async fn read_until_close<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut body: BytesMut,
) -> Result<Bytes, ExchangeError> {
    loop {
        if body.len() > MAX_RESULT_BYTES {
            return Err(ExchangeError::TooLarge);
        }
        body.reserve(NEXT_READ_BYTES.min(MAX_RESULT_BYTES + 1 - body.len()));
        match stream.read_buf(&mut body).await {
            Ok(0) => return Ok(body.freeze()),
            Ok(_) => {}
            Err(e) => return Err(ExchangeError::Receive(e)),
        }
    }
}

#[cfg(test)]
mod tests;
