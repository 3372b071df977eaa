//! Virtual repositories (`type: virtual`): an ordered list of local and
//! remote repositories of one package type behind one URL. A path is
//! answered by the first member that has it; index documents (PyPI simple
//! pages, npm package documents, Helm indexes) are merged across members,
//! the first member winning per file or version. This is how a team
//! overlays its private packages on a public index.
//!
//! Members are asked through artifactd's own listener, with the client's
//! `Host` and `X-Forwarded-Proto`, so each member's rewriting, caching and
//! verification apply unchanged, and merged documents link to the member
//! that serves each file.

use crate::app::App;
use crate::config::Remote;
use crate::metrics::Outcome;
use crate::reply::{self, Reply};
use bytes::Bytes;
use filters::ecosystem::pypi::{self, Form};
use filters::ecosystem::IndexDocument;
use filters::ecosystem::{helm, npm};
use http::{Method, StatusCode};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

/// Client headers passed on to members.
const FORWARDED: [&str; 7] = [
    "host",
    "x-forwarded-proto",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "accept",
];

/// Member response headers passed back to the client.
const RETURNED: [&str; 11] = [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "vary",
    "x-artifact-source",
    "x-artifact-stale",
];

pub async fn handle(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    path: &str,
    raw_path: &str,
) -> Result<Outcome> {
    let method = session.req_header().method.clone();
    if method != Method::GET && method != Method::HEAD {
        let reply = Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "virtual repository '{}' is read-only: use GET or HEAD",
                remote.name
            ),
        )
        .header("allow", "GET, HEAD");
        reply::send_and_close(session, reply).await?;
        return Ok(Outcome::Other);
    }
    let merged = match remote.ecosystem.index_document(path) {
        Some(IndexDocument::PypiProject { name }) => {
            Some(pypi_project(app, session, remote, &name).await)
        }
        Some(IndexDocument::PypiRoot) => Some(pypi_root(app, session, remote).await),
        Some(IndexDocument::NpmPackage { name }) => {
            Some(npm_document(app, session, remote, &name).await)
        }
        Some(IndexDocument::HelmIndex) => Some(helm_index(app, session, remote, raw_path).await),
        None => None,
    };
    match merged {
        Some(reply) => reply::send(session, reply).await?,
        None => first_member(app, session, remote, raw_path).await?,
    }
    Ok(Outcome::Other)
}

/// A member's request for `raw_path`, with the client's headers that
/// matter (`accept` replaced when given).
fn member_request(
    app: &App,
    session: &Session,
    member: &str,
    raw_path: &str,
    method: Method,
    accept: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = app
        .loopback
        .request(method, &format!("/api/v1/remote/{member}/{raw_path}"));
    let req = session.req_header();
    for name in FORWARDED {
        if name == "accept" && accept.is_some() {
            continue;
        }
        if let Some(value) = req.headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request
}

/// The documents members have for `raw_path` (a 404 skips a member), in
/// member order; the first other failure when none has it.
async fn member_documents(
    app: &App,
    session: &Session,
    remote: &Remote,
    raw_path: &str,
    accept: &str,
) -> std::result::Result<Vec<Bytes>, Reply> {
    let mut documents = Vec::new();
    let mut failure: Option<Reply> = None;
    for member in &remote.members {
        let request = member_request(app, session, member, raw_path, Method::GET, Some(accept));
        match request.send().await {
            Ok(resp) if resp.status() == StatusCode::OK => match resp.bytes().await {
                Ok(body) => documents.push(body),
                Err(e) => failure = failure.or(Some(member_failure(member, &e.to_string()))),
            },
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {}
            Ok(resp) => {
                let reason = format!("answered {}", resp.status());
                failure = failure.or(Some(member_failure(member, &reason)));
            }
            Err(e) => failure = failure.or(Some(member_failure(member, &e.to_string()))),
        }
    }
    if documents.is_empty() {
        return Err(failure.unwrap_or_else(|| {
            Reply::text(
                StatusCode::NOT_FOUND,
                format!("no member of '{}' has {raw_path}", remote.name),
            )
        }));
    }
    Ok(documents)
}

fn member_failure(member: &str, reason: &str) -> Reply {
    Reply::text(
        StatusCode::BAD_GATEWAY,
        format!("member '{member}': {reason}"),
    )
}

fn document_reply(content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        status: StatusCode::OK,
        content_type,
        body: Bytes::from(body),
        headers: vec![("vary", "Accept".to_string())],
        reason: None,
    }
}

fn client_form(session: &Session) -> Form {
    let accept = session
        .req_header()
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok());
    pypi::negotiate(accept)
}

