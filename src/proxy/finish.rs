//! What happens when a request ends, whatever its path: the breaker
//! learns whether the upstream answered, a fetched manifest gets the
//! headers it lacked, a tag only ever HEADed is revalidated in the
//! background, and the request is counted and logged.

use super::ctx::RequestCtx;
use super::failure::Failure;
use super::outcome::UpstreamOutcome;
use super::prefetch::Prefetcher;
use crate::access_log::KeyPath;
use crate::app::App;
use crate::metrics::recent::{Problem, ProblemKind};
use crate::metrics::Outcome;
use crate::served_from::ServedFrom;
use filters::breaker::Admit;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource};

pub async fn request_ended(
    app: &App,
    session: &Session,
    error: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    let upstream_error = upstream_failed(ctx, error);
    tell_breaker(app, ctx, error, upstream_error);
    complete_manifest_headers(app, ctx).await;
    if let Some(artifact) = &ctx.artifact {
        if ctx.revalidate_in_background
            && Prefetcher::applies(artifact, &session.req_header().method)
        {
            app.prefetcher.tag_manifest(artifact);
        }
        follow_signatures(app, session, artifact);
    }
    super::traffic::upstream_unanswered(app, ctx);
    let source = ctx.served_from(session.cache.phase());
    let ended = Ended {
        source,
        status: (session.response_written()).map_or(0, |r| r.status.as_u16()),
        // A fill's own range request serves no client.
        bytes: if ctx.fill_part {
            0
        } else {
            session.body_bytes_sent() as u64
        },
        duration: ctx.started.elapsed(),
    };
    if let Some(remote) = &ctx.remote_name {
        let quarantined = ctx.held_in_cache
            || matches!(
                ctx.attempt.outcome,
                Some(UpstreamOutcome::Quarantined { .. })
            );
        app.metrics.record(&crate::metrics::Request {
            remote,
            outcome: ctx.outcome.unwrap_or(Outcome::Other),
            source,
            status: ended.status,
            bytes: ended.bytes,
            upstream_bytes: ctx.attempt.body_bytes,
            upstream_error,
            quarantined,
            duration: ended.duration,
            upstream: ctx.attempt.header_wait,
            fast_path: false,
        });
        if upstream_error {
            remember_upstream_error(app, session, error, ctx, remote, source);
        }
    }
    audit(app, session, ctx, &ended);
    if crate::access_log::enabled() {
        write_access(session, error, ctx, &ended);
    }
}

/// Records an artifact delivered in the audit trail.
fn audit(app: &App, session: &Session, ctx: &RequestCtx, ended: &Ended) {
    if ctx.fill_part || !app.config().server.audit.enabled {
        // Part of a fill, not a delivery; or no trail kept.
        return;
    }
    let req = session.req_header();
    let Some(artifact) = ctx.artifact.as_ref().filter(|a| a.is_release()) else {
        return;
    };
    if !crate::audit::delivered(req.method.as_str(), ended.status) {
        return;
    }
    let header = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
    // What came from the cache is the record the hot tier holds now; a
    // body fetched for this request leaves it to the catalog.
    let from_cache = matches!(
        ended.source,
        ServedFrom::Hit | ServedFrom::Stale | ServedFrom::Revalidated
    );
    let held = from_cache
        .then(|| app.storage.held_digest(super::cache::id(artifact)))
        .flatten()
        .and_then(|held| crate::audit::BodyDigest::of(&held));
    crate::audit::count(
        app,
        crate::audit::Served {
            remote: &artifact.remote.name,
            path: artifact.path(),
            release: artifact.release().as_ref(),
            client: session.client_addr().and_then(crate::audit::client_ip),
            authorization: header(http::header::AUTHORIZATION),
            user_agent: header(http::header::USER_AGENT),
            sha256: held,
        },
    );
}

/// A manifest just fetched from the upstream: its signatures follow.
fn follow_signatures(app: &App, session: &Session, artifact: &super::artifact::Artifact) {
    let fetched = matches!(
        session.cache.phase(),
        pingora::cache::CachePhase::Miss | pingora::cache::CachePhase::Expired
    );
    let Some(resp) = session.response_written().filter(|r| r.status == 200) else {
        return;
    };
    if !fetched || !Prefetcher::follows_signatures(artifact, session.req_header()) {
        return;
    }
    let digest = (artifact.oci().and_then(|oci| oci.digest.clone())).or_else(|| {
        let header = resp.headers.get("docker-content-digest")?;
        header.to_str().ok().map(str::to_string)
    });
    if let Some(digest) = digest {
        app.prefetcher.signatures(artifact, &digest);
    }
}

