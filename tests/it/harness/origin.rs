//! A small real HTTP/1.1 origin server for tests: serves configured files
//! with `ETag`/`Last-Modified`, answers conditional requests with 304 and
//! ranges (`If-Range` too) with 206, can cut a body short, cut connections
//! at chosen offsets or send slowly (per connection, as object stores and
//! CDNs cap each one), and records every request it gets.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One file the origin serves.
#[derive(Clone, Debug)]
pub struct OriginFile {
    pub body: Bytes,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Close the connection after sending this many body bytes.
    pub truncate_after: Option<usize>,
    /// Sleep between 64 KiB chunks, to keep a fill in flight.
    pub chunk_delay: Option<Duration>,
    /// Answer a redirect (`status`, default 302) with this `Location`
    /// instead of the body.
    pub redirect_to: Option<String>,
    /// Answer with this (error) status and the body instead.
    pub status: Option<u16>,
    /// Send the body with chunked transfer coding, without a length.
    pub chunked: bool,
    /// `Content-Type`; `application/octet-stream` when unset.
    pub content_type: Option<String>,
    /// Bytes per second each connection sends at most.
    pub rate: Option<u64>,
    /// Offsets of the object where connections are cut, each once: a
    /// response whose bytes reach the next one sends up to it and closes.
    /// Shared by the file's clones, so a test can see which were used.
    pub cuts: Arc<Mutex<VecDeque<usize>>>,
    /// Every response sends at most this many body bytes, then closes.
    pub cut_every: Option<usize>,
    /// Replaces this file once a connection is cut: the upstream changed
    /// between a cut and its resume.
    pub after_cut: Option<Box<OriginFile>>,
    /// A range response holding this offset sends its byte flipped: one
    /// part of a parallel fill tampered with on its way.
    pub tampered_in_ranges: Option<usize>,
}

impl OriginFile {
    pub fn new(body: impl Into<Bytes>) -> Self {
        OriginFile {
            body: body.into(),
            etag: None,
            last_modified: None,
            truncate_after: None,
            chunk_delay: None,
            redirect_to: None,
            status: None,
            chunked: false,
            content_type: None,
            rate: None,
            cuts: Arc::default(),
            cut_every: None,
            after_cut: None,
            tampered_in_ranges: None,
        }
    }

    /// Cuts connections at these offsets of the object, one each.
    pub fn cut_at(self, offsets: &[usize]) -> Self {
        *self.cuts.lock().unwrap() = offsets.iter().copied().collect();
        self
    }

    /// Sends at most `bytes_per_second` on each connection.
    pub fn rate(mut self, bytes_per_second: u64) -> Self {
        self.rate = Some(bytes_per_second);
        self
    }

    /// A response with an error status, such as 500, 503 or 429.
    pub fn failing(status: u16) -> Self {
        let mut file = OriginFile::new(format!("upstream says {status}\n"));
        file.status = Some(status);
        file
    }

    pub fn redirect(location: &str) -> Self {
        let mut file = OriginFile::new("redirecting\n");
        file.redirect_to = Some(location.to_string());
        file
    }

    /// A `307 Temporary Redirect`, as registries send blob downloads to
    /// their storage.
    pub fn temporary_redirect(location: &str) -> Self {
        let mut file = OriginFile::redirect(location);
        file.status = Some(307);
        file
    }

    pub fn etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_string());
        self
    }

    pub fn content_type(mut self, content_type: &str) -> Self {
        self.content_type = Some(content_type.to_string());
        self
    }
}

