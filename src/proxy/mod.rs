//! The Pingora proxy: [`ArtifactProxy`] and its thin `ProxyHttp` impl.
//!
//! Each phase method extracts plain data, delegates the decision to a named
//! module and applies it:
//!
//! ```text
//! request_filter ── request::decide ──┬─ Reply  → respond::send (403/404/400/405)
//!                                     ├─ Admin  → admin::handle
//!                                     ├─ Local  → local::handle
//!                                     └─ Proxy  → ctx.artifact, continue
//! request_cache_filter → enable pingora-cache (storage, cache lock)
//! cache_key_callback   → cache::key
//! upstream_peer        → upstream::peer      (only on miss/revalidation)
//! upstream_request_filter → upstream::rewrite_request (+ credentials)
//! upstream_response_filter → credentials challenge, redirects, quarantine,
//!                            failures; oci headers and digest check setup
//! upstream_response_body_filter → verify::Verifier (digest before commit)
//! response_cache_filter   → cache::cacheability
//! response_filter      → X-Artifact-Source, registry API version
//! logging              → metrics, catalog access, one log line
//! ```

pub mod cache;
pub mod ctx;
pub mod oci;
pub mod request;
pub mod respond;
pub mod upstream;
pub mod verify;

use crate::app::App;
use crate::metrics::Outcome;
use async_trait::async_trait;
use ctx::RequestCtx;
use filters::breaker::Admit;
use pingora::cache::{CacheKey, CacheOptionOverrides, CachePhase, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use request::Action;
use std::sync::Arc;

pub struct ArtifactProxy {
    app: Arc<App>,
}

impl ArtifactProxy {
    pub fn new(app: Arc<App>) -> Self {
        ArtifactProxy { app }
    }
}

/// Follows an upstream redirect inside artifactd, so the artifact is cached
/// under the path the client asked for (release downloads commonly redirect
/// to a CDN). The retryable error makes pingora run the upstream phases
/// again, where `ctx.redirect` picks the new hop; nothing has reached the
/// client or the cache yet.
///
/// NOTE: pingora#866: this path does not return the upstream connection to
/// the pool, so each hop opens a new one.
fn follow_redirect(ctx: &mut RequestCtx, resp: &ResponseHeader) -> Result<()> {
    let Some(artifact) = &ctx.artifact else {
        return Ok(());
    };
    let from = match &ctx.redirect {
        Some(redirect) => redirect.upstream(),
        None => artifact.remote.upstream.clone().ok_or_else(no_artifact)?,
    };
    let location = resp
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    let Some(target) = upstream::redirect_target(resp.status.as_u16(), location, &from) else {
        return Ok(());
    };
    if ctx.redirects >= upstream::MAX_REDIRECTS {
        return Err(Error::new_up(ErrorType::Custom(
            "too many upstream redirects",
        )));
    }
    ctx.redirects += 1;
    ctx.redirect = Some(target);
    let mut hop = Error::new_up(ErrorType::Custom(REDIRECT_HOP));
    hop.set_retry(true);
    Err(hop)
}

const REDIRECT_HOP: &str = "following upstream redirect";
const AUTH_RETRY: &str = "retrying with upstream credentials";

/// Answers an upstream 401 with credentials (a registry token, or basic
/// auth) and asks pingora to send the request again, once per request.
async fn answer_challenge(app: &App, ctx: &mut RequestCtx, resp: &ResponseHeader) -> Result<()> {
    if resp.status != http::StatusCode::UNAUTHORIZED || ctx.challenged {
        return Ok(());
    }
    let (Some(artifact), Some(challenge)) = (
        &ctx.artifact,
        resp.headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return Ok(());
    };
    let Some(credentials) = app.credentials.of(&artifact.remote.name) else {
        return Ok(());
    };
    let scope = upstream::scope(artifact);
    let answer = credentials
        .answer_challenge(challenge, scope.as_deref(), ctx.authorization.as_deref())
        .await
        .map_err(|e| Error::new_up(ErrorType::Custom(TOKEN_FAILED)).more_context(e.to_string()))?;
    ctx.challenged = true;
    let Some(authorization) = answer else {
        return Ok(());
    };
    ctx.authorization = Some(authorization);
    let mut retry = Error::new_up(ErrorType::Custom(AUTH_RETRY));
    retry.set_retry(true);
    Err(retry)
}

/// The error of a request whose upstream token could not be had.
pub const TOKEN_FAILED: &str = "upstream token request failed";

/// Refuses a newly published artifact of a remote with `quarantine_new`
/// (the decision is `filters::quarantine::decide`). The refusal happens
/// before anything reaches the client or the cache, so a held artifact is
/// never stored and is fetched again once its quarantine has ended.
fn hold_quarantined(ctx: &mut RequestCtx, resp: &ResponseHeader) -> Result<()> {
    let Some(artifact) = &ctx.artifact else {
        return Ok(());
    };
    if resp.status != http::StatusCode::OK {
        return Ok(());
    }
    let last_modified = resp
        .headers
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok());
    let verdict = filters::quarantine::decide(
        artifact.class,
        last_modified,
        artifact.remote.quarantine_days,
        std::time::SystemTime::now(),
    );
    let filters::quarantine::Quarantine::Hold { until } = verdict else {
        return Ok(());
    };
    ctx.quarantined_until = Some(filters::quarantine::rfc3339(until));
    ctx.outcome = Some(Outcome::Other);
    Err(Error::explain(
        ErrorType::HTTPStatus(404),
        "artifact in quarantine",
    ))
}

