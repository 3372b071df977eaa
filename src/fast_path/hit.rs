//! One request answered from what the cache holds at hand, or declined.
//!
//! The request is decided exactly as the request phase decides it (route,
//! remote, path validation, patterns, the ecosystem's routing), so a
//! refusal, a local or virtual remote or an admin path is declined and
//! answered by the phases as always. A hit is then what pingora's hit
//! would have sent: the stored header with `Age`, `Accept-Ranges`,
//! `X-Artifact-Source: cache`, `X-Request-Id`, `Date` and `Connection`,
//! with pingora's own conditional (304) and range (206, 416) filters
//! applied when the request carries validators or a range.

use crate::app::App;
use crate::audit::BodyDigest;
use crate::config::Remote;
use crate::proxy::action::Action;
use crate::proxy::request::{self, RequestView};
use crate::proxy::{cache, documents, hooks};
use crate::rewrites;
use crate::seen_again::{seen_again, Recent};
use crate::served_from::{self, ServedFrom};
use crate::storage::record::{Record, RecordView};
use crate::storage::{AtHand, FreshBody, FreshHit, OpenFile};
use bytes::{BufMut, Bytes, BytesMut};
use filters::request_head::Head;
use filters::Route;
use http::header::{self, HeaderName};
use http::{Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora::protocols::http::date::get_cached_date;
use pingora::proxy::{range_header_filter, RangeType};
use pingora_memory_cache::MemoryCache;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

/// A body up to this size is copied behind its head and sent with one
/// write; a larger one is written from the record after the head.
const COPIED_BODY_MAX: usize = 16 << 10;

/// pingora's default limit on the ranges of one request.
const MAX_RANGES: Option<usize> = Some(200);

/// A response ready to write, and what the request's log line and metrics
/// need once it is written.
pub struct Answer {
    /// The head, and the body when it is small enough to copy.
    pub bytes: BytesMut,
    /// What is written after `bytes`.
    pub body: Body,
    pub status: u16,
    /// Body bytes sent (what pingora counts as sent).
    pub body_bytes: u64,
    /// The remote and cache key it was decided as.
    pub decided: Arc<Decided>,
    pub request_id: String,
    /// The sha256 of the body it delivers, for the audit trail.
    pub sha256: Option<BodyDigest>,
}

/// The part of a body written after the head.
pub enum Body {
    /// None (copied behind the head, or no body at all).
    Sent,
    Memory(Bytes),
    File {
        open: OpenFile,
        range: Range<u64>,
    },
}

/// The answer to `head` if it is a fresh hit whose record and body are at
/// hand and whose stored response is sent as it is; `None` sends the
/// request down the phases.
pub fn answer(
    app: &App,
    decisions: &Decisions,
    head: &Head<'_>,
    keep_alive: bool,
) -> Option<Answer> {
    if !head.plain() {
        return None;
    }
    let decided = decisions.decide(app, head)?;
    let now = SystemTime::now();
    if decided.rewritten {
        return rewritten(app, &decided, head, keep_alive, now);
    }
    let request_id = crate::request_id::pick(head.request_id);
    let at_hand = app.storage.fresh_at_hand(decided.id, now, |view| {
        let tail = Tail::new(view.epoch, now, &request_id, keep_alive);
        let response = (!head.conditional).then(|| from_view(view, &tail, head.is_head()))??;
        Some((response, audited_digest(&decided, view.sha256)))
    })?;
    let (response, sha256) = match at_hand {
        AtHand::Made(made) => made,
        AtHand::Parsed(hit) => {
            let tail = Tail::new(hit.record.meta.epoch, now, &request_id, keep_alive);
            let sha256 = audited_digest(&decided, &hit.record.body.sha256);
            (from_record(hit, head, &tail)?, sha256)
        }
    };
    Some(Answer {
        bytes: response.bytes,
        body: response.body,
        status: response.status,
        body_bytes: response.body_bytes,
        decided: decided.clone(),
        request_id,
        sha256,
    })
}

/// The answer to `head` once the commit of its entry has ended, when one
/// was under way after its client got the body (a request right behind
/// its miss): `None` when none was, or the entry is not at hand even so.
pub async fn answer_once_committed(
    app: &App,
    decisions: &Decisions,
    head: &Head<'_>,
    keep_alive: bool,
) -> Option<Answer> {
    if !app.storage.committing() || !head.plain() {
        return None;
    }
    let decided = decisions.decide(app, head)?;
    if !app.storage.committed(decided.id).await {
        return None;
    }
    answer(app, decisions, head, keep_alive)
}

/// The digest the audit trail records for a delivery, copied only when
/// the trail records this request's deliveries.
fn audited_digest(decided: &Decided, hex: &str) -> Option<BodyDigest> {
    decided.audited.as_ref().and_then(|_| BodyDigest::of(hex))
}

/// What is written for a hit, before the request's log line is added.
struct Response {
    bytes: BytesMut,
    body: Body,
    status: u16,
    body_bytes: u64,
}

/// A hit whose parsed record is at hand (the hot tier).
fn from_record(hit: FreshHit, head: &Head<'_>, tail: &Tail<'_>) -> Option<Response> {
    let FreshHit { record, body } = hit;
    let prepared = record.fast_head.get_or_init(|| prepare(&record));
    if prepared.is_empty() {
        return None;
    }
    let (mut bytes, range, status) = if head.conditional {
        conditional(head, &record, tail)?
    } else {
        plain(&record, prepared, tail)
    };
    let range = if head.is_head() { 0..0 } else { range };
    let body_bytes = range.end - range.start;
    let body = match body {
        _ if body_bytes == 0 => Body::Sent,
        FreshBody::Memory(body) => from_memory(
            &mut bytes,
            body.slice(range.start as usize..range.end as usize),
        ),
        FreshBody::File(open) => Body::File { open, range },
    };
    Some(Response {
        bytes,
        body,
        status,
        body_bytes,
    })
}

/// A plain (unconditional, unranged) hit answered from its record where
/// it lies: the head written from the stored pairs as [`prepare`] writes
/// it, the tail, the inline body copied behind them (the record is in a
/// buffer that is reused).
fn from_view(view: &RecordView<'_>, tail: &Tail<'_>, is_head: bool) -> Option<Response> {
    let body = if is_head { &[][..] } else { view.inline_body? };
    let mut bytes = BytesMut::with_capacity(512 + body.len());
    if !write_hit_head(view.status, view.header_pairs(), view.size, &mut bytes) {
        return None;
    }
    tail.write(&mut bytes);
    bytes.put_slice(body);
    Some(Response {
        bytes,
        body: Body::Sent,
        status: view.status.as_u16(),
        body_bytes: body.len() as u64,
    })
}

/// A hit on an index document, answered with its kept rewrite for this
/// client ([`crate::rewrites`]) when there is one made from the entry's
/// current record. Validators and ranges are not applied: they describe
/// the upstream's bytes, and the phases drop them for documents too.
fn rewritten(
    app: &App,
    decided: &Arc<Decided>,
    head: &Head<'_>,
    keep_alive: bool,
    now: SystemTime,
) -> Option<Answer> {
    let record = app.storage.fresh_record_now(decided.id, now)?;
    let base = documents::client_base(
        &app.config().server,
        &decided.remote,
        head.host,
        head.forwarded_proto,
    );
    let key = rewrites::key(decided.id, &record.body.sha256, &base, decided.generation);
    let copy = app.rewrites.get(&key)?;
    if copy.epoch != record.meta.epoch {
        // Made from an older meta: the phases make its header again.
        return None;
    }
    app.storage.accessed(decided.id);
    let request_id = crate::request_id::pick(head.request_id);
    let tail = Tail::new(record.meta.epoch, now, &request_id, keep_alive);
    let prepared = copy.fast_head.get_or_init(|| wire(&copy.header));
    let send = if head.is_head() {
        Bytes::new()
    } else {
        copy.body.clone()
    };
    let body_bytes = send.len() as u64;
    let mut bytes = headed(prepared, &tail, body_bytes);
    let body = from_memory(&mut bytes, send);
    Some(Answer {
        bytes,
        body,
        status: copy.header.status.as_u16(),
        body_bytes,
        decided: decided.clone(),
        request_id,
        sha256: None,
    })
}

/// Requests already decided, by target and `Accept`: the decision reads
/// nothing but the request and the configuration (a decision made before a
/// reload is made again), and making it (route, path validation,
/// patterns, the ecosystem's routing, the cache key and its hash) costs
/// more than the rest of a hit. Only requests the fast path may answer
/// are kept; a refusal or anything else is decided by the phases each
/// time.
pub struct Decisions {
    memo: MemoryCache<u64, Arc<Decided>>,
}

/// An artifact request the fast path may answer: its remote and entry.
pub struct Decided {
    target: Box<str>,
    accept: Option<Box<str>>,
    pub remote: Arc<Remote>,
    /// The cache key after the remote, for the access log.
    pub key: crate::access_log::KeyPath,
    id: u128,
    /// The [`App::config_generation`] it was decided under.
    generation: u64,
    /// An index document, answered with a kept rewrite.
    rewritten: bool,
    /// What the audit trail records of a delivery: `None` for what it
    /// does not record (documents), and for everything when it is off.
    pub audited: Option<Audited>,
}

/// A release as the audit trail names it, decided once.
pub struct Audited {
    pub release: Option<filters::ecosystem::PackageVersion>,
}

/// Decisions kept: the hot set of a busy mirror, at ~200 bytes each.
const DECISIONS: usize = 32 * 1024;
/// Requests each thread remembers having decided: a request decided
/// again while it is remembered is offered to the memo.
const REMEMBERED: usize = 16 * 1024;

thread_local!(static DECIDED: Recent<REMEMBERED> = const { Recent::new() });
/// Longer targets (and `Accept` values) are decided each time rather than
/// kept: the memo is bounded by count, so its memory is bounded by this.
const KEPT_REQUEST_MAX: usize = 512;

impl Decisions {
    pub fn new() -> Self {
        Decisions {
            memo: MemoryCache::new(DECISIONS),
        }
    }

    fn decide(&self, app: &App, head: &Head<'_>) -> Option<Arc<Decided>> {
        let hash = request_hash(head.target, head.accept);
        let generation = app.config_generation();
        if let (Some(decided), _) = self.memo.get(&hash) {
            if *decided.target == *head.target
                && decided.accept.as_deref() == head.accept
                && decided.generation == generation
            {
                return Some(decided);
            }
        }
        let decided = Arc::new(decide(app, head, generation)?);
        let short = head.target.len() + head.accept.map_or(0, str::len) <= KEPT_REQUEST_MAX;
        // Offered to the memo when decided again soon: a target asked
        // again and again gets in from its second request, and a spread of
        // targets too wide for the memo (a million objects) costs a
        // decision each, not also an insert the memo's filter would mostly
        // turn away.
        if short && seen_again(&DECIDED, hash) {
            self.memo.put(&hash, decided.clone(), None);
        }
        Some(decided)
    }
}

/// FNV-1a over the target and `Accept` (a collision only costs a fresh
/// decision: the memo compares both).
fn request_hash(target: &str, accept: Option<&str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let accept = accept.map_or(&[0xff][..], str::as_bytes);
    for &byte in target.as_bytes().iter().chain([0u8].iter()).chain(accept) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The request phase's decision, when it is an artifact whose stored
/// response is sent as it is.
fn decide(app: &App, head: &Head<'_>, generation: u64) -> Option<Decided> {
    let (path, query) = head.path_and_query();
    let Route::Artifact { remote, raw_path } = filters::route(path) else {
        return None;
    };
    let config = app.config();
    // Left to the phases: a registry remote's hits (routed as `/v2/` is),
    // and those of a remote that refuses withdrawn releases (a withdrawal
    // is learnt from an index, after the memo decided).
    let remote = (config.remotes.get(remote))
        .filter(|r| !r.ecosystem.speaks_registry_api() && !r.refuse_withdrawn)?;
    let view = RequestView {
        method: &Method::GET,
        query,
        accept: head.accept,
    };
    let Action::Proxy(artifact) = request::decide_artifact(app, &view, remote, raw_path).action
    else {
        return None;
    };
    // Left to the phases too: hits held to a minimum age (checked against
    // their publication date, `hold_cached`) and hits a dry-run rule marks.
    if artifact.judged.min_age.is_some() || artifact.judged.dry_run.is_some() {
        return None;
    }
    let rewritten = documents::served_rewritten(&artifact) && app.rewrites.enabled();
    if !hooks::served_as_stored(&artifact) && !rewritten {
        return None;
    }
    Some(Decided {
        target: head.target.into(),
        accept: head.accept.map(Into::into),
        id: cache::id(&artifact),
        key: crate::access_log::KeyPath::of(&artifact.key_parts),
        audited: (artifact.is_release() && config.server.audit.enabled).then(|| Audited {
            release: artifact.release(),
        }),
        remote: artifact.remote,
        generation,
        rewritten,
    })
}

/// What each response adds to the stored head.
struct Tail<'a> {
    age: u64,
    request_id: &'a str,
    keep_alive: bool,
}

impl<'a> Tail<'a> {
    fn new(epoch: SystemTime, now: SystemTime, request_id: &'a str, keep_alive: bool) -> Self {
        let age = now.duration_since(epoch).unwrap_or_default().as_secs();
        Tail {
            age,
            request_id,
            keep_alive,
        }
    }

    fn connection(&self) -> &'static str {
        if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        }
    }

    fn write(&self, out: &mut BytesMut) {
        let date = get_cached_date();
        let mut age = itoa::Buffer::new();
        for (name, value) in [
            ("age", age.format(self.age).as_bytes()),
            (crate::request_id::HEADER, self.request_id.as_bytes()),
            ("date", date.as_bytes()),
            ("connection", self.connection().as_bytes()),
        ] {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
    }
}

