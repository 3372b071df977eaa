//! The hit fast path: fresh objects whose record is at hand (the hot tier,
//! or the page cache) are answered straight from the connection, before
//! pingora builds a session for the request.
//!
//! Why: a 1 KiB hit through pingora's phases costs about twice the CPU of
//! nginx's `proxy_cache` (a session and its modules, the cache state
//! machine, the stored header cloned, filtered and serialised, every phase
//! called). Most requests to a mirror are exactly that kind of hit, and the
//! answer to one is known bytes: the record's head, prepared once, a few
//! per-request headers, the body (from memory, or a file sent by
//! [`send_file`]).
//!
//! [`FastPath`] is the listener's app around pingora's HTTP proxy. On an
//! HTTP/1 connection it reads each request head itself
//! ([`filters::request_head`]) and asks [`hit::answer`] for the response.
//! Whatever it declines (a miss, an expired or flushed object, one whose
//! record would have to wait for a disk or a bucket, a refusal, admin,
//! anything it does not parse) goes to pingora with the bytes already
//! read, which parses them as if it had read them itself; the connection
//! comes back after that request, so the next hit on it is fast again.
//! HTTP/2 connections are pingora's whole.

mod hit;
mod rehome;
mod send_file;

use crate::app::App;
use crate::metrics::{Outcome, Request};
use crate::proxy::ArtifactProxy;
use crate::served_from::ServedFrom;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use filters::request_head::{self, Head, Parsed};
use hit::{Answer, Body};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Sleep;

/// How long an idle connection waits for its next request (pingora's
/// default too).
const KEEPALIVE: Duration = Duration::from_secs(60);
/// A head still incomplete at this size is pingora's to read (it allows
/// more, and answers what is too large).
const MAX_HEAD: usize = 16 * 1024;

pub struct FastPath {
    proxy: Arc<HttpProxy<ArtifactProxy>>,
    app: Arc<App>,
    decisions: hit::Decisions,
    stopping: Stopping,
}

impl FastPath {
    pub fn new(proxy: HttpProxy<ArtifactProxy>, app: Arc<App>) -> Self {
        FastPath {
            proxy: Arc::new(proxy),
            app,
            decisions: hit::Decisions::new(),
            stopping: Stopping::default(),
        }
    }

    /// Hands the request in `buf` (and the rest of the connection until it
    /// finishes that request) to pingora; the connection back, if it stays
    /// open.
    async fn to_pingora(
        &self,
        stream: Stream,
        buf: &mut BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE.as_secs());
        session.set_keepalive(keepalive);
        if !buf.is_empty() {
            session.set_pipelined_prefix(std::mem::take(buf));
        }
        let reused = self.proxy.process_new_http(session, shutdown).await?;
        Some(reused.consume().0)
    }

    /// Writes a hit and records it as the phases' `logging` would.
    async fn send(
        &self,
        stream: &mut Stream,
        head: &Head<'_>,
        answer: Answer,
        started: Instant,
    ) -> bool {
        let mut written = stream.write_all(&answer.bytes).await;
        if written.is_ok() {
            written = match &answer.body {
                Body::Sent => Ok(()),
                Body::Memory(body) => stream.write_all(body).await,
                Body::File { open, range } => {
                    send_file::send(stream, &open.file, range.clone()).await
                }
            };
        }
        if written.is_ok() {
            written = stream.flush().await;
        }
        record(
            &self.app,
            stream,
            head,
            &answer,
            started,
            written.as_ref().err(),
        );
        written.is_ok()
    }
}