/// A request as the origin saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    files: Mutex<HashMap<String, OriginFile>>,
    /// Where requests for unconfigured paths are forwarded (a test server
    /// in front of a real registry), instead of answering 404.
    forward_to: Mutex<Option<String>>,
    /// Forwarded responses send at most this many body bytes, then close.
    cut_forwarded_every: Mutex<Option<usize>>,
    seen: Mutex<Vec<SeenRequest>>,
    /// Range responses being sent now, and the most at once (the bodies
    /// of a parallel fill's parts; a whole response that the client
    /// closed early would still count until this origin noticed).
    sending: AtomicUsize,
    most_sending: AtomicUsize,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(State::default());
        let accept = accept_loop(listener, state.clone());
        Origin {
            addr,
            state,
            accept: Mutex::new(Some(accept)),
        }
    }

    /// Listens again on the same address after [`Self::stop`], with the
    /// same files and request log: an upstream back from an outage.
    pub async fn resume(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind origin");
        *self.accept.lock().unwrap() = Some(accept_loop(listener, self.state.clone()));
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn put(&self, path: &str, file: OriginFile) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(path.to_string(), file);
    }

    /// Forwards every request for a path without a configured file to
    /// `base_url`, so this origin stands in front of a real upstream and
    /// overrides single paths.
    pub fn forward_to(&self, base_url: &str) {
        *self.state.forward_to.lock().unwrap() = Some(base_url.to_string());
    }

    /// Cuts every forwarded response after `bytes` body bytes: a flaky
    /// network in front of the real upstream.
    pub fn cut_forwarded_every(&self, bytes: usize) {
        *self.state.cut_forwarded_every.lock().unwrap() = Some(bytes);
    }

    /// Stops serving `path` from a configured file.
    pub fn remove(&self, path: &str) {
        self.state.files.lock().unwrap().remove(path);
    }

    /// Requests received for `path` (any method).
    pub fn hits(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }

    /// The most range responses this origin was sending at once.
    pub fn most_concurrent_ranges(&self) -> usize {
        self.state.most_sending.load(Ordering::SeqCst)
    }

    pub fn total_hits(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Stops listening and drops every open connection, pooled ones too.
    pub fn stop(&self) {
        if let Some(accept) = self.accept.lock().unwrap().take() {
            accept.abort();
        }
        for conn in self.state.connections.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

/// Serves each connection `listener` accepts, until aborted.
fn accept_loop(listener: TcpListener, state: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let conn_state = state.clone();
            let handle = tokio::spawn(async move {
                let _ = serve_connection(stream, conn_state).await;
            });
            state.connections.lock().unwrap().push(handle);
        }
    })
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listener that accepts connections and never answers: a stalled
/// upstream. Connections are held until it is dropped.
pub struct Silent {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind silent");
        let addr = listener.local_addr().expect("silent addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Silent { addr, task }
    }
}