async fn pypi_project(app: &App, session: &Session, remote: &Remote, name: &str) -> Reply {
    let path = format!("simple/{name}/");
    let pages = match member_documents(app, session, remote, &path, pypi::JSON_TYPE).await {
        Ok(pages) => pages,
        Err(reply) => return reply,
    };
    let pages: Vec<serde_json::Value> = pages
        .iter()
        .filter_map(|p| serde_json::from_slice(p).ok())
        .collect();
    let merged = pypi::merge_project_json(name, &pages);
    match client_form(session) {
        Form::Json => document_reply(
            pypi::JSON_TYPE,
            serde_json::to_vec(&merged).unwrap_or_default(),
        ),
        Form::Html => {
            let links = pypi::links_of_json(&merged);
            document_reply("text/html; charset=utf-8", pypi::project_html(name, &links))
        }
    }
}

async fn pypi_root(app: &App, session: &Session, remote: &Remote) -> Reply {
    let indexes = match member_documents(app, session, remote, "simple/", pypi::JSON_TYPE).await {
        Ok(indexes) => indexes,
        Err(reply) => return reply,
    };
    let indexes: Vec<serde_json::Value> = indexes
        .iter()
        .filter_map(|p| serde_json::from_slice(p).ok())
        .collect();
    let merged = pypi::merge_root_json(&indexes);
    match client_form(session) {
        Form::Json => document_reply(
            pypi::JSON_TYPE,
            serde_json::to_vec(&merged).unwrap_or_default(),
        ),
        Form::Html => {
            let names: Vec<&str> = merged["projects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            document_reply("text/html; charset=utf-8", pypi::root_html(&names))
        }
    }
}

async fn npm_document(app: &App, session: &Session, remote: &Remote, name: &str) -> Reply {
    let path = npm::document_path(name);
    let docs = match member_documents(app, session, remote, &path, "application/json").await {
        Ok(docs) => docs,
        Err(reply) => return reply,
    };
    let docs: Vec<serde_json::Value> = docs
        .iter()
        .filter_map(|d| serde_json::from_slice(d).ok())
        .collect();
    match npm::merge(docs) {
        Some(merged) => document_reply(
            "application/json",
            serde_json::to_vec(&merged).unwrap_or_default(),
        ),
        None => Reply::text(
            StatusCode::BAD_GATEWAY,
            "no member answered with a package document",
        ),
    }
}

async fn helm_index(app: &App, session: &Session, remote: &Remote, raw_path: &str) -> Reply {
    let docs =
        match member_documents(app, session, remote, raw_path, "application/x-yaml, */*").await {
            Ok(docs) => docs,
            Err(reply) => return reply,
        };
    let docs: Vec<serde_yaml_ng::Value> = docs
        .iter()
        .filter_map(|d| filters::yaml::from_slice(d).ok())
        .collect();
    match helm::merge(docs).and_then(|merged| serde_yaml_ng::to_string(&merged).ok()) {
        Some(text) => document_reply("application/x-yaml", text.into_bytes()),
        None => Reply::text(StatusCode::BAD_GATEWAY, "no member answered with an index"),
    }
}

/// Streams the answer of the first member that has `raw_path`.
async fn first_member(
    app: &App,
    session: &mut Session,
    remote: &Remote,
    raw_path: &str,
) -> Result<()> {
    let method = session.req_header().method.clone();
    let method = if method == Method::HEAD {
        reqwest::Method::HEAD
    } else {
        reqwest::Method::GET
    };
    let mut failure: Option<Reply> = None;
    for member in &remote.members {
        let request = member_request(app, session, member, raw_path, method.clone(), None);
        let resp = match request.send().await {
            Ok(resp) => resp,
            Err(e) => {
                failure = failure.or(Some(member_failure(member, &e.to_string())));
                continue;
            }
        };
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            continue;
        }
        if status.is_server_error() {
            failure = failure.or(Some(member_failure(member, &format!("answered {status}"))));
            continue;
        }
        return stream(session, member, resp).await;
    }
    let reply = failure.unwrap_or_else(|| {
        Reply::text(
            StatusCode::NOT_FOUND,
            format!("no member of '{}' has {raw_path}", remote.name),
        )
    });
    reply::send(session, reply).await
}

async fn stream(session: &mut Session, member: &str, mut resp: reqwest::Response) -> Result<()> {
    let mut header = pingora::http::ResponseHeader::build(resp.status(), Some(RETURNED.len() + 1))?;
    for name in RETURNED {
        if let Some(value) = resp.headers().get(name) {
            header.append_header(name, value.as_bytes())?;
        }
    }
    header.insert_header("x-artifact-member", member)?;
    let bodyless = session.req_header().method == Method::HEAD
        || matches!(
            resp.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    session
        .write_response_header(Box::new(header), bodyless)
        .await?;
    if bodyless {
        return Ok(());
    }
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            Error::because(ErrorType::ReadError, format!("member '{member}' body"), e)
        })?;
        match chunk {
            Some(chunk) => session.write_response_body(Some(chunk), false).await?,
            None => return session.write_response_body(None, true).await,
        }
    }
}
