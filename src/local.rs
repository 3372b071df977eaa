//! Local repositories (`type: local`): files uploaded with PUT, served with
//! GET/HEAD, removed with DELETE. No upstream, no expiry.
//!
//! Uploads stream into a body-store writer that becomes visible only when
//! the whole body arrived within the size limit; an interrupted or oversized
//! upload is dropped and leaves nothing behind.

use crate::app::App;
use crate::auth::bearer_allows;
use crate::catalog::{ArtifactRow, CatalogEvent};
use crate::config::Remote;
use crate::metrics::Outcome;
use crate::reply::{self, Reply};
use crate::storage::body::BodyWrite;
use crate::storage::hit::BodyHit;
use crate::storage::unix_now;
use filters::range::{single_range, RangeReply};
use http::{Method, StatusCode};
use pingora::cache::storage::HandleHit;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Handles one local-repository request and says how to count it.
pub async fn handle(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    path: &str,
) -> Result<Outcome> {
    if crate::local_index::try_serve(app, session, remote, path).await? {
        return Ok(Outcome::Other);
    }
    if path.ends_with('/') || path.contains('#') {
        let reply = Reply::text(
            StatusCode::BAD_REQUEST,
            "bad path: a file path must not end with '/' or contain '#'",
        );
        reply::send_and_close(session, reply).await?;
        return Ok(Outcome::Other);
    }
    let key = format!("local/{}/{path}", remote.name);
    let method = session.req_header().method.clone();
    match method {
        Method::GET | Method::HEAD => {
            (serve(app, session, &key, path).await).map(|_| Outcome::Other)
        }
        Method::PUT => upload(app, session, remote, path, &key).await,
        Method::DELETE => delete(app, session, remote, path, &key)
            .await
            .map(|_| Outcome::Other),
        _ => {
            let reply = Reply::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET, HEAD, PUT or DELETE",
            )
            .header("allow", "GET, HEAD, PUT, DELETE");
            reply::send_and_close(session, reply)
                .await
                .map(|_| Outcome::Other)
        }
    }
}

fn storage_error(e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        format!("local repository storage: {e}"),
    )
}

/// Sends the uploaded file at `key` (`path` in its repository), labelled
/// by its name as the reference labelled downloads: an uploader's
/// `application/octet-stream` says nothing the name does not.
async fn serve(app: &App, session: &mut Session, key: &str, path: &str) -> Result<()> {
    let bodies = app.storage.bodies();
    let opened = bodies.open(key).await.map_err(storage_error)?;
    let Some(opened) = opened else {
        return reply::send(session, Reply::text(StatusCode::NOT_FOUND, "not found")).await;
    };
    let size = opened.size();
    let range_header = session
        .req_header()
        .headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok());
    let mut headers = vec![
        (
            "content-type",
            filters::media_type::of_path(path).to_string(),
        ),
        ("accept-ranges", "bytes".to_string()),
        ("x-artifact-source", "cache".to_string()),
    ];
    if let Some(disposition) = filters::media_type::attachment(path) {
        headers.push(("content-disposition", disposition));
    }
    let (status, start, end) = match single_range(range_header, size) {
        RangeReply::Full => (StatusCode::OK, 0, size),
        RangeReply::Partial { start, end } => {
            headers.push(("content-range", format!("bytes {start}-{}/{size}", end - 1)));
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        RangeReply::Unsatisfiable => {
            let reply = Reply::text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable")
                .header("content-range", format!("bytes */{size}"));
            return reply::send(session, reply).await;
        }
    };
    let header = reply::header(status, end - start, &headers)?;
    if session.req_header().method == Method::HEAD || start == end {
        return session.write_response_header(Box::new(header), true).await;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    let mut body = BodyHit::new(opened, bodies, key);
    body.seek(start as usize, Some(end as usize))?;
    while let Some(chunk) = body.read_body().await? {
        session.write_response_body(Some(chunk), false).await?;
    }
    session.write_response_body(None, true).await
}

async fn upload(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    path: &str,
    key: &str,
) -> Result<Outcome> {
    let server = &app.config().server;
    if !bearer_allows(session.req_header(), server.write_token.as_ref()) {
        let reply = Reply::text(StatusCode::UNAUTHORIZED, "write token required")
            .header("www-authenticate", "Bearer");
        reply::send_and_close(session, reply).await?;
        return Ok(Outcome::Other);
    }
    let declared: Option<u64> = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let too_large = || {
        Reply::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "upload exceeds the limit of {} bytes",
                server.max_upload_bytes
            ),
        )
    };
    if declared.is_some_and(|len| len > server.max_upload_bytes) {
        reply::send_and_close(session, too_large()).await?;
        return Ok(Outcome::Other);
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        session.write_continue_response().await?;
    }
    let upload = app
        .storage
        .bodies()
        .create(key)
        .await
        .map_err(storage_error)?;
    let Some((written, sha256)) =
        receive(session, upload, server.max_upload_bytes, declared).await?
    else {
        reply::send_and_close(session, too_large()).await?;
        return Ok(Outcome::Other);
    };
    let now = unix_now() as i64;
    app.catalog_writer.record(CatalogEvent::Stored(ArtifactRow {
        remote: remote.name.clone(),
        path: path.to_string(),
        size: written as i64,
        sha256: sha256.clone(),
        content_type: None,
        fetched_at: now,
        last_access: now,
        local: true,
    }));
    let body = json!({"remote": remote.name, "path": path, "size": written, "sha256": sha256});
    reply::send(session, Reply::json(StatusCode::CREATED, &body)).await?;
    Ok(Outcome::Upload)
}

/// Streams the request body into `upload`, committing it once the whole
/// body arrived; `None` when it grew past `limit`. An error (client gone,
/// body cut, shorter than declared) drops `upload`, which discards it.
async fn receive(
    session: &mut Session,
    mut upload: Box<dyn BodyWrite>,
    limit: u64,
    declared: Option<u64>,
) -> Result<Option<(u64, String)>> {
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    while let Some(chunk) = session.read_request_body().await? {
        written += chunk.len() as u64;
        if written > limit {
            return Ok(None);
        }
        hasher.update(&chunk);
        upload.write(chunk).await.map_err(storage_error)?;
    }
    if declared.is_some_and(|len| len != written) {
        return Error::e_explain(
            ErrorType::ReadError,
            "upload body shorter than Content-Length",
        );
    }
    upload.commit().await.map_err(storage_error)?;
    Ok(Some((written, hex::encode(hasher.finalize()))))
}

async fn delete(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    path: &str,
    key: &str,
) -> Result<()> {
    if !bearer_allows(
        session.req_header(),
        app.config().server.write_token.as_ref(),
    ) {
        let reply = Reply::text(StatusCode::UNAUTHORIZED, "write token required")
            .header("www-authenticate", "Bearer");
        return reply::send_and_close(session, reply).await;
    }
    let existed = app
        .storage
        .bodies()
        .delete(key)
        .await
        .map_err(storage_error)?;
    if !existed {
        return reply::send(session, Reply::text(StatusCode::NOT_FOUND, "not found")).await;
    }
    app.catalog_writer.record(CatalogEvent::Removed {
        remote: remote.name.clone(),
        path: path.to_string(),
    });
    reply::send(session, Reply::text(StatusCode::NO_CONTENT, "")).await
}
