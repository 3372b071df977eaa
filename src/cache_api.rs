//! The cache API under `/api/v1/cache` (admin token): list what is cached,
//! how much each remote holds, inspect or delete one artifact, re-hash
//! stored bodies; plus flushing by pattern and job status.
//!
//! Listings come from the catalog, which is written in batches: a listing
//! first reports pending hits and waits (briefly) for the queue, so what a
//! client just fetched is in it.

use crate::app::App;
use crate::catalog::{CachedRow, PageQuery};
use crate::config::{Remote, RemoteKind};
use crate::reply::{require_admin, Reply};
use base64::Engine;
use filters::route::query_param;
use filters::CacheApiRoute;
use http::{Method, StatusCode};
use pingora::http::RequestHeader;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;
const CURSOR: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Answers one of the cache API's endpoints, checking its method.
pub async fn handle(app: &Arc<App>, route: CacheApiRoute, req: &RequestHeader) -> Reply {
    if let Some(refusal) = require_admin(app.config().server.admin_token.as_ref(), req) {
        return refusal;
    }
    let query = req.uri.query();
    match (route, &req.method) {
        (CacheApiRoute::List, &Method::GET) => list(app, query).await,
        (CacheApiRoute::Usage, &Method::GET) => usage(app).await,
        (CacheApiRoute::Verify, &Method::POST) => start_verify(app, query),
        (CacheApiRoute::Artifact { remote, raw_path }, method)
            if method == Method::GET || method == Method::DELETE =>
        {
            artifact(app, method, &remote, &raw_path).await
        }
        _ => Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET /api/v1/cache[?remote=&prefix=&limit=&cursor=], GET /api/v1/cache/usage, \
             POST /api/v1/cache/verify, GET or DELETE /api/v1/cache/{remote}/{path}",
        ),
    }
}

/// Runs catalog work on the background runtime, where its pool lives.
async fn on_background<T, F>(app: &App, work: F) -> Result<T, Reply>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, crate::catalog::CatalogError>> + Send + 'static,
{
    match app.background.spawn(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Reply::text(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => Err(Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

/// Makes the catalog current: hits counted in memory and queued events.
pub async fn settle(app: &App) {
    app.storage
        .report_pending_hits(Duration::from_secs(2))
        .await;
    app.catalog_writer.drain(Duration::from_secs(2)).await;
}

fn bad_request(message: impl Into<String>) -> Reply {
    Reply::text(StatusCode::BAD_REQUEST, message)
}

async fn list(app: &App, query: Option<&str>) -> Reply {
    let remote = query_param(query, "remote");
    if let Some(name) = &remote {
        if !app.config().remotes.contains_key(name) {
            return Reply::text(StatusCode::NOT_FOUND, format!("unknown remote '{name}'"));
        }
    }
    let limit = match query_param(query, "limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => return bad_request(format!("limit must be 1 to {MAX_LIMIT}")),
    };
    let after = match query_param(query, "cursor") {
        None => None,
        Some(cursor) => match decode_cursor(&cursor) {
            Some(after) => Some(after),
            None => return bad_request("cursor is not one this API returned"),
        },
    };
    settle(app).await;
    let page = PageQuery {
        remote,
        prefix: query_param(query, "prefix").unwrap_or_default(),
        after,
        limit,
    };
    let catalog = app.catalog.clone();
    let rows = match on_background(app, async move { catalog.cached_page(&page).await }).await {
        Ok(rows) => rows,
        Err(reply) => return reply,
    };
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(encode_cursor))
        .flatten();
    Reply::json(
        StatusCode::OK,
        &json!({"artifacts": rows, "count": rows.len(), "next_cursor": next_cursor}),
    )
}

fn encode_cursor(row: &CachedRow) -> String {
    CURSOR.encode(format!("{}\n{}", row.remote, row.path))
}

fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let text = String::from_utf8(CURSOR.decode(cursor).ok()?).ok()?;
    let (remote, path) = text.split_once('\n')?;
    Some((remote.to_string(), path.to_string()))
}

async fn usage(app: &App) -> Reply {
    settle(app).await;
    let catalog = app.catalog.clone();
    match on_background(app, async move { catalog.usage().await }).await {
        Ok(rows) => {
            let total_objects: i64 = rows.iter().map(|r| r.objects).sum();
            let total_bytes: i64 = rows.iter().map(|r| r.bytes).sum();
            Reply::json(
                StatusCode::OK,
                &json!({"remotes": rows, "objects": total_objects, "bytes": total_bytes}),
            )
        }
        Err(reply) => reply,
    }
}

/// A cached (not local) remote, or the reply refusing it.
pub fn cached_remote(app: &App, name: &str) -> Result<Arc<Remote>, Reply> {
    match app.config().remotes.get(name) {
        None => Err(Reply::text(StatusCode::NOT_FOUND, format!("unknown remote '{name}'"))),
        Some(r) if r.kind == RemoteKind::Local => Err(bad_request(format!(
            "'{name}' is a local repository, not a cache; delete files with DELETE /api/v1/remote/{name}/PATH"
        ))),
        Some(r) => Ok(r.clone()),
    }
}

/// `GET`: the artifact's row; `DELETE`: removes every cached form of it.
async fn artifact(app: &App, method: &Method, remote: &str, raw_path: &str) -> Reply {
    let remote = match cached_remote(app, remote) {
        Ok(remote) => remote.name.clone(),
        Err(reply) => return reply,
    };
    let path = match filters::validate_artifact_path(raw_path, app.config().server.max_path_bytes) {
        Ok(path) => path.decoded,
        Err(e) => return bad_request(format!("bad path: {e}")),
    };
    settle(app).await;
    let catalog = app.catalog.clone();
    let (name, wanted) = (remote.clone(), path.clone());
    let entries = match on_background(app, async move {
        catalog.entries_of(&name, Some(&wanted)).await
    })
    .await
    {
        Ok(entries) => entries,
        Err(reply) => return reply,
    };
    if entries.is_empty() {
        return Reply::text(
            StatusCode::NOT_FOUND,
            format!("{remote}/{path} is not cached"),
        );
    }
    if method == Method::GET {
        let page = PageQuery {
            remote: Some(remote.clone()),
            prefix: path.clone(),
            after: None,
            limit: 1,
        };
        let catalog = app.catalog.clone();
        return match on_background(app, async move { catalog.cached_page(&page).await }).await {
            Ok(rows) => match rows.into_iter().find(|r| r.path == path) {
                Some(row) => Reply::json(
                    StatusCode::OK,
                    &json!({"artifact": row, "entries": entries.len()}),
                ),
                None => Reply::text(
                    StatusCode::NOT_FOUND,
                    format!("{remote}/{path} is not cached"),
                ),
            },
            Err(reply) => reply,
        };
    }
    let mut removed = 0;
    for (id, _) in entries {
        match app.storage.remove_entry(&remote, id).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    log::info!("cache API: removed {remote}/{path} ({removed} entries)");
    Reply::json(
        StatusCode::OK,
        &json!({"removed": {"remote": remote, "path": path, "entries": removed}}),
    )
}

/// Removes the cached entries of `remote` whose path `select` picks
/// (paths as the catalog records them: the caller settles it first, see
/// [`settle`], so an entry committed just before is not missed). Returns
/// how many.
pub async fn flush_where(
    app: &App,
    remote: &str,
    select: impl Fn(&str) -> bool,
) -> Result<usize, Reply> {
    let catalog = app.catalog.clone();
    let name = remote.to_string();
    let entries = on_background(app, async move { catalog.entries_of(&name, None).await }).await?;
    let mut removed = 0;
    for (id, path) in entries {
        if !select(&path) {
            continue;
        }
        match app.storage.remove_entry(remote, id).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                return Err(Reply::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                ))
            }
        }
    }
    Ok(removed)
}

