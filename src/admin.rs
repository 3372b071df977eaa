//! The administrative endpoints: `/`, the probes (`/livez`, `/readyz` and
//! `/health`), `/config`, `/metrics`, `/cache/flush` (all or by pattern)
//! and `/cache-artifact`.
//!
//! Readiness asks only what serving needs: the body store answering a
//! read. Serving never waits on the catalog or Redis, so either not
//! answering is reported as degraded but leaves the node ready; otherwise
//! one database blip would take every replica out of its Service at once. Each
//! check is bounded, so a probe answers within a second whatever a backend
//! does, and none writes.

use crate::app::App;
use crate::auth::bearer_allows;
use crate::config::{Remote, RemoteKind};
use crate::proxy::action::AdminRequest;
use crate::reply::Reply;
use filters::flush::CacheType;
use filters::AdminRoute;
use http::{Method, StatusCode};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Answers an admin request.
pub async fn handle(app: &App, route: AdminRoute, req: &RequestHeader) -> Reply {
    let read_only = matches!(
        route,
        AdminRoute::Root
            | AdminRoute::Health
            | AdminRoute::Live
            | AdminRoute::Config
            | AdminRoute::Metrics
            | AdminRoute::Status
            | AdminRoute::Audit
    );
    let method_ok = if read_only {
        req.method == Method::GET || req.method == Method::HEAD
    } else {
        req.method == Method::PUT || req.method == Method::POST
    };
    if !method_ok {
        let allow = if read_only { "GET, HEAD" } else { "PUT" };
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"))
            .header("allow", allow);
    }
    match route {
        AdminRoute::Root if crate::status::root_wants_page(req) => {
            crate::status::answer(app, req, false).await
        }
        AdminRoute::Root => root(app),
        AdminRoute::Status => crate::status::answer(app, req, true).await,
        AdminRoute::Health => readiness(app).await,
        AdminRoute::Live => Reply::text(StatusCode::OK, "ok"),
        // Redacted, yet it maps the upstreams and their accounts: admins only.
        AdminRoute::Config => match require_admin(app, req) {
            Some(refusal) => refusal,
            None => Reply::json(StatusCode::OK, &app.config().redacted()),
        },
        AdminRoute::Metrics if metrics_allowed(app, req) => metrics(app, req).await,
        AdminRoute::Metrics => Reply::text(StatusCode::UNAUTHORIZED, "metrics token required")
            .header("www-authenticate", "Bearer"),
        AdminRoute::Flush => flush(app, req).await,
        // Who fetched what, from where: admins only.
        AdminRoute::Audit => match require_admin(app, req) {
            Some(refusal) => refusal,
            None => crate::audit::answer(app, req.uri.query()).await,
        },
        // Answered by `cache_artifact`, which reads the request body.
        AdminRoute::CacheArtifact => Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
    }
}

/// Answers an admin endpoint: the one place they are dispatched.
pub async fn answer(
    app: &Arc<App>,
    session: &mut Session,
    request: AdminRequest,
) -> pingora::Result<()> {
    // What an admin asks about (or removes) includes every miss whose
    // client already has it. Probes answer at once, whatever storage does.
    let probe = matches!(
        request,
        AdminRequest::Route(AdminRoute::Health | AdminRoute::Live)
    );
    if !probe {
        app.storage.all_committed().await;
    }
    let reply = match request {
        AdminRequest::Route(AdminRoute::CacheArtifact) => cache_artifact(app, session).await?,
        AdminRequest::Route(route) => handle(app, route, session.req_header()).await,
        AdminRequest::CacheApi(route) => {
            crate::cache_api::handle(app, route, session.req_header()).await
        }
        AdminRequest::Job { id } => crate::cache_api::job_status(app, &id, session.req_header()),
        AdminRequest::ArtifactList(remote) => {
            artifact_list(app, &remote, session.req_header()).await
        }
    };
    crate::reply::send(session, reply).await
}

/// The 401 for a request without the admin token, when one is set.
fn require_admin(app: &App, req: &RequestHeader) -> Option<Reply> {
    crate::reply::require_admin(app.config().server.admin_token.as_ref(), req)
}

/// `/metrics` is open unless `tokens.metrics` is set; then it takes that
/// token or the admin token.
fn metrics_allowed(app: &App, req: &RequestHeader) -> bool {
    let server = &app.config().server;
    let Some(token) = &server.metrics_token else {
        return true;
    };
    bearer_allows(req, Some(token))
        || (server.admin_token.as_ref()).is_some_and(|admin| bearer_allows(req, Some(admin)))
}