/// A listener whose accept queue is full and never drained: the kernel
/// drops further SYNs, so a connect to it times out (a black hole on
/// loopback, without firewall rules).
pub struct Backlogged {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Backlogged {
    pub async fn start() -> Backlogged {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind backlogged");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        // Fill the queue; stop once a connect no longer completes promptly.
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => fillers.push(stream),
                _ => break,
            }
        }
        Backlogged {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends a request on to `base` and streams the answer back on `write`,
/// cut after `cut_every` body bytes if given. `Ok(false)`: the connection
/// was cut and must close.
async fn forward_request(
    base: &str,
    request: &SeenRequest,
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    cut_every: Option<usize>,
) -> std::io::Result<bool> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("forwarding client");
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("method");
    let is_head = method == reqwest::Method::HEAD;
    let mut forwarded = client.request(method, format!("{base}{}", request.path));
    for name in ["accept", "authorization", "range", "if-range"] {
        if let Some(value) = request.headers.get(name) {
            forwarded = forwarded.header(name, value);
        }
    }
    let Ok(mut resp) = forwarded.send().await else {
        let head = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
        write.write_all(head.as_bytes()).await?;
        return Ok(true);
    };
    let mut head = format!("HTTP/1.1 {}\r\n", resp.status());
    for (name, value) in resp.headers() {
        if name != "transfer-encoding" && name != "content-length" && name != "connection" {
            head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
        }
    }
    // Streamed when the length is known, else read whole to count it.
    let length = match (resp.content_length(), is_head) {
        (Some(length), _) => length,
        (None, true) => 0,
        (None, false) => {
            let body = resp.bytes().await.unwrap_or_default();
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            write.write_all(head.as_bytes()).await?;
            let sent = cut_every.unwrap_or(body.len()).min(body.len());
            write.write_all(&body[..sent]).await?;
            return Ok(sent == body.len());
        }
    };
    head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    write.write_all(head.as_bytes()).await?;
    if is_head {
        return Ok(true);
    }
    let limit = cut_every.map_or(u64::MAX, |n| n as u64);
    let mut sent = 0u64;
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = (limit - sent).min(chunk.len() as u64) as usize;
        write.write_all(&chunk[..room]).await?;
        sent += room as u64;
        if sent >= limit {
            break;
        }
    }
    write.flush().await?;
    Ok(sent >= length)
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some(head) = super::read_request_head(&mut reader).await? else {
            return Ok(());
        };
        let (method, path, headers) = (head.method, head.target, head.headers);
        let seen = SeenRequest {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
        };
        state.seen.lock().unwrap().push(seen.clone());
        let file = state.files.lock().unwrap().get(&path).cloned();
        let forward = state.forward_to.lock().unwrap().clone();
        if let (None, Some(base)) = (&file, forward) {
            let cut_every = *state.cut_forwarded_every.lock().unwrap();
            if !forward_request(&base, &seen, &mut write, cut_every).await? {
                return Ok(());
            }
            continue;
        }
        let Some(file) = file else {
            let body = "no such file\n";
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                body.len()
            );
            write.write_all(head.as_bytes()).await?;
            if method != "HEAD" {
                write.write_all(body.as_bytes()).await?;
            }
            continue;
        };
        if let Some(location) = &file.redirect_to {
            let head = format!(
                "HTTP/1.1 {} Redirect\r\nLocation: {location}\r\nContent-Length: {}\r\n\r\n",
                file.status.unwrap_or(302),
                file.body.len()
            );
            write.write_all(head.as_bytes()).await?;
            if method != "HEAD" {
                write.write_all(&file.body).await?;
            }
            continue;
        }
        if let Some(status) = file.status {
            let head = format!(
                "HTTP/1.1 {status} Failing\r\nContent-Length: {}\r\nRetry-After: 1\r\n\r\n",
                file.body.len()
            );
            write.write_all(head.as_bytes()).await?;
            if method != "HEAD" {
                write.write_all(&file.body).await?;
            }
            continue;
        }
        let mut validators = String::new();
        if let Some(etag) = &file.etag {
            validators.push_str(&format!("ETag: {etag}\r\n"));
        }
        if let Some(lm) = &file.last_modified {
            validators.push_str(&format!("Last-Modified: {lm}\r\n"));
        }
        let not_modified =
            file.etag.is_some() && headers.get("if-none-match") == file.etag.as_ref();
        if not_modified {
            let head = format!("HTTP/1.1 304 Not Modified\r\n{validators}\r\n");
            write.write_all(head.as_bytes()).await?;
            continue;
        }
        let range = asked_range(&headers, &file);
        let (status, start, end) = match range {
            Some((start, end)) => {
                validators.push_str(&format!(
                    "Content-Range: bytes {start}-{}/{}\r\n",
                    end - 1,
                    file.body.len()
                ));
                ("206 Partial Content", start, end)
            }
            None => ("200 OK", 0, file.body.len()),
        };
        let framing = if file.chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}\r\nAccept-Ranges: bytes", end - start)
        };
        let content_type = file
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let head = format!(
            "HTTP/1.1 {status}\r\n{framing}\r\nContent-Type: {content_type}\r\n{validators}\r\n"
        );
        write.write_all(head.as_bytes()).await?;
        if method == "HEAD" {
            continue;
        }
        let cut = cut_point(&file, start, end);
        let stop = cut.unwrap_or(end);
        let mut body = file.body.slice(start..stop);
        match file.tampered_in_ranges {
            Some(at) if range.is_some() && (start..stop).contains(&at) => {
                let mut tampered = body.to_vec();
                tampered[at - start] ^= 0xff;
                body = tampered.into();
            }
            _ => {}
        }
        let mut sending = range.is_some().then(|| Sending::start(&state));
        let last = body.len().div_ceil(64 * 1024).saturating_sub(1);
        let began = std::time::Instant::now();
        let mut sent = 0u64;
        for (i, chunk) in body.chunks(64 * 1024).enumerate() {
            if i == last {
                // Handed to the kernel now: the client may go on to its next
                // request before this task gets to run again.
                drop(sending.take());
            }
            if file.chunked {
                write
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                write.write_all(chunk).await?;
                write.write_all(b"\r\n").await?;
            } else {
                write.write_all(chunk).await?;
            }
            write.flush().await?;
            sent += chunk.len() as u64;
            if let Some(delay) = file.chunk_delay {
                tokio::time::sleep(delay).await;
            }
            if let Some(rate) = file.rate {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep(due.saturating_sub(began.elapsed())).await;
            }
        }
        if cut.is_some() {
            // Cut the body short: close without sending the rest (nor,
            // when chunked, the last chunk).
            if let Some(next) = &file.after_cut {
                state.files.lock().unwrap().insert(path, (**next).clone());
            }
            return Ok(());
        }
        if file.chunked {
            write.write_all(b"0\r\n\r\n").await?;
        }
        write.flush().await?;
    }
}