/// The common case: the record's prepared head, the tail, the whole body.
fn plain(entry: &Record, prepared: &Bytes, tail: &Tail<'_>) -> (BytesMut, Range<u64>, u16) {
    let out = headed(prepared, tail, entry.body.size);
    (out, 0..entry.body.size, entry.meta.header.status.as_u16())
}

/// A prepared head and its tail, with room behind them for a body of
/// `body_len` bytes if it is small enough to copy.
fn headed(prepared: &Bytes, tail: &Tail<'_>, body_len: u64) -> BytesMut {
    let copied = COPIED_BODY_MAX.min(body_len as usize);
    let mut out = BytesMut::with_capacity(prepared.len() + 160 + copied);
    out.put_slice(prepared);
    tail.write(&mut out);
    out
}

/// `part` of a body held in memory: copied behind the head in `bytes`
/// when it is small, written after it otherwise.
fn from_memory(bytes: &mut BytesMut, part: Bytes) -> Body {
    if part.is_empty() {
        Body::Sent
    } else if part.len() <= COPIED_BODY_MAX {
        bytes.put_slice(&part);
        Body::Sent
    } else {
        Body::Memory(part)
    }
}

/// The stored head as a hit sends it before the per-request headers;
/// empty when the fast path cannot send it (see [`write_hit_head`]).
fn prepare(entry: &Record) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    let header = &entry.meta.header;
    let pairs = entry.meta.header_pairs().into_iter();
    if !write_hit_head(header.status, pairs, entry.body.size, &mut out) {
        return Bytes::new();
    }
    out.freeze()
}

