//! A connection's writing side that sends small vectored writes as one buffer.
//!
//! hyper writes a response's head and body, and lrp a local rule's request head and event, as
//! one vectored write: on a socket, a `writev(2)`. For a few kilobytes, copying the parts into
//! one buffer and making one `send(2)` costs the kernel less (no iovec import, no VFS layers).
//! On the client's connections and the RIE endpoints', the local rule's CPU per request fell
//! by 0.37 µs, 2.2%, lower in 14 of 14 paired rounds (`bench/README.md`, ninth pass). A Runtime
//! API connection gained nothing measurable and writes as it did. Larger writes stay
//! vectored, so a large body is never copied.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// The most bytes joined into one write. Copying them costs less than the `writev` it saves.
const MAX_JOINED: usize = 4 * 1024;

thread_local! {
    /// Where the parts are joined: one buffer per thread, at most [`MAX_JOINED`] bytes. A
    /// zeroed array on the stack for every write cost as much as the `writev` it saved.
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Wraps a connection, or its writing half, for writing.
pub struct CoalescedWrites<T>(T);

impl<T> CoalescedWrites<T> {
    pub fn new(inner: T) -> Self {
        CoalescedWrites(inner)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if total > MAX_JOINED {
            return Pin::new(&mut self.0).poll_write_vectored(cx, bufs);
        }
        let mut inner = Pin::new(&mut self.0);
        let mut parts = bufs.iter().filter(|buf| !buf.is_empty());
        if let (Some(only), None) = (parts.next(), parts.next()) {
            return inner.poll_write(cx, only);
        }
        let joined_write = JOINED.try_with(|joined| {
            let mut joined = joined.try_borrow_mut().ok()?;
            joined.clear();
            for buf in bufs {
                joined.extend_from_slice(buf);
            }
            // A short write reports how much of `bufs` went, as `writev` would.
            Some(inner.as_mut().poll_write(cx, &joined))
        });
        match joined_write {
            Ok(Some(written)) => written,
            // No buffer to join in (a write inside this one, or the thread is ending): the
            // write goes as it came.
            _ => inner.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Records each write it is given, and takes at most `accept` bytes of each.
    struct Recorder {
        writes: Vec<(&'static str, Vec<u8>)>,
        accept: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let taken = buf.len().min(self.accept);
            self.writes.push(("write", buf[..taken].to_vec()));
            Poll::Ready(Ok(taken))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let taken = all.len().min(self.accept);
            self.writes.push(("writev", all[..taken].to_vec()));
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn recorder(accept: usize) -> CoalescedWrites<Recorder> {
        CoalescedWrites::new(Recorder {
            writes: Vec::new(),
            accept,
        })
    }

    #[tokio::test]
    async fn small_parts_go_as_one_write_and_large_ones_stay_vectored() {
        let mut out = recorder(usize::MAX);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        let written = out
            .write_vectored(&[
                IoSlice::new(head),
                IoSlice::new(b""),
                IoSlice::new(b"hello"),
            ])
            .await
            .unwrap();
        assert_eq!(written, head.len() + 5);
        assert_eq!(out.0.writes, [("write", [&head[..], b"hello"].concat())]);

        // One part is written as it is.
        out.0.writes.clear();
        let only = [IoSlice::new(b""), IoSlice::new(b"only")];
        assert_eq!(out.write_vectored(&only).await.unwrap(), 4);
        assert_eq!(out.0.writes, [("write", b"only".to_vec())]);

        // Past the limit nothing is copied; at it, everything is.
        out.0.writes.clear();
        let half = vec![7u8; MAX_JOINED / 2];
        let past = [IoSlice::new(&half), IoSlice::new(&half), IoSlice::new(b"!")];
        assert_eq!(out.write_vectored(&past).await.unwrap(), MAX_JOINED + 1);
        let at = [IoSlice::new(&half), IoSlice::new(&half)];
        assert_eq!(out.write_vectored(&at).await.unwrap(), MAX_JOINED);
        let kinds: Vec<_> = out.0.writes.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, ["writev", "write"]);
    }

    #[tokio::test]
    async fn a_short_write_reports_what_went_and_write_all_sends_the_rest() {
        let mut out = recorder(10);
        let mut message = bytes::Buf::chain(&b"0123456"[..], &b"789abcdef"[..]);
        out.write_all_buf(&mut message).await.unwrap();
        let sent: Vec<u8> = out.0.writes.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(sent, b"0123456789abcdef");
        assert_eq!(out.0.writes[0], ("write", b"0123456789".to_vec()));
    }
}
