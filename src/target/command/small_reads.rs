//! A Runtime API connection read at most 16 KiB at a time.
//!
//! hyper sizes its reads to what the last ones filled, up to its buffer's limit, which the
//! Runtime API raises past 1 MiB for large request heads. A runtime streaming its response
//! fills every read, so hyper would read it into buffers of up to that size, each body frame a
//! slice of one, and a buffer still referenced by a frame waiting to be sent cannot be reused.
//! With hyper's own reads a 10 MiB stream raised lrp's peak resident memory by 11 to 21 MiB;
//! with 16 KiB reads, by under 5 MiB, at the same throughput (`bench/README.md`). A large head
//! is still read whole, 16 KiB at a time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

const MAX_READ: usize = 16 * 1024;

/// A connection's reading half; its writing half is joined to it unwrapped
/// (`tokio::io::join`).
pub struct SmallReads<T>(T);

impl<T> SmallReads<T> {
    pub fn new(inner: T) -> Self {
        SmallReads(inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SmallReads<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() <= MAX_READ {
            return Pin::new(&mut self.0).poll_read(cx, buf);
        }
        let mut small = buf.take(MAX_READ);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut small))?;
        let read = small.filled().len();
        // SAFETY: the inner read filled, so initialized, the first `read` bytes of `small`,
        // which are the first `read` unfilled bytes of `buf`.
        unsafe { buf.assume_init(read) };
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn reads_are_capped_and_everything_arrives_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (mut writer, reader) = tokio::io::duplex(256 * 1024);
        writer.write_all(&data).await.unwrap();
        drop(writer);

        let mut reader = SmallReads::new(reader);
        let mut received = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = reader.read(&mut buffer).await.unwrap();
            assert!(read <= MAX_READ, "one read of {read} bytes");
            if read == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..read]);
        }
        assert_eq!(received, data);

        // A buffer with less room than the cap is read into directly.
        let (mut writer, reader) = tokio::io::duplex(1024);
        writer.write_all(b"hello").await.unwrap();
        let mut small = [0u8; 3];
        SmallReads::new(reader)
            .read_exact(&mut small)
            .await
            .unwrap();
        assert_eq!(&small, b"hel");
    }
}