/// Writes a stored head as a hit sends it before the per-request tail: the
/// status line and the stored pairs, with `Accept-Ranges` (on a 200, as
/// pingora's range filter adds it) and `X-Artifact-Source` set as
/// pingora's `insert_header` sets a header: in the place of the first
/// pair of that name, the others dropped, or else at the end. `false` when
/// the fast path cannot send it: no `Content-Length` equal to the body's
/// size, or a `Transfer-Encoding` (pingora frames those itself).
fn write_hit_head<'p>(
    status: StatusCode,
    pairs: impl Iterator<Item = (&'p [u8], &'p [u8])> + Clone,
    body_size: u64,
    out: &mut BytesMut,
) -> bool {
    let named = |stored: &[u8], name: &HeaderName| stored.eq_ignore_ascii_case(name.as_ref());
    let framed = pairs
        .clone()
        .find(|(name, _)| named(name, &header::CONTENT_LENGTH))
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
        .is_some_and(|length| length == body_size);
    if !framed
        || pairs
            .clone()
            .any(|(name, _)| named(name, &header::TRANSFER_ENCODING))
    {
        return false;
    }
    let served: &[u8] = ServedFrom::Hit.header(false).as_bytes();
    // `Accept-Ranges` in the case pingora gives a known name it inserts.
    let both = [
        ("Accept-Ranges", &b"bytes"[..]),
        (served_from::HEADER, served),
    ];
    let set = if status == StatusCode::OK {
        &both[..]
    } else {
        &both[1..]
    };
    let mut placed = [false; 2];
    status_line(status, status.canonical_reason(), out);
    for (name, value) in pairs {
        match set
            .iter()
            .position(|(set, _)| name.eq_ignore_ascii_case(set.as_bytes()))
        {
            None => put_pair(out, name, value),
            Some(i) if !placed[i] => {
                put_pair(out, set[i].0.as_bytes(), set[i].1);
                placed[i] = true;
            }
            Some(_) => {}
        }
    }
    for ((name, value), placed) in set.iter().zip(placed) {
        if !placed {
            put_pair(out, name.as_bytes(), value);
        }
    }
    true
}

