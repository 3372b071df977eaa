//! The request's side of fills assembled from ranges
//! ([`crate::storage::large`]): which responses start one and how it may
//! use ranges, how the fill reaches its upstream again, and how the request
//! that started it keeps its client when its own upstream response ends
//! early (broken, or stopped where the fill's other fetches take over).
//!
//! **Offer.** A cacheable `200` of a file or blob of at least
//! `cache.resumable_fill_min` bytes, whose upstream names a validator
//! (`ETag`, else `Last-Modified`) or whose digest is known, is offered to
//! the storage before its miss handler starts, with its [`FillShape`]:
//! parallel from `cache.parallel_fill_min`, fetching ranges for readers
//! from `cache.range_fill_min`. Its digest check moves from the stream to
//! the fill, which sees every byte.
//!
//! **Range fetches** are artifactd's own requests through its listener
//! ([`crate::loopback`]), marked with a secret of this process
//! ([`FILL_PART_HEADER`]): they take the request's route, credentials,
//! redirects, breaker and upstream metrics, but never the cache (they are
//! part of a fill, and must not wait on it), and carry `Range` and
//! `If-Range` to the upstream as they are.
//!
//! **The leading client.** pingora ends a request whose upstream response
//! ended early. When its fill goes on, `fail_to_proxy` instead sends the
//! client the rest of its response from the fill, from the byte it had
//! reached ([`continue_leader`]): the leading client sees a pause at most,
//! like every other.

use super::artifact::{Artifact, ArtifactKind};
use super::ctx::{LargeLead, RequestCtx};
use super::outcome::header;
use crate::app::App;
use crate::config::server::LargeFills;
use crate::metrics::recent::ProblemKind;
use crate::storage::large::{FillShape, Offer, Part, RangeSource};
use crate::storage::layout::EntryLocation;
use filters::ecosystem::oci::Kind;
use filters::fill_ranges::{judge_part, parse_content_range, range_header, PartAnswer};
use futures::StreamExt;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};
use std::ops::Range;
use std::sync::{Arc, LazyLock, OnceLock};

/// Marks artifactd's own range requests for a fill; its value is a secret
/// of this process, so a client cannot use it to bypass the cache.
pub const FILL_PART_HEADER: &str = "x-artifactd-fill-part";

static SECRET: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// Whether the request is one of artifactd's own range requests for a
/// fill (the mark is removed either way: it never goes upstream).
pub fn is_fill_part(req: &mut pingora::http::RequestHeader) -> bool {
    let Some(presented) = req.remove_header(FILL_PART_HEADER) else {
        return false;
    };
    crate::auth::constant_time_eq(presented.as_bytes(), SECRET.as_bytes())
}

