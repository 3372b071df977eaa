//! The Pingora proxy: [`ArtifactProxy`] and its thin `ProxyHttp` impl.
//!
//! Each phase method extracts plain data, delegates the decision to a named
//! module and applies it:
//!
//! ```text
//! request_filter ── request::decide ──┬─ Reply  → reply::send (403/404/400/405)
//!                                     ├─ Admin  → admin::answer
//!                                     ├─ Local  → local::handle
//!                                     ├─ Virtual → virtual_repo::handle
//!                                     └─ Proxy  → ctx.artifact (routed by its
//!                                        ecosystem), hooks::client_request
//! request_cache_filter → enable pingora-cache (storage, cache lock) when
//!                        hooks::cached
//! cache_key_callback   → cache::key
//! upstream_peer        → upstream::peer      (only on miss/revalidation),
//!                        after a slot of the remote's upstream_limits
//! upstream_request_filter → upstream::rewrite_request (+ credentials)
//! upstream_response_filter → outcome::classify once into ctx.attempt.outcome
//!                            (redirect, challenge, failure, vanished,
//!                            quarantine); hooks::upstream_response (the
//!                            kind's header fixes and body checks);
//!                            large::offer (a fill from ranges)
//! upstream_response_body_filter → hooks::upstream_body (digest, or the
//!                                 checksum an index published: files);
//!                                 the remote's pace (upstream_limits)
//! response_cache_filter   → cache::cacheability
//! response_filter      → X-Artifact-Source (ctx.served_from),
//!                        hooks::client_response, documents::BodyRewriter
//!                        for index documents (applied by the downstream
//!                        RewriteModule)
//! fail_to_proxy        → large::continue_leader (the rest from the
//!                        fill), else respond::error_reply (status and
//!                        reason), in the kind's terms by hooks::error_reply
//! logging              → finish::request_ended (breaker, metrics, log)
//! ```
//!
//! Plain data the helpers share sits in leaves: `artifact` (what a request
//! asks for), `action` (what the request phase decided), `failure` (the
//! failures told apart, carried as typed error causes). What a kind of
//! artifact (file, index document, OCI) adds to a phase is a hook in
//! `hooks`, one match per hook, so the phases never ask which it is.

pub mod action;
pub mod artifact;
pub mod cache;
mod claim;
pub mod ctx;
pub mod documents;
pub mod failure;
pub mod files;
mod finish;
pub mod hooks;
mod large;
pub mod oci;
pub mod outcome;
pub mod prefetch;
pub mod request;
pub mod respond;
pub mod snapshots;
mod traffic;
pub mod upstream;
pub mod verify;

use crate::app::App;
use crate::metrics::Outcome;
use crate::served_from::ServedFrom;
use action::Action;
use async_trait::async_trait;
pub use claim::FOLLOWING_PEER;
use ctx::{RequestCtx, Substitute};
use documents::RewriteModule;
use failure::Failure;
use filters::breaker::Admit;
use outcome::UpstreamOutcome;
use pingora::cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, ForcedFreshness, HitHandler,
    NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompressionBuilder;
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use prefetch::Prefetcher;
use std::sync::Arc;
use std::time::Instant;

pub struct ArtifactProxy {
    app: Arc<App>,
}

impl ArtifactProxy {
    pub fn new(app: Arc<App>) -> Self {
        ArtifactProxy { app }
    }

    /// Sends `refused` in place of a response a rule refuses by what it
    /// resolved to (the copy itself stays cached, as fetched).
    fn refuse_resolved(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
        refused: crate::firewall::Refused,
    ) -> Result<()> {
        let remote = ctx.remote_name.as_deref().unwrap_or("-");
        let path = ctx.artifact.as_ref().map_or("", |a| a.path());
        crate::firewall::account(&self.app, remote, path, Some(&refused.why), None);
        let (header, body) = refused.reply.into_parts()?;
        *resp = header;
        ctx.substitute = Substitute::Pending(body);
        Ok(())
    }
}

/// How often a waiting request may compete for a fill again.
const MAX_LOCK_RETRIES: usize = 5;