fn put_pair(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// A response header as pingora writes it, without the per-request tail.
fn wire(header: &ResponseHeader) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    status_line(header.status, header.get_reason_phrase(), &mut out);
    header.header_to_h1_wire(&mut out);
    out.freeze()
}

/// A request with validators or a range: pingora's own filters on a copy
/// of the stored header, in the order its hit path applies them, and the
/// part of the body they leave. A multi-range request is declined
/// (pingora writes multipart bodies).
fn conditional(
    head: &Head<'_>,
    entry: &Record,
    tail: &Tail<'_>,
) -> Option<(BytesMut, Range<u64>, u16)> {
    let method = if head.is_head() {
        Method::HEAD
    } else {
        Method::GET
    };
    let mut req = RequestHeader::build(method, head.target.as_bytes(), Some(4)).ok()?;
    let validators: [(HeaderName, Option<&str>); 4] = [
        (header::IF_NONE_MATCH, head.if_none_match),
        (header::IF_MODIFIED_SINCE, head.if_modified_since),
        (header::RANGE, head.range),
        (header::IF_RANGE, head.if_range),
    ];
    for (name, value) in validators {
        if let Some(value) = value {
            req.insert_header(name, value).ok()?;
        }
    }
    let mut resp = entry.meta.header.clone();
    let not_modified = not_modified_filter(&req, &resp);
    if not_modified {
        to_304(&mut resp);
    }
    let range = match range_header_filter(&req, &mut resp, MAX_RANGES) {
        RangeType::Multi(_) => return None,
        RangeType::Single(range) => Some(range),
        RangeType::Invalid => Some(0..0),
        RangeType::None if not_modified => Some(0..0),
        RangeType::None => None,
    };
    let part = range.map_or(0..entry.body.size, |r| r.start as u64..r.end as u64);
    resp.insert_header(served_from::HEADER, ServedFrom::Hit.header(false))
        .ok()?;
    let mut out =
        BytesMut::with_capacity(512 + COPIED_BODY_MAX.min(part.end as usize - part.start as usize));
    status_line(resp.status, resp.get_reason_phrase(), &mut out);
    resp.header_to_h1_wire(&mut out);
    tail.write(&mut out);
    Some((out, part, resp.status.as_u16()))
}

