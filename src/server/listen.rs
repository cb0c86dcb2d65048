//! The listening sockets: one per worker thread for each port, all bound to the same address
//! with `SO_REUSEPORT`, so the kernel spreads new connections over the workers and no worker
//! ever wakes another to hand one over (nginx's `reuseport`).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel holds per socket before lrp accepts them.
const BACKLOG: i32 = 1024;

/// How many worker threads serve connections: one per core this process may run on (which
/// honours CPU affinity and cgroup quotas), at least one.
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `count` listening sockets on `host:port` (port 0: one free port for all of them).
///
/// `SO_REUSEPORT` would also let a second process bind the same port and silently take half
/// the connections, so the address is first bound alone: a port already in use fails here
/// as it would without `SO_REUSEPORT`.
pub fn bind(host: &str, port: u16, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut last_error = None;
    for address in (host, port).to_socket_addrs()? {
        match bind_address(address, count) {
            Ok(listeners) => return Ok(listeners),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the host resolves to no address",
        )
    }))
}

fn bind_address(address: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let address = TcpListener::bind(address)?.local_addr()?;
    (0..count.max(1))
        .map(|_| {
            let socket = Socket::new(
                Domain::for_address(address),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&address.into())?;
            socket.listen(BACKLOG)?;
            Ok(socket.into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_gets_a_socket_on_the_same_port() {
        let listeners = bind("127.0.0.1", 0, 3).unwrap();
        assert_eq!(listeners.len(), 3);
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(
            listeners
                .iter()
                .all(|l| l.local_addr().unwrap().port() == port)
        );
    }

    #[test]
    fn a_port_in_use_is_refused_even_with_reuseport() {
        let listeners = bind("127.0.0.1", 0, 2).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        let second = bind("127.0.0.1", port, 2);
        assert_eq!(
            second.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::AddrInUse,
            "a second lrp must not share the port"
        );
        let plain = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = plain.local_addr().unwrap().port();
        assert!(bind("127.0.0.1", port, 1).is_err());
    }
}