#[async_trait]
impl ServerApp for FastPath {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2 || !self.app.config().server.fast_path {
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut stream = rehome::rehome(stream);
        let mut buf = BytesMut::with_capacity(4096);
        let idle = tokio::time::sleep(KEEPALIVE);
        let stopped = self.stopping.wait();
        tokio::pin!(idle, stopped);
        let mut waits = Waits {
            idle: idle.as_mut(),
            stopped: stopped.as_mut(),
        };
        loop {
            match request_head::parse(&buf) {
                Parsed::Complete { head, len } => {
                    let started = Instant::now();
                    let keep_alive = head.keep_alive() && !*shutdown.borrow();
                    if let Some(answer) = hit::answer(&self.app, &self.decisions, &head, keep_alive)
                    {
                        let sent = self.send(&mut stream, &head, answer, started).await;
                        if !sent || !keep_alive {
                            return None;
                        }
                        buf.advance(len);
                        continue;
                    }
                    if head.bodiless() {
                        // pingora gets this request alone; what follows
                        // it in `buf` is the next request's.
                        let mut request = buf.split_to(len);
                        stream = self.to_pingora(stream, &mut request, shutdown).await?;
                        continue;
                    }
                }
                Parsed::Partial if buf.len() < MAX_HEAD => {
                    waits.read_more(&mut stream, &mut buf).await?;
                    continue;
                }
                Parsed::Partial | Parsed::Other => {}
            }
            stream = self.to_pingora(stream, &mut buf, shutdown).await?;
        }
    }

    /// Connections waiting for a request end here as pingora ends its own.
    async fn cleanup(&self) {
        self.stopping.stop();
        self.proxy.cleanup().await;
    }
}

/// Counts the hit and writes its access line, as `proxy::finish` does for
/// requests that went through the phases.
fn record(
    app: &App,
    stream: &Stream,
    head: &Head<'_>,
    answer: &Answer,
    started: Instant,
    error: Option<&std::io::Error>,
) {
    let remote = answer.decided.remote.name.as_str();
    let duration = started.elapsed();
    app.metrics.record(&Request {
        remote,
        outcome: Outcome::Other,
        source: ServedFrom::Hit,
        status: answer.status,
        bytes: answer.body_bytes,
        upstream_bytes: 0,
        upstream_error: false,
        quarantined: false,
        duration,
        upstream: None,
        fast_path: true,
    });
    let audited = (answer.decided.audited.as_ref())
        .filter(|_| crate::audit::delivered(head.method, answer.status));
    let logged = crate::access_log::enabled();
    if audited.is_none() && !logged {
        return;
    }
    let peer = stream.get_socket_digest();
    let peer = peer.as_ref().and_then(|digest| digest.peer_addr());
    if let Some(audited) = audited {
        crate::audit::count(
            app,
            crate::audit::Served {
                remote,
                path: &answer.decided.key.path,
                release: audited.release.as_ref(),
                client: peer.and_then(crate::audit::client_ip),
                authorization: head.authorization,
                user_agent: head.user_agent,
            },
        );
    }
    if !logged {
        return;
    }
    let client = peer.map(ToString::to_string);
    crate::access_log::Access {
        request_id: &answer.request_id,
        client: client.unwrap_or_else(|| "-".to_string()),
        method: head.method,
        remote,
        path: head.path_and_query().0,
        status: answer.status,
        source: ServedFrom::Hit.as_str(),
        bytes: answer.body_bytes,
        ms: duration.as_secs_f64() * 1000.0,
        user_agent: head.user_agent,
        upstream_ms: None,
        upstream_status: None,
        upstream_bytes: 0,
        key_remote: Some(remote),
        key: Some(&answer.decided.key),
        error: error.map(|e| format!("writing the response: {e}")),
    }
    .write();
}

/// What a connection waits on besides its socket: the idle timeout and the
/// service's stop. Both live as long as the connection, so a request costs
/// no timer registration (a later deadline only moves the pending one) and
/// no waiter list insertion.
struct Waits<'a, S> {
    idle: Pin<&'a mut Sleep>,
    stopped: Pin<&'a mut S>,
}

impl<S: Future<Output = ()>> Waits<'_, S> {
    /// Reads more of the next request; `None` when the connection is done
    /// (closed, idle too long, or the service stopping).
    async fn read_more(&mut self, stream: &mut Stream, buf: &mut BytesMut) -> Option<()> {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        self.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + KEEPALIVE);
        let read = tokio::select! {
            biased;
            read = stream.read_buf(buf) => read,
            _ = self.stopped.as_mut() => return None,
            _ = self.idle.as_mut() => return None,
        };
        match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(()),
        }
    }
}

/// The service's stop, seen by connections waiting for a request.
#[derive(Default)]
struct Stopping {
    stopped: AtomicBool,
    notify: Notify,
}

impl Stopping {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}