/// `POST /api/v1/cache/verify[?remote=R][&repair=true]`: a job that
/// re-hashes every stored body (of one remote) against the sha256
/// recorded at its commit; with `repair`, corrupt entries are removed so
/// the next request fetches them again.
fn start_verify(app: &Arc<App>, query: Option<&str>) -> Reply {
    let remote = query_param(query, "remote");
    if let Some(name) = &remote {
        if let Err(reply) = cached_remote(app, name) {
            return reply;
        }
    }
    let repair = query_param(query, "repair").is_some_and(|v| v == "true" || v == "1");
    let task_app = app.clone();
    let id = app
        .jobs
        .start("verify", &app.background, move |job| async move {
            let app = task_app;
            app.catalog_writer.drain(Duration::from_secs(5)).await;
            let entries = app.catalog.entries().await.map_err(|e| e.to_string())?;
            let entries: Vec<_> = entries
                .into_iter()
                .filter(|e| remote.as_ref().is_none_or(|r| &e.remote == r))
                .collect();
            job.set_total(entries.len() as u64);
            for entry in entries {
                let name = format!("{}/{}", entry.remote, entry.path);
                match app.storage.verify_entry(&entry.remote, entry.id).await {
                    Ok(crate::storage::inspect::Verified::Ok { size }) => job.succeeded(name, size),
                    Ok(crate::storage::inspect::Verified::Vanished) => job.succeeded(name, 0),
                    Ok(problem) => {
                        let reason = serde_json::to_string(&problem).unwrap_or_default();
                        log::error!("cache verify: {name} is damaged: {reason}");
                        if repair {
                            let _ = app.storage.remove_entry(&entry.remote, entry.id).await;
                        }
                        job.failed(name, reason);
                    }
                    Err(e) => job.failed(name, e.to_string()),
                }
            }
            Ok(())
        });
    crate::jobs::started_reply(id)
}

/// `GET /api/v1/jobs/{id}`.
pub fn job_status(app: &App, id: &str, req: &RequestHeader) -> Reply {
    if let Some(refusal) = require_admin(app.config().server.admin_token.as_ref(), req) {
        return refusal;
    }
    match id.parse().ok().and_then(|id| app.jobs.status(id)) {
        Some(status) => Reply::json(StatusCode::OK, &json!(status)),
        None => Reply::text(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let row = CachedRow {
            remote: "gen".into(),
            path: "a/b\nc.tgz".into(),
            size: 1,
            sha256: String::new(),
            content_type: None,
            fetched_at: 0,
            last_access: 0,
            hits: 0,
        };
        let cursor = encode_cursor(&row);
        assert_eq!(
            decode_cursor(&cursor),
            Some(("gen".into(), "a/b\nc.tgz".into()))
        );
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&CURSOR.encode("no newline")), None);
    }
}
