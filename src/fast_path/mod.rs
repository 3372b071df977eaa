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
//!
//! The same loop enforces what a client connection may take
//! ([`crate::config::ClientLimits`]): it counts the connection in
//! [`Connections`], closes it when idle too long or when a newcomer needs
//! its room, answers `408` to a head that takes longer than
//! `limits.header_timeout` from its first byte, and `431` or `414` to one
//! larger than `limits.max_header_size`. With `cache.fast_path` off it
//! still reads the heads, and hands every one to pingora.

mod hit;
mod rehome;
mod send_file;

use crate::app::App;
use crate::config::ClientLimits;
use crate::connections::{Connections, Open};
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

pub struct FastPath {
    proxy: Arc<HttpProxy<ArtifactProxy>>,
    app: Arc<App>,
    decisions: hit::Decisions,
    stopping: Stopping,
    connections: Arc<Connections>,
}

impl FastPath {
    pub fn new(proxy: HttpProxy<ArtifactProxy>, app: Arc<App>) -> Self {
        FastPath {
            proxy: Arc::new(proxy),
            connections: app.connections.clone(),
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
        let idle = self.app.config().server.clients.idle_timeout;
        session.set_keepalive((!*shutdown.borrow()).then_some(idle.as_secs().max(1)));
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
        let config = self.app.config();
        let limits = config.server.clients;
        let Ok(open) = self.connections.open(limits.max_connections) else {
            return refuse(&self.app, stream, Refusal::Connections).await;
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.proxy.process_new(stream, shutdown).await;
        }
        let fast_path = config.server.fast_path;
        drop(config);
        let mut stream = rehome::rehome(stream);
        let mut buf = BytesMut::with_capacity(4096);
        let idle = tokio::time::sleep(limits.idle_timeout);
        let stopped = self.stopping.wait();
        let reclaimed = open.slot.close.notified();
        tokio::pin!(idle, stopped, reclaimed);
        let mut waits = Waits {
            idle: idle.as_mut(),
            stopped: stopped.as_mut(),
            reclaimed: reclaimed.as_mut(),
            open: &open,
            limits,
            head_started: None,
        };
        loop {
            match request_head::parse(&buf) {
                Parsed::Complete { len, .. } if len > limits.max_header_size => {
                    return refuse(&self.app, stream, Refusal::HeaderTooLarge).await;
                }
                Parsed::Complete { head, len } => {
                    waits.head_started = None;
                    let started = Instant::now();
                    let keep_alive = head.keep_alive() && !*shutdown.borrow();
                    let mut answer = fast_path
                        .then(|| hit::answer(&self.app, &self.decisions, &head, keep_alive))
                        .flatten();
                    if fast_path && answer.is_none() {
                        answer = hit::answer_once_committed(
                            &self.app,
                            &self.decisions,
                            &head,
                            keep_alive,
                        )
                        .await;
                    }
                    if let Some(answer) = answer {
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
                Parsed::Partial if buf.len() < limits.max_header_size => {
                    match waits.read_more(&mut stream, &mut buf).await {
                        Read::More => continue,
                        Read::Closed => return None,
                        Read::HeaderTimeout => {
                            return refuse(&self.app, stream, Refusal::HeaderTimeout).await
                        }
                    }
                }
                Parsed::Partial => {
                    let refusal = match buf.windows(2).any(|w| w == b"\r\n") {
                        true => Refusal::HeaderTooLarge,
                        false => Refusal::UriTooLong,
                    };
                    return refuse(&self.app, stream, refusal).await;
                }
                Parsed::Other => {}
            }
            waits.head_started = None;
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
                sha256: answer.sha256,
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

/// What a connection waits on besides its socket: the idle or header
/// timeout, the service's stop, and being told to make room for a newcomer.
/// All live as long as the connection, so a request costs no timer
/// registration (a later deadline only moves the pending one) and no
/// waiter list insertion.
struct Waits<'a, S, R> {
    idle: Pin<&'a mut Sleep>,
    stopped: Pin<&'a mut S>,
    reclaimed: Pin<&'a mut R>,
    open: &'a Open,
    limits: ClientLimits,
    /// When the first byte of the head being read arrived.
    head_started: Option<tokio::time::Instant>,
}

/// How a wait for more of a request head ended.
enum Read {
    More,
    /// Closed, idle too long, told to make room, or the service stopping.
    Closed,
    /// A head begun but not finished within `limits.header_timeout`.
    HeaderTimeout,
}

impl<S: Future<Output = ()>, R: Future<Output = ()>> Waits<'_, S, R> {
    /// Reads more of the next request.
    async fn read_more(&mut self, stream: &mut Stream, buf: &mut BytesMut) -> Read {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let now = tokio::time::Instant::now();
        let between_requests = buf.is_empty();
        let deadline = if between_requests {
            self.open.idle();
            now + self.limits.idle_timeout
        } else {
            *self.head_started.get_or_insert(now) + self.limits.header_timeout
        };
        self.idle.as_mut().reset(deadline);
        let read = tokio::select! {
            biased;
            read = stream.read_buf(buf) => read,
            _ = self.stopped.as_mut() => return Read::Closed,
            _ = self.reclaimed.as_mut(), if between_requests => return Read::Closed,
            _ = self.idle.as_mut() => {
                return match between_requests {
                    true => Read::Closed,
                    false => Read::HeaderTimeout,
                }
            }
        };
        match read {
            Ok(0) | Err(_) => Read::Closed,
            Ok(_) if self.open.busy() => Read::More,
            // Told to close just as the request came: the client retries,
            // as after any keep-alive close.
            Ok(_) => Read::Closed,
        }
    }
}

/// Why a connection was answered and closed before its request was read.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    Connections,
    HeaderTimeout,
    HeaderTooLarge,
    UriTooLong,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::UriTooLong => "uri_too_long",
        }
    }

    /// The answer: status line, reason and a short body.
    fn response(self) -> String {
        let (status, body) = match self {
            Refusal::Connections => ("503 Service Unavailable", "too many connections\n"),
            Refusal::HeaderTimeout => ("408 Request Timeout", "request header not sent in time\n"),
            Refusal::HeaderTooLarge => (
                "431 Request Header Fields Too Large",
                "request header too large\n",
            ),
            Refusal::UriTooLong => ("414 URI Too Long", "request URI too long\n"),
        };
        let retry = match self {
            Refusal::Connections => "Retry-After: 1\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {status}\r\n{retry}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Answers `refusal` and closes, counting it. An HTTP/2 connection (only
/// ever refused for want of room) is closed without an answer.
async fn refuse(app: &App, mut stream: Stream, refusal: Refusal) -> Option<Stream> {
    app.metrics.client_refused(refusal.as_str());
    if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        // Best effort: the client may be gone, or never reading.
        let answer = async {
            stream.write_all(refusal.response().as_bytes()).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    }
    None
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