/// Classifies an upstream response once ([`outcome::classify`]) and keeps
/// the answer in the context for every later phase.
fn classify_response(
    ctx: &mut RequestCtx,
    resp: &ResponseHeader,
    has_copy: bool,
) -> Result<Option<UpstreamOutcome>> {
    let Some(artifact) = &ctx.artifact else {
        return Ok(None);
    };
    let hop = match &ctx.attempt.redirect {
        Some(redirect) => redirect.upstream(),
        None => documents::upstream_of(artifact)
            .cloned()
            .ok_or_else(no_artifact)?,
    };
    let cx = outcome::Context {
        artifact,
        has_copy,
        hop: &hop,
        challenged: ctx.attempt.challenged,
        now: std::time::SystemTime::now(),
    };
    let outcome = outcome::classify(resp, &cx);
    ctx.attempt.outcome = Some(outcome.clone());
    Ok(Some(outcome))
}

/// Acts on an outcome: passes the response on, or turns it into the error
/// that retries the request (redirect, challenge) or ends it (failure,
/// vanished artifact, quarantine), before anything reaches the client or
/// the cache.
///
/// NOTE: pingora#866: a retried request does not return the upstream
/// connection to the pool, so each redirect hop opens a new one.
async fn apply_outcome(app: &App, ctx: &mut RequestCtx, outcome: UpstreamOutcome) -> Result<()> {
    match outcome {
        UpstreamOutcome::Passed { .. } => Ok(()),
        UpstreamOutcome::Redirect(target) => {
            if ctx.attempt.redirects >= upstream::MAX_REDIRECTS {
                return Err(Failure::TooManyRedirects.error());
            }
            ctx.attempt.redirects += 1;
            ctx.attempt.redirect = Some(target);
            Err(Failure::RedirectHop.retry())
        }
        UpstreamOutcome::Challenge { www_authenticate } => {
            ctx.attempt.challenged = true;
            let artifact = ctx.artifact.as_ref().ok_or_else(no_artifact)?;
            let rejected = ctx.attempt.authorization.as_deref();
            let answer =
                upstream::answer_challenge(app, artifact, &www_authenticate, rejected).await?;
            let Some(authorization) = answer else {
                // Nothing to answer with: the 401 goes to the client.
                ctx.attempt.outcome = Some(UpstreamOutcome::Passed { status: 401 });
                return Ok(());
            };
            ctx.attempt.authorization = Some(authorization);
            Err(Failure::AuthRetry.retry())
        }
        UpstreamOutcome::Vanished { status } | UpstreamOutcome::Failed { status, .. } => {
            // The stale path serves a cached copy; otherwise `fail_to_proxy`
            // answers with a reason.
            Err(Error::new_up(ErrorType::HTTPStatus(status)))
        }
        UpstreamOutcome::Quarantined { .. } => Err(held(ctx)),
    }
}

/// Ends a request for an artifact in quarantine: `fail_to_proxy` answers
/// 404 with the hold's end.
fn held(ctx: &mut RequestCtx) -> Box<Error> {
    ctx.outcome = Some(Outcome::Other);
    Error::explain(ErrorType::HTTPStatus(404), "artifact in quarantine")
}

/// Whether a cached copy is held by its remote's quarantine (switched on
/// after it was cached), from its stored `Last-Modified`, as an upstream
/// response would be. A hit filter's error would send the request
/// upstream, so the hold makes it a miss that `upstream_peer` refuses
/// before any upstream request.
fn hold_cached(ctx: &mut RequestCtx, meta: &CacheMeta) -> Option<ForcedFreshness> {
    let artifact = ctx.artifact.as_ref()?;
    let last_modified = meta.headers().get(http::header::LAST_MODIFIED);
    let last_modified = last_modified.and_then(|v| v.to_str().ok());
    let hold = outcome::quarantined(artifact, last_modified, std::time::SystemTime::now())?;
    ctx.attempt.outcome = Some(hold);
    ctx.held_in_cache = true;
    Some(ForcedFreshness::ForceMiss)
}

/// Whether an error only asked pingora to send the request again.
fn is_retry(error: &Error) -> bool {
    Failure::of(error).is_some_and(Failure::is_retry)
}

fn no_artifact() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "no artifact in request context")
}