fn root(app: &App) -> Reply {
    let remotes: Vec<_> = app
        .config()
        .remotes
        .values()
        .map(|r| {
            json!({
                "name": r.name,
                "type": r.kind.as_str(),
                "package": r.ecosystem.as_str(),
                "check_mutable_updates": r.check_mutable_updates,
                "quarantine_days": r.quarantine_days,
            })
        })
        .collect();
    Reply::json(
        StatusCode::OK,
        &json!({
            "name": "artifactd",
            "version": env!("CARGO_PKG_VERSION"),
            "remotes": remotes,
        }),
    )
}

/// How long one readiness check may take: both run at once, so a probe
/// answers within this and the time to write the reply.
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// A check's result, or why it has none after [`CHECK_TIMEOUT`].
async fn bounded<E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
    }
}

/// The readiness checks' results: the body store, the catalog, and Redis
/// when configured.
struct Checks {
    storage: Result<(), String>,
    catalog: Result<(), String>,
    redis: Option<Result<(), String>>,
}

impl Checks {
    async fn run(app: &App) -> Checks {
        let catalog = app.catalog.clone();
        // On the background runtime, as every catalog call: its pool lives there.
        let catalog_ping = app.background.spawn(async move { catalog.ping().await });
        let (storage, catalog, redis) = tokio::join!(
            bounded(app.storage.bodies().check_readable()),
            bounded(async {
                match catalog_ping.await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }),
            async {
                let link = app.redis.as_ref()?;
                Some(bounded(ping_redis(link)).await)
            },
        );
        let checks = Checks {
            storage,
            catalog,
            redis,
        };
        app.metrics.set_backends(
            checks.storage.is_ok(),
            checks.catalog.is_ok(),
            checks.redis.as_ref().map(Result::is_ok),
        );
        checks
    }
}

