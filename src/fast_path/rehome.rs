//! A connection's socket registered with the reactor of the thread that
//! serves it.
//!
//! Why: with work stealing off, pingora accepts on one runtime and runs
//! each connection on a random one, so the socket stays registered with
//! the acceptor's reactor. Every readiness event of a connection served
//! elsewhere then wakes the acceptor's thread, which wakes the serving
//! thread through its eventfd: strace shows about one extra `write` per
//! two requests, and both threads busy for each. A plain TCP socket is
//! moved once, when its connection starts: a duplicate descriptor is
//! registered here and the original deregistered and closed. TLS streams
//! keep their state in the stream and stay where they are.

use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use std::os::fd::{FromRawFd, OwnedFd};

/// `stream`, registered with the current thread's reactor when it is a
/// plain TCP connection; as it was otherwise, or if moving it fails.
pub fn rehome(stream: Stream) -> Stream {
    if stream.get_ssl_digest().is_some() {
        return stream;
    }
    let peer = match stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().cloned())
    {
        Some(peer @ SocketAddr::Inet(_)) => peer,
        _ => return stream,
    };
    // SAFETY: `id` is the raw descriptor of a plain TCP stream, open for as
    // long as `stream` lives; `dup` makes a new one we own.
    let copy = unsafe { libc::dup(stream.id()) };
    if copy < 0 {
        return stream;
    }
    // SAFETY: `copy` was just returned by `dup` and nothing else owns it.
    let socket = std::net::TcpStream::from(unsafe { OwnedFd::from_raw_fd(copy) });
    let registered = socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(socket));
    let Ok(registered) = registered else {
        return stream;
    };
    // Deregisters the original from the acceptor's reactor and closes its
    // descriptor; the connection lives on in `copy`.
    drop(stream);
    let mut moved = TcpStream::from(registered);
    let digest = SocketDigest::from_raw_fd(copy);
    let _ = digest.peer_addr.set(Some(peer));
    moved.set_socket_digest(digest);
    Box::new(moved)
}