/// A range response being sent, counted while it is.
struct Sending<'a>(&'a State);

impl<'a> Sending<'a> {
    fn start(state: &'a State) -> Sending<'a> {
        let now = state.sending.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_sending.fetch_max(now, Ordering::SeqCst);
        Sending(state)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.sending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The single range a request asks for, as half-open offsets, when the
/// file can answer it: `bytes=a-b`, `bytes=a-` or `bytes=-n`, and an
/// `If-Range` that still names this file (else the whole file is sent).
fn asked_range(headers: &HashMap<String, String>, file: &OriginFile) -> Option<(usize, usize)> {
    let len = file.body.len();
    let spec = headers.get("range")?.strip_prefix("bytes=")?;
    if let Some(validator) = headers.get("if-range") {
        let current = [file.etag.as_ref(), file.last_modified.as_ref()];
        if !current.contains(&Some(validator)) {
            return None;
        }
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.parse::<usize>(), last.parse::<usize>()) {
        (Ok(a), Ok(b)) => (a, b.saturating_add(1).min(len)),
        (Ok(a), Err(_)) if last.is_empty() => (a, len),
        (Err(_), Ok(n)) if first.is_empty() => (len.saturating_sub(n), len),
        _ => return None,
    };
    (start < end && start < len).then_some((start, end))
}

/// Where a response for `start..end` of `file` is cut, if anywhere: the
/// next of its cut offsets inside the span (used up), the per-connection
/// limit, or the old `truncate_after` (counted from the span's start).
fn cut_point(file: &OriginFile, start: usize, end: usize) -> Option<usize> {
    let mut cuts = file.cuts.lock().unwrap();
    let planned = match cuts.front() {
        Some(&at) if at > start && at < end => cuts.pop_front(),
        _ => None,
    };
    let limits = [
        planned,
        file.cut_every.map(|n| start + n),
        file.truncate_after.map(|n| start + n),
    ];
    limits.into_iter().flatten().filter(|&at| at < end).min()
}

/// Mirrors the files under `dir` onto `origin` below `prefix`, as a mirror
/// syncs a regenerated repository: new and changed files first, the
/// indexes (`is_index`) after them, then the files that are gone removed.
/// `published` holds what was mirrored before and is brought up to date.
pub fn mirror_dir(
    origin: &Origin,
    dir: &std::path::Path,
    prefix: &str,
    published: &mut std::collections::BTreeSet<String>,
    is_index: impl Fn(&str) -> bool,
) {
    let mut files = Vec::new();
    collect(dir, dir, &mut files);
    files.sort_by_key(|p| is_index(p));
    let mut now = std::collections::BTreeSet::new();
    for relative in files {
        let bytes = std::fs::read(dir.join(&relative)).unwrap();
        origin.put(&format!("{prefix}/{relative}"), OriginFile::new(bytes));
        now.insert(relative);
    }
    for gone in published.difference(&now) {
        origin.remove(&format!("{prefix}/{gone}"));
    }
    *published = now;
}

fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string(),
            );
        }
    }
}
