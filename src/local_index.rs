//! Index documents of local repositories, generated from what was
//! uploaded: the PyPI simple index of a `package: pypi` local repository,
//! so that pip and uv install uploaded files (alone or as a member of a
//! virtual repository) without any index being uploaded.
//!
//! The listing comes from the catalog, which records an upload within its
//! flush interval (half a second) of the upload's answer.

use crate::app::App;
use crate::config::Remote;
use crate::proxy::respond::{self, Reply};
use bytes::Bytes;
use filters::pypi::{self, FileLink, Form};
use filters::{links, Package};
use http::StatusCode;
use pingora::proxy::Session;
use std::collections::BTreeSet;

/// Serves a generated index document if `path` names one; `false` leaves
/// the request to the file handler.
pub async fn try_serve(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    path: &str,
) -> pingora::Result<bool> {
    let method = &session.req_header().method;
    if remote.package != Package::Pypi
        || (method != http::Method::GET && method != http::Method::HEAD)
    {
        return Ok(false);
    }
    let document = match pypi::document(path) {
        Some(doc @ (pypi::Document::RootIndex | pypi::Document::Project { .. })) => doc,
        _ => return Ok(false),
    };
    let reply = match app.catalog.list(&remote.name).await {
        Ok(rows) => {
            let files: Vec<(String, String)> = rows
                .into_iter()
                .filter(|r| r.local)
                .map(|r| (r.path, r.sha256))
                .collect();
            page(app, session, remote, &document, &files)
        }
        Err(e) => Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("listing '{}': {e}", remote.name),
        ),
    };
    respond::send(session, reply).await?;
    Ok(true)
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
        app.config.server.public_url.as_deref(),
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
    }
}
