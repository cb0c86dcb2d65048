//! A Runtime API connection kept quiet while its runtime's next request is not needed.
//!
//! Once lrp accepts a response, the runtime asks `/next` at once, and that request is of no
//! use until the next invocation arrives. Read as it arrives, it costs a wake-up of its own:
//! by then lrp has usually answered its client and gone to sleep. So the connection's
//! low-water mark (`SO_RCVLOWAT`, socket(7)) is raised above any such request first: the
//! request waits in the socket without making it readable, and is read when an invocation
//! comes. A closed connection is still reported at once (Linux's `tcp_poll`, in
//! net/ipv4/tcp.c, reports a received FIN as readable whatever the mark), and so is a request
//! past the mark. The test below checks both on the running kernel.
//!
//! Lowering the mark signals the bytes already waiting (`tcp_set_rcvlowat`, same file, so
//! nothing is lost), which would wake a sleeping worker for nothing: they are read first, by
//! a non-blocking `recv`, which takes what is there whatever the mark.

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use tokio::net::tcp::OwnedReadHalf;

/// Above the largest `/next` the fast path serves: a larger request is heard at once.
#[cfg(target_os = "linux")]
const QUIET_MARK: usize = super::fast_path::MAX_HEAD_BYTES + 1;

/// Raises the connection's low-water mark; `true` if it is quiet now. Only Linux says when
/// a lowered mark is met by bytes already waiting, so elsewhere connections stay as they are.
pub fn start(read: &OwnedReadHalf) -> bool {
    #[cfg(target_os = "linux")]
    return set_low_water_mark(read, QUIET_MARK);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = read;
        false
    }
}

/// Lowers the mark back to its default, one byte.
pub fn end(read: &OwnedReadHalf) {
    set_low_water_mark(read, 1);
}

/// Appends what the runtime sent, without waiting; `false` once the connection is closed.
pub fn read_now(read: &OwnedReadHalf, unread: &mut BytesMut) -> bool {
    let socket = socket2::SockRef::from(read.as_ref());
    let spare = unread.spare_capacity_mut();
    if spare.is_empty() {
        return true;
    }
    match socket.recv(spare) {
        Ok(0) => false,
        Ok(received) => {
            // SAFETY: `recv` initialized the first `received` bytes of the spare capacity.
            unsafe { unread.set_len(unread.len() + received) };
            true
        }
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

fn set_low_water_mark(read: &OwnedReadHalf, bytes: usize) -> bool {
    let Ok(bytes) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live `c_int`; the descriptor
    // belongs to `read`'s socket, open for as long as `read` is borrowed.
    let set = unsafe {
        libc::setsockopt(
            read.as_ref().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    set == 0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Whether the kernel reports the socket readable now (poll(2), without waiting).
    fn readable(read: &OwnedReadHalf) -> bool {
        let mut poll = libc::pollfd {
            fd: read.as_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and a zero timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready == 1 && poll.revents & libc::POLLIN != 0
    }

    /// Bytes waiting in the socket (FIONREAD, tcp(7)).
    fn waiting(read: &OwnedReadHalf) -> usize {
        let mut bytes: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int.
        unsafe { libc::ioctl(read.as_ref().as_raw_fd(), libc::FIONREAD, &mut bytes) };
        usize::try_from(bytes).unwrap_or(0)
    }

    async fn until_waiting(read: &OwnedReadHalf, bytes: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while waiting(read) < bytes {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bytes never arrived"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_quiet_connection_holds_a_request_but_not_its_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut runtime = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (read, _write) = listener.accept().await.unwrap().0.into_split();
        let next = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n";

        assert!(start(&read));
        runtime.write_all(next).await.unwrap();
        until_waiting(&read, next.len()).await;
        assert!(
            !readable(&read),
            "a quiet connection's request is not signalled"
        );
        let mut unread = BytesMut::with_capacity(4096);
        assert!(read_now(&read, &mut unread));
        assert_eq!(&unread[..], next);
        end(&read);

        runtime.write_all(next).await.unwrap();
        until_waiting(&read, next.len()).await;
        assert!(
            readable(&read),
            "a connection heard again signals its request"
        );
        unread.clear();
        assert!(read_now(&read, &mut unread));
        assert!(read_now(&read, &mut unread), "nothing waits: not closed");
        assert_eq!(&unread[..], next);

        assert!(start(&read));
        drop(runtime);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !readable(&read) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a quiet connection's close is signalled"
            );
            tokio::task::yield_now().await;
        }
        assert!(!read_now(&read, &mut unread));
    }
}
