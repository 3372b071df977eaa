//! What happens when a request ends, whatever its path: the breaker
//! learns whether the upstream answered, a fetched manifest gets the
//! headers it lacked, a tag only ever HEADed is revalidated in the
//! background, and the request is counted and logged.

use super::ctx::RequestCtx;
use super::failure::Failure;
use super::outcome::UpstreamOutcome;
use super::prefetch::Prefetcher;
use crate::app::App;
use crate::metrics::Outcome;
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
    }
    let source = ctx.served_from(session.cache.phase());
    let outcome = ctx.outcome.unwrap_or(Outcome::from(source));
    let bytes = session.body_bytes_sent() as u64;
    let duration = ctx.started.elapsed();
    if let Some(remote) = &ctx.remote_name {
        app.metrics.record(&crate::metrics::Request {
            remote,
            outcome,
            source,
            bytes,
            upstream_error,
            duration,
            upstream: ctx.attempt.header_wait,
            fast_path: false,
        });
    }
    if crate::access_log::enabled() {
        write_access(session, error, ctx, source, bytes, duration);
    }
}

/// Whether the upstream failed this request. A response's outcome says
/// so (a 5xx served stale by pingora's revalidation reaches here without
/// an error); without a response, an upstream error (refused, timed out,
/// token, digest mismatch) is the failure, unless it only asked for a
/// retry.
fn upstream_failed(ctx: &RequestCtx, error: Option<&Error>) -> bool {
    match &ctx.attempt.outcome {
        Some(UpstreamOutcome::Vanished { .. } | UpstreamOutcome::Quarantined { .. }) => false,
        Some(outcome) if outcome.is_upstream_failure() => true,
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

fn write_access(
    session: &Session,
    error: Option<&Error>,
    ctx: &RequestCtx,
    source: crate::served_from::ServedFrom,
    bytes: u64,
    duration: std::time::Duration,
) {
    let req = session.req_header();
    let status = (session.response_written()).map_or(0, |r| r.status.as_u16());
    crate::access_log::Access {
        request_id: crate::request_id::of(req),
        client: (session.client_addr()).map_or_else(|| "-".to_string(), |a| a.to_string()),
        method: req.method.as_str(),
        remote: ctx.remote_name.as_deref().unwrap_or("-"),
        path: req.uri.path(),
        status,
        source: source.as_str(),
        bytes,
        ms: duration.as_secs_f64() * 1000.0,
        upstream_ms: ctx.attempt.header_wait.map(|d| d.as_secs_f64() * 1000.0),
        error: error.map(|e| e.to_string()),
    }
    .write();
}