fn no_artifact() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "no artifact in request context")
}

#[async_trait]
impl ProxyHttp for ArtifactProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Routes, validates and applies the ACL; answers everything that is
    /// not a cacheable artifact request itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let decision = request::decide(&self.app, session.req_header());
        ctx.remote_name = decision.remote;
        if decision.denied {
            ctx.outcome = Some(Outcome::Denied);
        }
        match decision.action {
            Action::Proxy(artifact) => {
                ctx.artifact = Some(artifact);
                return Ok(false);
            }
            Action::Reply(reply) => respond::send_unread(session, reply).await?,
            Action::Admin(route) => {
                let reply = crate::admin::handle(&self.app, route, session.req_header()).await;
                respond::send(session, reply).await?;
            }
            Action::ArtifactList(remote) => {
                let reply =
                    crate::admin::artifact_list(&self.app, &remote, session.req_header()).await;
                respond::send(session, reply).await?;
            }
            Action::Local { remote, path } => {
                let outcome = crate::local::handle(&self.app, session, &remote, &path).await?;
                ctx.outcome = Some(outcome);
            }
        }
        Ok(true)
    }

    /// Enables pingora-cache, with its lock, for artifact requests.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.artifact.is_some() {
            let mut overrides = CacheOptionOverrides::default();
            overrides.wait_timeout = Some(self.app.config.server.lock_timeout);
            session.cache.enable(
                self.app.storage,
                None,
                None,
                Some(self.app.cache_lock),
                Some(overrides),
            );
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        ctx.artifact
            .as_ref()
            .map(cache::key)
            .ok_or_else(no_artifact)
    }

    /// HEAD and range requests that must go upstream do not fill the cache
    /// (see [`cache::partial_miss`]).
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<bool> {
        if let Some(reason) = cache::partial_miss(session.req_header()) {
            if session.cache.enabled() {
                session.cache.disable(reason);
            }
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let artifact = ctx.artifact.as_ref().ok_or_else(no_artifact)?;
        // Redirect hops belong to the attempt already admitted.
        if ctx.admitted.is_none() {
            let admit = self.app.breakers.admit(&artifact.remote.name);
            ctx.admitted = Some(admit);
        }
        if let Some(Admit::No { .. }) = ctx.admitted {
            // No connection attempt: a cached copy is served by the
            // stale-if-error path, anything else fails fast with 503.
            return Err(Error::new_up(ErrorType::Custom(cache::REMOTE_DOWN)));
        }
        match &ctx.redirect {
            Some(redirect) => {
                upstream::peer(
                    &redirect.upstream(),
                    &artifact.remote,
                    &self.app.config.server,
                )
                .await
            }
            None => {
                let upstream = artifact.remote.upstream.as_ref().ok_or_else(no_artifact)?;
                upstream::peer(upstream, &artifact.remote, &self.app.config.server).await
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let artifact = ctx.artifact.as_ref().ok_or_else(no_artifact)?;
        if ctx.authorization.is_none() {
            ctx.authorization = upstream::authorization(&self.app, artifact).await?;
        }
        let authorization = ctx.authorization.as_deref();
        match &ctx.redirect {
            Some(redirect) => {
                upstream::rewrite_redirected(artifact, redirect, authorization, upstream_request)?
            }
            None => upstream::rewrite_request(artifact, authorization, upstream_request)?,
        }
        if !cache::revalidates_conditionally(artifact) {
            // Seed semantics: without check_mutable_updates (and always for
            // built-in patterns) an expired file is fetched again in full.
            upstream_request.remove_header(&http::header::IF_NONE_MATCH);
            upstream_request.remove_header(&http::header::IF_MODIFIED_SINCE);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        answer_challenge(&self.app, ctx, upstream_response).await?;
        if let Some(artifact) = &ctx.artifact {
            let has_copy = session.cache.maybe_cache_meta().is_some();
            cache::keep_vanished_immutable(artifact, has_copy, upstream_response)?;
        }
        follow_redirect(ctx, upstream_response)?;
        hold_quarantined(ctx, upstream_response)?;
        ctx.upstream_retry_after = upstream_response
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        cache::refuse_upstream_failure(upstream_response)?;
        if let Some(oci) = ctx.artifact.as_ref().and_then(|a| a.oci.as_ref()) {
            oci::complete_upstream_headers(oci, upstream_response)?;
            ctx.body_check = oci::body_check(oci, upstream_response);
        }
        // Clients get HTTP/1.1 framing whatever the upstream spoke; stored too.
        upstream_response.set_version(http::Version::HTTP_11);
        Ok(())
    }

    /// Checks content-addressed bodies against their digest before the
    /// last byte reaches the client or the cache ([`verify`]).
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let (Some(check), Some(artifact)) = (ctx.body_check.as_mut(), &ctx.artifact) else {
            return Ok(None);
        };
        match check.verifier.filter(body, end_of_stream) {
            Ok(None) => Ok(None),
            Ok(Some(verified)) => {
                oci::cross_link(&self.app, artifact, check, verified);
                Ok(None)
            }
            Err(mismatch) => Err(oci::digest_mismatch(&self.app, artifact, mismatch)),
        }
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let artifact = ctx.artifact.as_ref().ok_or_else(no_artifact)?;
        Ok(cache::cacheability(
            artifact,
            resp,
            self.app.config.server.negative_ttl,
        ))
    }

    /// Labels where the body came from; runs for hits and misses alike.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(artifact) = &ctx.artifact {
            if let Some(oci) = &artifact.oci {
                upstream_response.insert_header(oci::API_VERSION.0, oci::API_VERSION.1)?;
                oci::rewrite_link(oci, upstream_response)?;
            }
            let phase = session.cache.phase();
            upstream_response.insert_header("x-artifact-source", cache::source(phase))?;
            if let (CachePhase::Stale, Some(reason)) = (phase, &ctx.stale_reason) {
                upstream_response.insert_header("warning", "110 - \"Response is Stale\"")?;
                upstream_response.insert_header("x-artifact-stale", reason.as_str())?;
                // NOTE: pingora closes the client connection after serving
                // stale for a failed upstream; say so, or the client's next
                // request on it is reset.
                session.set_keepalive(None);
            }
        }
        Ok(())
    }

    /// Answers a failed request with the right status and a one-line reason.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let remote = ctx.remote_name.as_deref().unwrap_or("-");
        let (code, reply) = match (ctx.admitted, &ctx.quarantined_until) {
            (Some(Admit::No { retry_after_ms }), _) => {
                (503, respond::remote_down_reply(remote, retry_after_ms))
            }
            (_, Some(until)) => (404, respond::quarantine_reply(until)),
            _ => {
                let code = respond::error_status(e);
                let mut reply = respond::error_reply(code, e, ctx.remote_name.as_deref());
                if let Some(retry_after) = ctx.upstream_retry_after.take().filter(|_| code == 503) {
                    reply = reply.header("retry-after", retry_after);
                }
                (code, reply)
            }
        };
        let (code, reply) = match ctx.artifact.as_ref().and_then(|a| a.oci.as_ref()) {
            Some(oci) => oci::error_for(code, reply, oci.kind, ctx.upstream_status),
            None => (code, reply),
        };
        if code > 0 && session.response_written().is_none() {
            if let Err(write_error) = respond::send_and_close(session, reply).await {
                log::debug!("could not send the error response: {write_error}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Serves an expired copy in place of a failed upstream while it is
    /// within the remote's `stale_if_error` period (`filters::stale`).
    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        let (Some(error), Some(artifact)) = (error, &ctx.artifact) else {
            return false;
        };
        let Some(reason) = cache::upstream_failure(error) else {
            return false;
        };
        let Some(meta) = session.cache.maybe_cache_meta() else {
            return false;
        };
        if cache::vanished(error) {
            // An immutable artifact the upstream no longer has: the cached
            // copy is the artifact, whatever its age.
            ctx.stale_reason = Some(reason);
            return true;
        }
        let period = artifact
            .remote
            .stale_if_error
            .unwrap_or(self.app.config.server.stale_if_error);
        let verdict =
            filters::stale::decide(meta.fresh_until(), std::time::SystemTime::now(), period);
        let serve = matches!(verdict, filters::stale::Stale::Serve { .. });
        if serve {
            ctx.stale_reason = Some(reason);
        }
        serve
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // A quarantine hold is policy, logged by the request line.
        ctx.quarantined_until.is_some()
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        matches!(error.etype(), ErrorType::Custom(REDIRECT_HOP | AUTH_RETRY))
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let bytes = session.body_bytes_sent() as u64;
        let phase = session.cache.phase();
        let outcome = ctx.outcome.unwrap_or(match phase {
            CachePhase::Hit | CachePhase::Stale | CachePhase::StaleUpdating => Outcome::Hit,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Outcome::Revalidated,
            _ if ctx.artifact.is_some() => Outcome::Miss,
            _ => Outcome::Other,
        });
        let upstream_error = error
            .is_some_and(|e| e.esource() == &ErrorSource::Upstream && !cache::vanished(e))
            || ctx.upstream_status.is_some_and(|s| s >= 500 || s == 429);
        if let (Some(artifact), Some(admit @ (Admit::Yes | Admit::Probe))) =
            (&ctx.artifact, ctx.admitted)
        {
            self.app
                .breakers
                .record(&artifact.remote.name, admit, !upstream_error);
        }
        let source = if ctx.artifact.is_some() {
            cache::source(phase)
        } else {
            "-"
        };
        if let Some(remote) = &ctx.remote_name {
            self.app
                .metrics
                .record(remote, outcome, bytes, upstream_error);
        }
        let req = session.req_header();
        let error_text = error.map(|e| format!(" error=\"{e}\"")).unwrap_or_default();
        log::info!(
            "{} {} remote={} status={status} source={source} bytes={bytes} ms={}{error_text}",
            req.method,
            req.uri.path(),
            ctx.remote_name.as_deref().unwrap_or("-"),
            ctx.started.elapsed().as_millis(),
        );
    }
}
