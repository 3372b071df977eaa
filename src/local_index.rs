//! Index documents of local repositories, generated from what was
//! uploaded: the PyPI simple index of a `package: pypi` local repository
//! and the package documents of a `package: npm` one, so that pip, uv and
//! npm install uploaded files (alone or as a member of a virtual
//! repository) without any index being uploaded.
//!
//! The listing comes from the catalog, after this node's queued catalog
//! changes are written, so an upload is listed as soon as its `PUT` was
//! answered (an upload through another node of a cluster shows within
//! that node's catalog flush interval, half a second). An npm document
//! reads each uploaded tarball's `package/package.json`: fine for the
//! handful of private versions such a repository holds.

use crate::app::App;
use crate::catalog::ArtifactRow;
use crate::config::Remote;
use crate::reply::{self, Reply};
use bytes::Bytes;
use filters::ecosystem::npm;
use filters::ecosystem::pypi::{self, FileLink, Form};
use filters::ecosystem::IndexDocument;
use filters::links;
use http::StatusCode;
use pingora::proxy::Session;
use sha2::Digest as _;
use std::collections::BTreeSet;
use std::time::Duration;

/// Serves a generated index document if `path` names one; `false` leaves
/// the request to the file handler.
pub async fn try_serve(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    path: &str,
) -> pingora::Result<bool> {
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        return Ok(false);
    }
    let document = match remote.ecosystem.index_document(path) {
        Some(IndexDocument::NpmPackage { name }) => {
            return npm_document(app, session, remote, &name).await
        }
        Some(IndexDocument::PypiRoot) => pypi::Document::RootIndex,
        Some(IndexDocument::PypiProject { name }) => pypi::Document::Project { name },
        Some(IndexDocument::HelmIndex) | None => return Ok(false),
    };
    let reply = match listing(app, remote).await {
        Ok(rows) => {
            let files: Vec<(String, String)> = rows
                .into_iter()
                .filter(|r| r.local)
                .map(|r| (r.path, r.sha256))
                .collect();
            page(app, session, remote, &document, &files)
        }
        Err(refused) => refused,
    };
    reply::send(session, reply).await?;
    Ok(true)
}

/// The longest a listing waits for this node's queued catalog changes; a
/// catalog that is away answers the listing itself.
const CATCH_UP: Duration = Duration::from_secs(2);

/// The catalog's rows of `remote`, once this node's own queued changes
/// (its uploads among them) are written; a 503 naming the remote when
/// the catalog cannot list them.
async fn listing(app: &App, remote: &Remote) -> Result<Vec<ArtifactRow>, Reply> {
    app.catalog_writer.drain(CATCH_UP).await;
    app.catalog.list(&remote.name).await.map_err(|e| {
        Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("listing '{}': {e}", remote.name),
        )
    })
}

/// The simple-API document for uploaded `files` (path, sha256), in the
/// form the client asked for.
fn page(
    app: &App,
    session: &Session,
    remote: &Remote,
    document: &pypi::Document,
    files: &[(String, String)],
) -> Reply {
    let req = session.req_header();
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let base = links::proxy_base(
        app.config().server.public_url.as_deref(),
        header("host"),
        header("x-forwarded-proto"),
        &remote.name,
    );
    let form = pypi::negotiate(header("accept"));
    let file_of = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let body: Vec<u8> = match document {
        pypi::Document::Project { name } => {
            let links: Vec<FileLink> = files
                .iter()
                .filter(|(path, _)| pypi::project_of_file(&file_of(path)).as_deref() == Some(name))
                .map(|(path, sha256)| FileLink {
                    url: format!("{base}{}#sha256={sha256}", links::encode_path(path)),
                    remote_path: Some(path.clone()),
                    filename: file_of(path),
                    hashes: vec![("sha256".into(), sha256.clone())],
                    ..FileLink::default()
                })
                .collect();
            if links.is_empty() {
                return Reply::text(
                    StatusCode::NOT_FOUND,
                    format!("no project '{name}' uploaded"),
                );
            }
            match form {
                Form::Json => pypi::project_json(name, &links),
                Form::Html => pypi::project_html(name, &links),
            }
        }
        _ => {
            let names: BTreeSet<String> = files
                .iter()
                .filter_map(|(path, _)| pypi::project_of_file(&file_of(path)))
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            match form {
                Form::Json => {
                    let links: Vec<FileLink> = names
                        .iter()
                        .map(|n| FileLink {
                            filename: n.to_string(),
                            ..FileLink::default()
                        })
                        .collect();
                    pypi::root_json(&links)
                }
                Form::Html => pypi::root_html(&names),
            }
        }
    };
    let content_type = match form {
        Form::Json => pypi::JSON_TYPE,
        Form::Html => "text/html; charset=utf-8",
    };
    Reply {
        status: StatusCode::OK,
        content_type,
        body: Bytes::from(body),
        headers: vec![("vary", "Accept".to_string())],
        reason: None,
    }
}

/// The largest uploaded tarball read for its manifest.
const MAX_TARBALL: i64 = 64 << 20;

/// Serves the package document of `path` if it names a package with
/// uploaded tarballs (`NAME/-/BASE-VERSION.tgz`).
async fn npm_document(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    name: &str,
) -> pingora::Result<bool> {
    let rows = match listing(app, remote).await {
        Ok(rows) => rows,
        Err(refused) => {
            reply::send(session, refused).await?;
            return Ok(true);
        }
    };
    let prefix = format!("{name}/-/");
    let req = session.req_header();
    let header = |h: &str| req.headers.get(h).and_then(|v| v.to_str().ok());
    let base = links::proxy_base(
        app.config().server.public_url.as_deref(),
        header("host"),
        header("x-forwarded-proto"),
        &remote.name,
    );
    let tarballs = rows
        .iter()
        .filter(|r| r.local && r.path.starts_with(&prefix) && r.path.ends_with(".tgz"))
        .filter(|r| r.size <= MAX_TARBALL);
    let mut uploads = Vec::new();
    for row in tarballs {
        let key = format!("local/{}/{}", remote.name, row.path);
        let Ok(Some(bytes)) = app.storage.bodies().get_small(&key).await else {
            continue;
        };
        let read = tokio::task::spawn_blocking(move || manifest_of(&bytes).map(|m| (m, bytes)));
        let Some((manifest, bytes)) = read.await.ok().flatten() else {
            continue;
        };
        let uploaded =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(row.fetched_at.max(0) as u64);
        uploads.push(npm::LocalVersion {
            manifest,
            tarball: format!("{base}{}", links::encode_path(&row.path)),
            sha512: sha2::Sha512::digest(&bytes).to_vec(),
            sha1: sha1::Sha1::digest(&bytes).to_vec(),
            published: filters::quarantine::rfc3339(uploaded),
        });
    }
    let Some(doc) = npm::local_document(name, uploads) else {
        return Ok(false);
    };
    reply::send(session, Reply::json(StatusCode::OK, &doc)).await?;
    Ok(true)
}

/// `package/package.json` of an npm tarball.
fn manifest_of(tarball: &[u8]) -> Option<serde_json::Value> {
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        let is_manifest = entry
            .path()
            .ok()
            .is_some_and(|p| p.components().count() == 2 && p.ends_with("package.json"));
        if is_manifest {
            let mut text = Vec::new();
            entry.take(1 << 20).read_to_end(&mut text).ok()?;
            return serde_json::from_slice(&text).ok();
        }
    }
    None
}
