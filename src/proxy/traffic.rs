//! What a request moved to and from its upstream — each response's status
//! and the body bytes received — kept in the request context for the
//! metrics and the access log. A fill streamed from another node of a
//! cluster is not upstream traffic: that node counted it.

use super::ctx::RequestCtx;
use crate::app::App;

/// An upstream response header arrived.
pub fn upstream_answered(app: &App, ctx: &mut RequestCtx, status: u16) {
    if ctx.fill.peer.is_some() {
        return;
    }
    ctx.attempt.status = Some(status);
    if let Some(remote) = &ctx.remote_name {
        app.metrics.upstream_response(remote, status);
    }
}

/// A chunk of an upstream body arrived.
pub fn upstream_body(ctx: &mut RequestCtx, chunk: Option<&bytes::Bytes>) {
    if let (Some(chunk), None) = (chunk, &ctx.fill.peer) {
        ctx.attempt.body_bytes += chunk.len() as u64;
    }
}

/// At the request's end: an upstream that was asked and never answered
/// (refused, timed out, reset) is counted as such.
pub fn upstream_unanswered(app: &App, ctx: &RequestCtx) {
    let asked = ctx.attempt.started.is_some() && ctx.fill.peer.is_none();
    if let (true, None, Some(remote)) = (asked, ctx.attempt.status, &ctx.remote_name) {
        app.metrics.upstream_response(remote, 0);
    }
}