async fn readiness(app: &App) -> Reply {
    let Checks {
        storage,
        catalog,
        redis,
    } = Checks::run(app).await;
    let check = |result: &Result<(), String>| match result {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let degraded = catalog.is_err() || redis.as_ref().is_some_and(|r| r.is_err());
    let (status, word) = match (&storage, degraded) {
        (Err(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        (Ok(()), true) => (StatusCode::OK, "degraded"),
        (Ok(()), false) => (StatusCode::OK, "ok"),
    };
    let mut checks = json!({
        "storage": check(&storage),
        "catalog": check(&catalog),
    });
    if let Some(redis) = &redis {
        checks["redis"] = check(redis);
    }
    let body = json!({
        "status": word,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "remotes": app.config().remotes.len(),
        "upstreams": app.breakers.states(),
        "checks": checks,
    });
    Reply::json(status, &body)
}

async fn ping_redis(link: &crate::cluster::link::RedisLink) -> Result<(), String> {
    link.run("readiness ping", |mut c| async move {
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// The exposition, after the readiness checks (so `artifactd_ready` and
/// `artifactd_backend_up` say what a probe would see now).
async fn metrics(app: &App, req: &RequestHeader) -> Reply {
    use crate::metrics::exposition;
    Checks::run(app).await;
    let accept = req.headers.get(http::header::ACCEPT);
    let openmetrics = app.metrics.render();
    let (body, content_type) =
        match exposition::wants_openmetrics(accept.and_then(|v| v.to_str().ok())) {
            true => (openmetrics, exposition::OPENMETRICS),
            false => (
                exposition::prometheus_text(&openmetrics),
                exposition::PROMETHEUS_TEXT,
            ),
        };
    let mut reply = Reply::text(StatusCode::OK, body).header("vary", "accept");
    reply.content_type = content_type;
    reply
}

/// `PUT /cache/flush[?remote=R][&cache_type=all|files|index][&pattern=RE]`,
/// answered in the reference's shape, `{"flushed": {"operations": [...]}}`,
/// with the counts beside it.
async fn flush(app: &App, req: &RequestHeader) -> Reply {
    if let Some(refusal) = require_admin(app, req) {
        return refusal;
    }
    let query = req.uri.query();
    let remote = filters::route::query_param(query, "remote");
    if let Some(name) = &remote {
        if let Err(refusal) = crate::cache_api::cached_remote(app, name) {
            return refusal;
        }
    }
    let cache_type =
        match CacheType::parse(filters::route::query_param(query, "cache_type").as_deref()) {
            Ok(cache_type) => cache_type,
            Err(message) => return Reply::text(StatusCode::BAD_REQUEST, message),
        };
    let pattern = filters::route::query_param(query, "pattern");
    let deleted = match (&pattern, cache_type.mutable_only()) {
        (None, false) => app.storage.flush(remote.as_deref()).await.map_err(|e| {
            Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("flush failed: {e}"),
            )
        }),
        _ => flush_selected(app, remote.as_deref(), pattern.as_deref(), cache_type).await,
    };
    let deleted = match deleted {
        Ok(deleted) => deleted,
        Err(reply) => return reply,
    };
    let scope = match &remote {
        Some(name) => format!(" for remote '{name}'"),
        None => String::new(),
    };
    let what = match (cache_type.mutable_only(), &pattern) {
        (true, Some(p)) => format!(" of mutable paths matching {p:?}"),
        (true, None) => " of mutable paths".to_string(),
        (false, Some(p)) => format!(" of paths matching {p:?}"),
        (false, None) => String::new(),
    };
    let operation = format!("Deleted {deleted} cached objects{what}{scope}");
    log::info!("cache flush: {operation}");
    Reply::json(
        StatusCode::OK,
        &json!({"flushed": {
            "operations": [operation],
            "remote": remote,
            "cache_type": cache_type.as_str(),
            "pattern": pattern,
            "objects_deleted": deleted,
        }}),
    )
}

/// Flushes the entries of one remote, or of every remote that caches,
/// whose path matches `pattern` (if given) and, for `cache_type=index`,
/// that the remote classes as mutable.
async fn flush_selected(
    app: &App,
    remote: Option<&str>,
    pattern: Option<&str>,
    cache_type: CacheType,
) -> Result<usize, Reply> {
    let pattern = match pattern {
        Some(p) => Some(
            filters::PatternSet::new(&[p])
                .map_err(|e| Reply::text(StatusCode::BAD_REQUEST, format!("pattern: {e}")))?,
        ),
        None => None,
    };
    let config = app.config();
    let remotes: Vec<&Arc<Remote>> = (config.remotes.values())
        .filter(|r| r.kind == RemoteKind::Remote)
        .filter(|r| remote.is_none_or(|name| r.name == name))
        .collect();
    // Once for every remote: the catalog is read for each.
    crate::cache_api::settle(app).await;
    let mut deleted = 0;
    for cached in remotes {
        deleted += crate::cache_api::flush_where(app, &cached.name, |path| {
            pattern.as_ref().is_none_or(|p| p.is_match(path))
                && (!cache_type.mutable_only()
                    || matches!(
                        cached.policy.classify(path),
                        filters::Access::Allowed(filters::ArtifactClass::Mutable { .. })
                    ))
        })
        .await?;
    }
    Ok(deleted)
}

/// `POST /cache-artifact`: reads the JSON request (at most 64 KiB) and
/// starts the pre-fill job.
pub async fn cache_artifact(
    app: &std::sync::Arc<App>,
    session: &mut pingora::proxy::Session,
) -> pingora::Result<Reply> {
    let req = session.req_header();
    if req.method != Method::POST {
        return Ok(Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use POST").header("allow", "POST"));
    }
    if let Some(refusal) = require_admin(app, req) {
        return Ok(refusal);
    }
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > 64 << 10 {
            return Ok(Reply::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request over 64 KiB",
            ));
        }
    }
    Ok(crate::prefill::start(app, &body))
}

/// `GET /artifacts/{remote}`: what the catalog records for a remote.
pub async fn artifact_list(app: &App, remote: &Remote, req: &RequestHeader) -> Reply {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use GET").header("allow", "GET, HEAD");
    }
    if let Some(refusal) = require_admin(app, req) {
        return refusal;
    }
    let catalog = app.catalog.clone();
    let name = remote.name.clone();
    let rows = app
        .background
        .spawn(async move { catalog.list(&name).await })
        .await;
    match rows {
        Ok(Ok(rows)) => Reply::json(
            StatusCode::OK,
            &json!({"remote": remote.name, "count": rows.len(), "artifacts": rows}),
        ),
        Ok(Err(e)) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => Reply::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