/// How a request ended, for the counters and the access line.
struct Ended {
    source: ServedFrom,
    /// 0 when no response was written.
    status: u16,
    bytes: u64,
    duration: std::time::Duration,
}

/// Lists an upstream failure on the status page, with what the client got.
fn remember_upstream_error(
    app: &App,
    session: &Session,
    error: Option<&Error>,
    ctx: &RequestCtx,
    remote: &str,
    source: ServedFrom,
) {
    let kind = match source.is_cached() {
        true => ProblemKind::ServedStale,
        false => ProblemKind::UpstreamError,
    };
    let detail = match (error, ctx.attempt.status) {
        (Some(e), _) => e.to_string(),
        (None, Some(status)) => format!("upstream answered {status}"),
        (None, None) => "upstream failed".to_string(),
    };
    let path = session.req_header().uri.path();
    (app.metrics.recent).add(Problem::new(kind, remote, path, detail));
}

/// Whether the upstream failed this request. A response's outcome says
/// so (a 5xx served stale by pingora's revalidation reaches here without
/// an error), as does a stale copy served for a failed upstream (pingora
/// ends such a request without the error); without either, an upstream
/// error (refused, timed out, token, digest mismatch) is the failure,
/// unless it only asked for a retry.
fn upstream_failed(ctx: &RequestCtx, error: Option<&Error>) -> bool {
    match &ctx.attempt.outcome {
        Some(UpstreamOutcome::Vanished { .. } | UpstreamOutcome::Quarantined { .. }) => false,
        Some(outcome) if outcome.is_upstream_failure() => true,
        _ if ctx.stale_for_failure => true,
        _ => error.is_some_and(|e| e.esource() == &ErrorSource::Upstream && !super::is_retry(e)),
    }
}

/// A body that failed its digest or checksum came from an upstream that
/// answers: the breaker is for availability.
fn tell_breaker(app: &App, ctx: &RequestCtx, error: Option<&Error>, upstream_error: bool) {
    let (Some(artifact), Some(admit @ (Admit::Yes | Admit::Probe))) =
        (&ctx.artifact, ctx.attempt.admitted)
    else {
        return;
    };
    let refused_content = error
        .and_then(Failure::of)
        .is_some_and(Failure::refused_content);
    let answered = !upstream_error || refused_content;
    app.breakers.record(&artifact.remote.name, admit, answered);
}

/// The fill has committed by now: later hits carry what the upstream
/// left out of a manifest's headers.
async fn complete_manifest_headers(app: &App, ctx: &mut RequestCtx) {
    let (Some(artifact), Some(fix)) = (&ctx.artifact, ctx.checks.header_fix.take()) else {
        return;
    };
    let edit = |header: &mut ResponseHeader| fix.apply(header);
    let key = super::cache::key(artifact);
    let updated = app.storage.update_header(&key, &fix.body_sha256, edit);
    if let Err(e) = updated.await {
        log::warn!("completing the headers of a cached manifest: {e}");
    }
}

fn write_access(session: &Session, error: Option<&Error>, ctx: &RequestCtx, ended: &Ended) {
    let req = session.req_header();
    let key = ctx.artifact.as_ref().map(|a| KeyPath::of(&a.key_parts));
    crate::access_log::Access {
        request_id: crate::request_id::of(req),
        client: (session.client_addr()).map_or_else(|| "-".to_string(), |a| a.to_string()),
        method: req.method.as_str(),
        remote: ctx.remote_name.as_deref().unwrap_or("-"),
        path: req.uri.path(),
        status: ended.status,
        source: ended.source.as_str(),
        bytes: ended.bytes,
        ms: ended.duration.as_secs_f64() * 1000.0,
        user_agent: (req.headers.get(http::header::USER_AGENT)).and_then(|v| v.to_str().ok()),
        upstream_ms: ctx.attempt.header_wait.map(|d| d.as_secs_f64() * 1000.0),
        upstream_status: ctx.attempt.status,
        upstream_bytes: ctx.attempt.body_bytes,
        key_remote: ctx.artifact.as_ref().map(|a| a.remote.name.as_str()),
        key: key.as_ref(),
        error: error.map(|e| e.to_string()),
    }
    .write();
}