#[async_trait]
impl ProxyHttp for ArtifactProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(
            self.app.in_flight.enter(),
            self.app.metrics.request_started(),
        )
    }

    /// Pingora's (disabled) compression module, and the rewriting of index
    /// documents ([`documents::RewriteModule`]).
    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        modules.add_module(ResponseCompressionBuilder::enable(0));
        modules.add_module(Box::new(crate::request_id::RequestIdModuleBuilder));
        modules.add_module(Box::new(documents::RewriteModuleBuilder));
    }

    /// Routes, validates and applies the ACL; answers everything that is
    /// not a cacheable artifact request itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if crate::cluster::peer::is_fill_request(session.req_header()) {
            crate::cluster::peer::serve_fill(&self.app, session).await?;
            return Ok(true);
        }
        ctx.fill_part = large::is_fill_part(session.req_header_mut());
        let decision = request::decide(&self.app, session.req_header());
        ctx.remote_name = decision.remote;
        if decision.denied {
            ctx.outcome = Some(Outcome::Denied);
        }
        let dry_run = match &decision.action {
            Action::Proxy(artifact) => artifact.judged.dry_run.as_ref(),
            _ => None,
        };
        if decision.firewall.is_some() || dry_run.is_some() {
            let remote = ctx.remote_name.as_deref().unwrap_or("-");
            let path = session.req_header().uri.path();
            crate::firewall::account(&self.app, remote, path, decision.firewall.as_ref(), dry_run);
        }
        match decision.action {
            Action::Proxy(artifact) => {
                hooks::client_request(&artifact, session.req_header_mut());
                ctx.artifact = Some(artifact);
                return Ok(false);
            }
            Action::Reply(reply) => crate::reply::send_unread(session, reply).await?,
            Action::Admin(request) => crate::admin::answer(&self.app, session, request).await?,
            Action::Virtual {
                remote,
                path,
                raw_path,
            } => {
                let outcome =
                    crate::virtual_repo::handle(&self.app, session, &remote, &path, &raw_path)
                        .await?;
                ctx.answered_by(ServedFrom::Passed, outcome);
            }
            Action::Local { remote, path } => {
                let outcome = crate::local::handle(&self.app, session, &remote, &path).await?;
                ctx.answered_by(ServedFrom::Local, outcome);
            }
        }
        Ok(true)
    }

    /// Enables pingora-cache, with its lock, for artifact requests.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        // A fill's own range request must not wait on the fill.
        if !ctx.fill_part && ctx.artifact.as_ref().is_some_and(hooks::cached) {
            let mut overrides = CacheOptionOverrides::default();
            overrides.wait_timeout = Some(self.app.config().server.lock_timeout);
            // Bounds re-checks after fills that failed or vanished (see
            // `fill_lock`); past it a request goes upstream uncached.
            overrides.max_lock_retries = Some(MAX_LOCK_RETRIES);
            session.cache.enable(
                self.app.storage,
                None,
                None,
                Some(self.app.cache_lock),
                Some(overrides),
            );
            if let Some(max) = self.app.config().server.max_object_size {
                session.cache.set_max_file_size_bytes(max as usize);
            }
        }
        Ok(())
    }

    /// Answers a HEAD for an expired tag manifest from cache while it is
    /// revalidated in the background ([`prefetch`]), within the remote's
    /// stale-if-error period.
    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        if let Some(held) = hold_cached(ctx, meta) {
            return Ok(Some(held));
        }
        let Some(artifact) = &ctx.artifact else {
            return Ok(None);
        };
        if is_fresh || !Prefetcher::applies(artifact, &session.req_header().method) {
            return Ok(None);
        }
        if !cache::within_stale_period(artifact, &self.app.config().server, meta) {
            return Ok(None);
        }
        ctx.revalidate_in_background = true;
        Ok(Some(ForcedFreshness::ForceFresh))
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        ctx.artifact
            .as_ref()
            .map(cache::key)
            .ok_or_else(no_artifact)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if ctx.held_in_cache {
            return Err(held(ctx));
        }
        if claim::storage_outage(&self.app, session) == Some(claim::Outage::Refuse) {
            ctx.storage_down = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "cache storage unreachable",
            ));
        }
        claim::claim(&self.app, session, ctx).await;
        claim::take_over(&self.app, ctx).await;
        if let Some(fill) = &ctx.fill.peer {
            return Ok(Box::new(HttpPeer::new(fill.address, false, String::new())));
        }
        let artifact = ctx.artifact.as_ref().ok_or_else(no_artifact)?;
        // Redirect hops belong to the attempt already admitted.
        if ctx.attempt.admitted.is_none() {
            let admit = self.app.breakers.admit(&artifact.remote.name);
            ctx.attempt.admitted = Some(admit);
        }
        if let Some(Admit::No { .. }) = ctx.attempt.admitted {
            // No connection attempt: a cached copy is served by the
            // stale-if-error path, anything else fails fast with 503.
            return Err(Failure::RemoteDown.error());
        }
        if ctx.upstream_slot.is_none() {
            let server = &self.app.config().server;
            let (wait, default) = (server.lock_timeout, server.max_connections_per_remote);
            let slot = self
                .app
                .upstream_limits
                .take(&artifact.remote, default, wait)
                .await;
            ctx.upstream_slot =
                slot.map_err(|why| Error::explain(ErrorType::HTTPStatus(503), why))?;
        }
        match &ctx.attempt.redirect {
            Some(redirect) => {
                upstream::peer(
                    &redirect.upstream(),
                    &artifact.remote,
                    &self.app.config().server,
                )
                .await
            }
            None => {
                let upstream = documents::upstream_of(artifact).ok_or_else(no_artifact)?;
                upstream::peer(upstream, &artifact.remote, &self.app.config().server).await
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.attempt.started.get_or_insert_with(Instant::now);
        if let (Some(fill), Some(cluster)) = (&ctx.fill.peer, &self.app.cluster) {
            let method = &session.req_header().method;
            *upstream_request =
                crate::cluster::peer::fill_request(fill, method, cluster.secret.expose())?;
            return Ok(());
        }
        let artifact = ctx.artifact.as_ref().ok_or_else(no_artifact)?;
        if session.cache.enabled() {
            cache::request_whole_object(upstream_request);
        }
        if ctx.attempt.authorization.is_none() {
            ctx.attempt.authorization = upstream::authorization(&self.app, artifact).await?;
        }
        let authorization = ctx.attempt.authorization.as_deref();
        match &ctx.attempt.redirect {
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
        ctx.attempt.header_wait = ctx.attempt.started.map(|started| started.elapsed());
        traffic::upstream_answered(&self.app, ctx, upstream_response.status.as_u16());
        if ctx.fill.peer.is_some() {
            if upstream_response.status != http::StatusCode::OK {
                // The fill is gone from that node: fetch it here (without a
                // claim; the cache is still this request's to fill).
                ctx.fill.peer = None;
                return Err(Failure::PeerGone.retry());
            }
            upstream_response.set_version(http::Version::HTTP_11);
            return Ok(());
        }
        let has_copy = session.cache.maybe_cache_meta().is_some();
        if let Some(outcome) = classify_response(ctx, upstream_response, has_copy)? {
            apply_outcome(&self.app, ctx, outcome).await?;
        }
        if let Some(artifact) = &ctx.artifact {
            let server = &self.app.config().server;
            let can_keep_previous = session
                .cache
                .maybe_cache_meta()
                .is_some_and(|meta| cache::within_stale_period(artifact, server, meta));
            let checks = &mut ctx.checks;
            hooks::upstream_response(
                &self.app,
                artifact,
                upstream_response,
                can_keep_previous,
                checks,
            )
            .await?;
            large::offer(&self.app, session, ctx, upstream_response);
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
        traffic::upstream_body(ctx, body.as_ref());
        let arrived = body.as_ref().map_or(0, bytes::Bytes::len);
        if let Some(artifact) = &ctx.artifact {
            hooks::upstream_body(&self.app, artifact, &mut ctx.checks, body, end_of_stream)?;
        }
        Ok(ctx
            .upstream_slot
            .as_ref()
            .and_then(|slot| slot.pace(arrived)))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        if ctx.fill.peer.is_some() {
            // Stored once, by the node whose fill this is.
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                FOLLOWING_PEER,
            )));
        }
        let artifact = ctx.artifact.as_ref().ok_or_else(no_artifact)?;
        let cacheable = cache::cacheability(artifact, resp, self.app.config().server.negative_ttl);
        Ok(cache::within_room(
            self.app.storage,
            cacheable,
            resp,
            artifact,
        ))
    }

    /// Labels where the body came from; runs for hits and misses alike.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let phase = session.cache.phase();
        let source = ctx.served_from(phase).header(ctx.fill.peer.is_some());
        let Some(artifact) = &ctx.artifact else {
            return Ok(());
        };
        hooks::client_response(artifact, upstream_response)?;
        if let Err(refused) =
            crate::firewall::judge_resolved(&self.app, artifact, upstream_response)
        {
            return self.refuse_resolved(upstream_response, ctx, *refused);
        }
        upstream_response.insert_header(crate::served_from::HEADER, source)?;
        let stores = (&self.app.rewrites, self.app.storage);
        let server = &self.app.config().server;
        let request = session.req_header();
        let reuse = documents::reuse(stores, server, artifact, request, &session.cache).await;
        let rewriter = documents::BodyRewriter::start(
            artifact,
            session.req_header(),
            upstream_response,
            &self.app.config().server,
            &self.app.checksums,
            phase != CachePhase::Hit,
            reuse,
        )?;
        if let Some(rewriter) = rewriter {
            let module = session.downstream_modules_ctx.get_mut::<RewriteModule>();
            module.ok_or_else(no_artifact)?.set(rewriter);
        }
        if cache::leads_fill_partially(session.req_header(), phase) {
            session.set_keepalive(None);
        }
        if ctx.revalidate_in_background {
            upstream_response
                .insert_header("x-artifact-stale", "revalidating in the background")?;
        }
        if let (CachePhase::Stale, Some(reason)) = (phase, &ctx.stale_reason) {
            upstream_response.insert_header("warning", "110 - \"Response is Stale\"")?;
            upstream_response.insert_header("x-artifact-stale", reason.as_str())?;
            // NOTE: pingora closes the client connection after serving
            // stale for a failed upstream; say so, or the client's next
            // request on it is reset.
            session.set_keepalive(None);
        }
        Ok(())
    }

    /// A HEAD that leads a fill gets the fill's headers only: the body
    /// streams into storage, not to the client.
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if session.req_header().method == http::Method::HEAD {
            *body = None;
        }
        ctx.substitute.apply(body);
        Ok(None)
    }

    /// A node whose fill this request meant to stream cannot be reached:
    /// fetch from the upstream here instead (see `claim::take_over`).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(fill) = ctx.fill.peer.take() {
            log::warn!(
                "node {} leading a fill cannot be reached ({e}); taking the fetch over once its claim lapses",
                fill.address
            );
            ctx.fill.dead_peer = Some(fill);
            e.set_retry(true);
        }
        e
    }

    /// Answers a failed request with the right status and a one-line reason.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some(continued) = large::continue_leader(&self.app, session, ctx).await {
            return continued;
        }
        let remote = ctx.remote_name.as_deref().unwrap_or("-");
        let (code, reply) = match (ctx.attempt.admitted, &ctx.attempt.outcome) {
            _ if ctx.storage_down => (503, respond::storage_down_reply()),
            (Some(Admit::No { retry_after_ms }), _) => {
                (503, respond::remote_down_reply(remote, retry_after_ms))
            }
            (_, Some(UpstreamOutcome::Quarantined { until })) => {
                (404, respond::quarantine_reply(until))
            }
            (_, upstream) => {
                let code = respond::error_status(e);
                let mut reply = respond::error_reply(code, e, ctx.remote_name.as_deref());
                if let Some(UpstreamOutcome::Failed {
                    retry_after: Some(retry_after),
                    ..
                }) = upstream
                {
                    if code == 503 {
                        reply = reply.header("retry-after", retry_after.clone());
                    }
                }
                (code, reply)
            }
        };
        let upstream_status =
            (ctx.attempt.outcome.as_ref()).and_then(UpstreamOutcome::failed_status);
        let (code, reply) = hooks::error_reply(ctx.artifact.as_ref(), code, reply, upstream_status);
        if code > 0 && session.response_written().is_none() {
            if let Err(write_error) = crate::reply::send_and_close(session, reply).await {
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
        if let Some(UpstreamOutcome::Vanished { .. }) = ctx.attempt.outcome {
            // An immutable artifact the upstream no longer has: the cached
            // copy is the artifact, whatever its age.
            ctx.stale_reason = Some(reason);
            return true;
        }
        let serve = cache::within_stale_period(artifact, &self.app.config().server, meta);
        if serve {
            ctx.stale_reason = Some(reason);
            ctx.stale_for_failure = Failure::of(error).is_none_or(|f| !f.refused_content());
        }
        serve
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // A quarantine hold is policy, logged by the request line; a client
        // served from its fill got its whole response.
        ctx.large_continued
            || matches!(
                ctx.attempt.outcome,
                Some(UpstreamOutcome::Quarantined { .. })
            )
    }

    /// Retries are routine; so is a client leaving while its fill goes on
    /// (a HEAD or range answered early, an aborted download), which the
    /// request line reports.
    fn suppress_proxy_warn_log(
        &self,
        session: &Session,
        _ctx: &RequestCtx,
        error: &Error,
        context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        if context == pingora::proxy::ProxyWarnLogContext::DownstreamCache {
            log::info!(
                "{} {}: client left ({error}); the cache fill continues",
                session.req_header().method,
                session.req_header().uri.path()
            );
            return true;
        }
        is_retry(error)
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        finish::request_ended(&self.app, session, error, ctx).await;
    }
}