/// Offers the fill this response starts as resumable, when it qualifies.
pub fn offer(app: &Arc<App>, session: &Session, ctx: &mut RequestCtx, resp: &ResponseHeader) {
    let settings = app.config().server.large_fills;
    let Some(artifact) = &ctx.artifact else {
        return;
    };
    let qualifies = settings.resume_attempts > 0
        && session.cache.enabled()
        && ctx.fill.peer.is_none()
        && resp.status == http::StatusCode::OK
        && stored_as_sent(artifact)
        // Resumes repeat the request by its path.
        && session.req_header().raw_path().starts_with(b"/");
    let length = header(resp, http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let (true, Some(length)) = (qualifies, length) else {
        return;
    };
    if length < settings.resumable_min {
        return;
    }
    let expected = expected_digest(ctx);
    let validator = header(resp, http::header::ETAG)
        .filter(|etag| !etag.starts_with("W/"))
        .or_else(|| header(resp, http::header::LAST_MODIFIED))
        .map(str::to_string);
    if validator.is_none() && expected.is_none() {
        // Nothing tells a resumed body from another version's.
        return;
    }
    let Some(location) = session.cache.maybe_cache_key().map(EntryLocation::from_key) else {
        return;
    };
    let req = session.req_header();
    let source = LoopbackRanges {
        app: app.clone(),
        target: req.uri.to_string(),
        accept: super::documents::header(req, http::header::ACCEPT).map(str::to_string),
        validator,
        length,
        refusal: Refusal::of(artifact),
    };
    let taken = Arc::new(OnceLock::new());
    let offer = Offer {
        source: Arc::new(source),
        expected,
        resume_attempts: settings.resume_attempts,
        shape: shape(&settings, resp, length),
        taken: taken.clone(),
    };
    let id = location.id();
    ctx.large = Some(LargeLead {
        id,
        taken,
        _offer: app.storage.offers.offer(id, offer),
    });
    // The fill checks the whole body; the stream would check only the
    // leading response's part of it.
    ctx.checks.body_check = None;
    ctx.checks.file_check = None;
}

/// How the fill of `length` bytes may use ranges beyond resuming.
fn shape(settings: &LargeFills, resp: &ResponseHeader, length: u64) -> FillShape {
    let ranges_advertised = header(resp, http::header::ACCEPT_RANGES).is_some_and(|units| {
        units
            .split(',')
            .any(|u| u.trim().eq_ignore_ascii_case("bytes"))
    });
    FillShape {
        connections: match length >= settings.parallel_min {
            true => settings.parallel_connections as usize,
            false => 1,
        },
        part: settings.parallel_part,
        for_readers: length >= settings.range_min,
        ranges_advertised,
    }
}

/// Files and blobs: bodies stored as the upstream sent them, large enough
/// to matter. Index documents are rewritten; manifests are small.
fn stored_as_sent(artifact: &Artifact) -> bool {
    match &artifact.kind {
        ArtifactKind::File => true,
        ArtifactKind::Oci(oci) => oci.kind == Kind::Blob,
        ArtifactKind::Document(_) => false,
    }
}

fn expected_digest(ctx: &RequestCtx) -> Option<String> {
    let checks = &ctx.checks;
    let from_blob = checks.body_check.as_ref().map(|c| &c.verifier);
    let verifier = from_blob.or(checks.file_check.as_ref())?;
    verifier.expected().map(str::to_string)
}

/// How a body that failed its digest is reported, as the request path
/// reports it.
struct Refusal {
    kind: ProblemKind,
    remote: String,
    path: String,
}

impl Refusal {
    fn of(artifact: &Artifact) -> Refusal {
        let kind = match artifact.kind {
            ArtifactKind::Oci(_) => ProblemKind::DigestMismatch,
            _ => ProblemKind::ChecksumMismatch,
        };
        Refusal {
            kind,
            remote: artifact.remote.name.clone(),
            path: artifact.key_parts[0].clone(),
        }
    }
}

/// A fill's range requests, through artifactd's own listener.
struct LoopbackRanges {
    app: Arc<App>,
    /// The leading request's path and query.
    target: String,
    accept: Option<String>,
    validator: Option<String>,
    length: u64,
    refusal: Refusal,
}

#[async_trait::async_trait]
impl RangeSource for LoopbackRanges {
    async fn fetch(&self, span: Range<u64>) -> Result<Part, String> {
        let mut request = (self.app.loopback)
            .request(reqwest::Method::GET, &self.target)
            .header(http::header::RANGE, range_header(&span))
            .header(FILL_PART_HEADER, SECRET.as_str());
        if let Some(validator) = &self.validator {
            request = request.header(http::header::IF_RANGE, validator);
        }
        if let Some(accept) = &self.accept {
            request = request.header(http::header::ACCEPT, accept);
        }
        let resp = request.send().await.map_err(|e| e.to_string())?;
        let content_range = resp
            .headers()
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok());
        match judge_part(resp.status().as_u16(), content_range, &span, self.length) {
            PartAnswer::Part => Ok(Part::Bytes(
                resp.bytes_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other))
                    .boxed(),
            )),
            PartAnswer::Whole => Ok(Part::Changed),
            PartAnswer::Unusable(why) => Err(why),
        }
    }

    fn refused(&self, expected: &str, actual: &str) {
        let Refusal { kind, remote, path } = &self.refusal;
        log::warn!(
            "{kind:?}: remote '{remote}' {path}: expected {expected}, upstream sent {actual}; nothing committed"
        );
        let detail = format!("expected {expected}, upstream sent {actual}");
        (self.app.metrics).refused_body(*kind, remote, path, detail);
    }
}

/// After the request's upstream response ended early (broken, or stopped
/// where other fetches take over): sends the client the rest of its
/// response from the fill, which goes on without it. `None` when
/// there is no such fill (the error is the client's then).
pub async fn continue_leader(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Option<FailToProxy> {
    let lead = ctx.large.as_ref()?;
    let tag = *lead.taken.get()?;
    if let Some(slot) = ctx.upstream_slot.as_mut() {
        // The fill's own requests may need the connection this one held.
        slot.release_connection();
    }
    let written = session.response_written()?;
    let status = written.status.as_u16();
    let done = Some(FailToProxy {
        error_code: status,
        can_reuse_downstream: false,
    });
    if session.req_header().method == http::Method::HEAD {
        // Its answer was complete; the fill goes on in the background.
        ctx.large_continued = true;
        return done;
    }
    let (span, ranged) = answered_span(written)?;
    let from = span.start + session.body_bytes_sent() as u64;
    if from >= span.end {
        // Its response was complete before the fill stopped this request.
        ctx.large_continued = true;
        return done;
    }
    let (_, mut reader) = app.storage.fill_reader(lead.id, tag)?;
    use pingora::cache::storage::HandleHit;
    match ranged {
        true => reader.seek(from as usize, Some(span.end as usize)).ok()?,
        false => reader.continue_at(from),
    }
    ctx.large_continued = true;
    log::info!(
        "{} {}: its upstream response ended early; byte {from} on comes from the fill",
        session.req_header().method,
        session.req_header().uri.path()
    );
    loop {
        let chunk = match reader.read_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                log::warn!("the fill failed: {e}");
                ctx.large_continued = false;
                return None;
            }
        };
        if let Err(e) = session.write_response_body(Some(chunk), false).await {
            log::info!("client left while its fill resumed: {e}");
            return done;
        }
    }
    if let Err(e) = session.write_response_body(None, true).await {
        log::info!("client left at the end of its response from the fill: {e}");
    }
    done
}

/// The bytes of the object a written response carries, and whether they
/// are a range: its `Content-Range`, else all of its `Content-Length`.
fn answered_span(written: &ResponseHeader) -> Option<(Range<u64>, bool)> {
    match header(written, http::header::CONTENT_RANGE) {
        Some(range) => parse_content_range(range).map(|(span, _)| (span, true)),
        None => {
            let length = header(written, http::header::CONTENT_LENGTH)?;
            Some((0..length.parse().ok()?, false))
        }
    }
}
