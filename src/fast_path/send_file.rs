//! A body file written to the client after its head: by the kernel
//! (`sendfile`) on a plain connection, by reads and writes over TLS.
//!
//! Why: through the phases a large hit reads each 256 KiB of the file into
//! a fresh buffer and writes it, two copies of every byte in user space and
//! a trip through pingora's body filters per chunk; nginx sends a cached
//! file with `sendfile`, one copy inside the kernel. A part of the file
//! that is not in the page cache is read on the blocking pool and written
//! instead: `sendfile` would stall this thread, and every connection on
//! it, on the disk.

use crate::storage::body::fs::read_cached;
use pingora::protocols::l4::stream::Stream as PlainStream;
use pingora::protocols::Stream;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWriteExt, Interest};

/// Bytes checked for residency in the page cache, then sent by the kernel.
const WINDOW: u64 = 4 << 20;
/// Bytes read and written at a time where the kernel does not send.
const CHUNK: u64 = 256 << 10;

/// Writes `range` of `file` to `stream`, whose head is written (and
/// perhaps still buffered) already.
pub async fn send(stream: &mut Stream, file: &Arc<File>, range: Range<u64>) -> io::Result<()> {
    let socket = plain_socket(stream);
    let mut writable: Option<AsyncFd<OwnedFd>> = None;
    let mut position = range.start;
    while position < range.end {
        let window = position..range.end.min(position + WINDOW);
        match socket.filter(|_| resident(file, &window)) {
            Some(socket) => {
                stream.flush().await?;
                let ready = match &mut writable {
                    Some(ready) => ready,
                    None => writable.insert(register(dup(socket)?)?),
                };
                send_window(ready, file, window.clone()).await?;
                position = window.end;
            }
            None => {
                let chunk = read(file, position..window.end.min(position + CHUNK)).await?;
                stream.write_all(&chunk).await?;
                position += chunk.len() as u64;
            }
        }
    }
    Ok(())
}

/// The descriptor of a plain (not TLS) connection the kernel can send a
/// file to directly.
fn plain_socket(stream: &Stream) -> Option<RawFd> {
    let plain = stream.get_ssl_digest().is_none() && (**stream).as_any().is::<PlainStream>();
    plain.then(|| stream.id())
}

/// A second descriptor of the connection, to wait for it to take more
/// bytes (the first one is registered inside pingora's stream, out of
/// reach).
fn dup(socket: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `socket` is open for as long as the stream it came from,
    // which outlives this call; `dup` makes a new descriptor we own.
    let copy = unsafe { libc::dup(socket) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` was just returned by `dup` and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// `socket` registered with this thread's reactor, for its writability.
fn register(socket: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is open until dropped and always returns the
    // same descriptor, and the `AsyncFd` owns it.
    let registered = unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) };
    Ok(registered?)
}

/// Whether the first and last byte of `window` are in the page cache (a
/// body is read in order, so the pages between are too in practice; one
/// that is not costs a short stall, not a wrong byte).
fn resident(file: &File, window: &Range<u64>) -> bool {
    let mut byte = [0u8; 1];
    [window.start, window.end - 1]
        .into_iter()
        .all(|at| read_cached(file, &mut byte, at) == Some(1))
}

/// `sendfile` until `window` is sent, waiting whenever the socket is full.
async fn send_window(
    socket: &AsyncFd<OwnedFd>,
    file: &File,
    mut window: Range<u64>,
) -> io::Result<()> {
    while window.start < window.end {
        let mut ready = socket.writable().await?;
        match ready.try_io(|socket| sendfile(socket.as_raw_fd(), file, &window)) {
            Ok(Ok(0)) => return Err(shorter()),
            Ok(Ok(sent)) => window.start += sent as u64,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            // Full: readiness is cleared, wait for it again.
            Err(_would_block) => {}
        }
    }
    Ok(())
}

fn sendfile(socket: RawFd, file: &File, window: &Range<u64>) -> io::Result<usize> {
    let mut offset = window.start as libc::off_t;
    let count = (window.end - window.start) as usize;
    // SAFETY: both descriptors are open for the call; `offset` is ours.
    let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, count) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// `range` of `file`: from the page cache here, else on the blocking pool.
async fn read(file: &Arc<File>, range: Range<u64>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    match read_cached(file, &mut buf, range.start) {
        Some(n) if n == buf.len() => Ok(buf),
        _ => {
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                file.read_exact_at(&mut buf, range.start)
                    .map(|()| buf)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => shorter(),
                        _ => e,
                    })
            })
            .await
            .map_err(io::Error::other)?
        }
    }
}

fn shorter() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "cache body file is shorter than its record",
    )
}