/// `HTTP/1.1 200 OK\r\n`, as pingora writes a hit's status line.
fn status_line(status: StatusCode, reason: Option<&str>, out: &mut BytesMut) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    if let Some(reason) = reason {
        out.put_slice(reason.as_bytes());
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::{BodyInfo, StoredMeta};
    use std::time::{Duration, UNIX_EPOCH};

    fn record(status: u16, headers: &[(&str, &str)]) -> Record {
        let mut header = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            header.append_header(name.to_string(), *value).unwrap();
        }
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let body = Bytes::from(vec![b'x'; 42]);
        let stored = Record {
            meta: StoredMeta {
                fresh_until: at + Duration::from_secs(60),
                created: at,
                epoch: at,
                stale_while_revalidate_sec: 0,
                stale_if_error_sec: 0,
                header,
            },
            body: BodyInfo {
                body_key: String::new(),
                size: body.len() as u64,
                sha256: String::new(),
                remote: "r".into(),
                path: "p".into(),
                fetched_at: 0,
            },
            inline_body: Some(body),
            fast_head: Default::default(),
        };
        // As a restart would read it back.
        Record::decode(&stored.encode()).unwrap()
    }

    /// The head as pingora's own calls make it: the stored header cloned,
    /// the two headers inserted, then written.
    fn pingora_head(entry: &Record) -> Bytes {
        let mut header = entry.meta.header.clone();
        if header.status == StatusCode::OK {
            header
                .insert_header(header::ACCEPT_RANGES, "bytes")
                .unwrap();
        }
        header
            .insert_header(served_from::HEADER, ServedFrom::Hit.header(false))
            .unwrap();
        wire(&header)
    }

    #[test]
    fn the_written_head_is_the_one_pingora_makes() {
        let cases: [(u16, &[(&str, &str)]); 4] = [
            (
                200,
                &[
                    ("Content-Type", "a/b"),
                    ("Content-Length", "42"),
                    ("ETag", "\"e\""),
                ],
            ),
            (
                200,
                &[
                    ("X-Artifact-Source", "upstream"),
                    ("Content-Length", "42"),
                    ("accept-Ranges", "none"),
                    ("Accept-Ranges", "bytes, none"),
                    ("Vary", "a"),
                    ("vary", "b"),
                ],
            ),
            (203, &[("content-length", "42"), ("Accept-Ranges", "none")]),
            (299, &[("Content-Length", "42")]),
        ];
        for (status, headers) in cases {
            let entry = record(status, headers);
            let expected = pingora_head(&entry);
            assert_eq!(
                prepare(&entry),
                expected,
                "{}",
                String::from_utf8_lossy(&expected)
            );
        }
    }

    #[test]
    fn a_head_pingora_must_frame_is_not_written() {
        let cases: [&[(&str, &str)]; 4] = [
            &[("Content-Type", "a/b")],
            &[("Content-Length", "41")],
            &[("Content-Length", "x42")],
            &[("Content-Length", "42"), ("Transfer-Encoding", "chunked")],
        ];
        for headers in cases {
            assert!(prepare(&record(200, headers)).is_empty(), "{headers:?}");
        }
    }

    #[test]
    fn a_hit_from_the_record_where_it_lies_is_the_hit_from_the_hot_tier() {
        let entry = record(200, &[("Content-Length", "42"), ("ETag", "\"e\"")]);
        let encoded = entry.encode();
        let view = RecordView::parse(&encoded).unwrap();
        let now = entry.meta.epoch + Duration::from_secs(7);
        for is_head in [false, true] {
            let tail = Tail::new(entry.meta.epoch, now, "id-1", true);
            let made = from_view(&view, &tail, is_head).unwrap();
            let mut expected = BytesMut::new();
            expected.put_slice(&prepare(&entry));
            tail.write(&mut expected);
            if !is_head {
                expected.put_slice(entry.inline_body.as_deref().unwrap());
            }
            assert_eq!(made.bytes, expected);
            assert_eq!(
                (made.status, made.body_bytes),
                (200, if is_head { 0 } else { 42 })
            );
        }
    }

    #[test]
    fn the_request_hash_tells_target_and_accept_apart() {
        let hashes = [
            request_hash("/a/b", None),
            request_hash("/a/b", Some("")),
            request_hash("/a/b", Some("x")),
            request_hash("/a/bx", None),
            request_hash("/a/b\0x", None),
        ];
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            request_hash("/a/b", Some("x")),
            request_hash("/a/b", Some("x"))
        );
    }
}
