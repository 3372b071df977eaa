//! Index documents of package remotes: the PyPI simple pages and JSON API
//! today. Routing gives each document one canonical path and a cache key
//! per form; after the cache, the stored upstream document is rewritten for
//! the client that asked, so its file links come back through artifactd and
//! one cached copy serves every host name a client uses (STYLE.md §7.8).
//!
//! Rewriting streams for HTML; JSON documents are rewritten whole, up to
//! [`MAX_JSON_DOCUMENT`]. The checksums a document publishes are recorded
//! ([`crate::checksums`]) so the downloads it links to are verified.
//!
//! The rewriter runs as a downstream HTTP module ([`RewriteModule`]), not
//! in `response_body_filter`: a miss streamed to its client from the cache
//! fill ends with pingora's `Done` task, which only modules see, and a
//! whole-document rewrite needs that end.

use super::ctx::Artifact;
use crate::checksums::{Checksums, Published};
use crate::config::{Remote, ServerConfig, Upstream};
use bytes::{Bytes, BytesMut};
use filters::links::{self, LinkMap};
use filters::pypi::{self, FileLink, Form, HtmlRewriter};
use filters::Package;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use std::sync::Arc;

/// The largest JSON index document rewritten; a larger one fails the
/// request rather than hold more in memory.
pub const MAX_JSON_DOCUMENT: usize = 64 << 20;

/// What an index document request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// PyPI's `simple/` (no project) or `simple/{project}/`, in a form.
    PypiSimple { project: Option<String>, form: Form },
    /// PyPI's `pypi/{project}/json`.
    PypiJsonApi,
}

/// Routes an artifact request of a package remote that names an index
/// document: canonical path (a non-normalised project name gets the
/// normalised page), a cache key per form, and the plan for rewriting.
pub fn route(artifact: &mut Artifact, req: &RequestHeader) {
    if artifact.remote.package != Package::Pypi {
        return;
    }
    let Some(doc) = pypi::document(&artifact.key_parts[0]) else {
        return;
    };
    let path = doc.canonical_path();
    let form = pypi::negotiate(header(req, http::header::ACCEPT));
    let document = match doc {
        pypi::Document::RootIndex => Document::PypiSimple {
            project: None,
            form,
        },
        pypi::Document::Project { name } => Document::PypiSimple {
            project: Some(name),
            form,
        },
        pypi::Document::JsonApi { .. } => Document::PypiJsonApi,
    };
    artifact.raw_path = path.clone();
    artifact.key_parts = vec![path];
    if let Document::PypiSimple { form, .. } = &document {
        artifact.key_parts.push(format!("form={}", form.as_str()));
    }
    artifact.document = Some(document);
}

fn header(req: &RequestHeader, name: http::header::HeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The upstream a request goes to: a PyPI remote's index host for its
/// index documents, else the remote's `base_url`.
pub fn upstream_of(artifact: &Artifact) -> Option<&Upstream> {
    let index = artifact
        .document
        .as_ref()
        .and(artifact.remote.index_upstream.as_ref());
    index.or(artifact.remote.upstream.as_ref())
}

/// Prepares the client's request: a rewritten document has no byte ranges
/// or validators of its own (they describe the upstream's bytes).
pub fn prepare_client_request(req: &mut RequestHeader) {
    for name in [
        http::header::RANGE,
        http::header::IF_RANGE,
        http::header::IF_NONE_MATCH,
        http::header::IF_MODIFIED_SINCE,
    ] {
        req.remove_header(&name);
    }
}

/// The `Accept` asked of the upstream for a document.
pub fn upstream_accept(document: &Document) -> &'static str {
    match document {
        Document::PypiSimple { form, .. } => pypi::upstream_accept(*form),
        Document::PypiJsonApi => "application/json",
    }
}

fn url_of(upstream: &Upstream) -> String {
    let scheme = if upstream.tls { "https" } else { "http" };
    let host = if upstream.host.contains(':') {
        format!("[{}]", upstream.host)
    } else {
        upstream.host.clone()
    };
    format!("{scheme}://{host}:{}{}/", upstream.port, upstream.base_path)
}

/// The link map of a document of `remote` for the client of `req`.
fn link_map(
    remote: &Remote,
    canonical_path: &str,
    req: &RequestHeader,
    server: &ServerConfig,
) -> Option<LinkMap> {
    let files = remote.upstream.as_ref()?;
    let index = remote.index_upstream.as_ref().unwrap_or(files);
    let mut upstreams = vec![links::Upstream::new(&url_of(files), &[]).ok()?];
    if remote.index_upstream.is_some() {
        upstreams.push(links::Upstream::new(&url_of(index), &["simple/", "pypi/"]).ok()?);
    }
    let page = format!("{}{canonical_path}", url_of(index));
    let proxy_base = links::proxy_base(
        server.public_url.as_deref(),
        header(req, http::header::HOST),
        header(
            req,
            http::header::HeaderName::from_static("x-forwarded-proto"),
        ),
        &remote.name,
    );
    LinkMap::new(&page, upstreams, &proxy_base).ok()
}

/// Rewrites one document response body for one client.
pub struct BodyRewriter {
    remote: String,
    input: Input,
    output: Form,
    project: Option<String>,
    /// Whether the checksums found are recorded at the end.
    record: bool,
    checksums: Arc<Checksums>,
}

enum Input {
    /// An HTML page; `stream` passes the rewritten page on as it comes.
    Html {
        rewriter: HtmlRewriter,
        stream: bool,
    },
    /// A JSON document, gathered whole.
    Json {
        map: LinkMap,
        buffer: BytesMut,
        api: bool,
    },
}

/// The error of a document that cannot be rewritten.
pub const UNREWRITABLE: &str = "index document could not be rewritten";

impl BodyRewriter {
    /// Starts rewriting a `200` document response, fixing its headers.
    /// `record`: the body is a fresh copy from the upstream, whose
    /// checksums are recorded.
    pub fn start(
        artifact: &Artifact,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
        server: &ServerConfig,
        checksums: &Arc<Checksums>,
        record: bool,
    ) -> pingora::Result<Option<BodyRewriter>> {
        let Some(document) = &artifact.document else {
            return Ok(None);
        };
        if resp.status != http::StatusCode::OK {
            return Ok(None);
        }
        let Some(map) = link_map(&artifact.remote, &artifact.raw_path, req, server) else {
            return Ok(None);
        };
        let stored_json = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(pypi::is_json_type);
        let (project, output, content_type) = match document {
            Document::PypiSimple { project, form } => (project.clone(), *form, form.content_type()),
            Document::PypiJsonApi => (None, Form::Json, "application/json"),
        };
        let api = matches!(document, Document::PypiJsonApi);
        let input = if stored_json || api {
            Input::Json {
                map,
                buffer: BytesMut::new(),
                api,
            }
        } else {
            Input::Html {
                rewriter: HtmlRewriter::new(map),
                stream: output == Form::Html,
            }
        };
        let output_type = match (&input, output) {
            (Input::Html { .. }, Form::Html) => "text/html; charset=utf-8",
            _ => content_type,
        };
        resp.insert_header(http::header::CONTENT_TYPE, output_type)?;
        resp.remove_header(&http::header::CONTENT_LENGTH);
        resp.remove_header(&http::header::ETAG);
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        if !api {
            resp.insert_header(http::header::VARY, "Accept")?;
        }
        Ok(Some(BodyRewriter {
            remote: artifact.remote.name.clone(),
            input,
            output,
            project,
            record,
            checksums: checksums.clone(),
        }))
    }

    /// Rewrites one body event in place.
    pub fn filter(&mut self, body: &mut Option<Bytes>, end: bool) -> pingora::Result<()> {
        let chunk = body.take().unwrap_or_default();
        let mut out = Vec::new();
        match &mut self.input {
            Input::Html { rewriter, stream } => {
                rewriter.push(&chunk, &mut out);
                if end {
                    rewriter.finish(&mut out);
                }
                if !*stream {
                    out.clear();
                }
            }
            Input::Json { buffer, .. } => {
                if buffer.len() + chunk.len() > MAX_JSON_DOCUMENT {
                    return Err(pingora::Error::explain(
                        pingora::ErrorType::Custom(UNREWRITABLE),
                        format!("JSON document over {MAX_JSON_DOCUMENT} bytes"),
                    ));
                }
                buffer.extend_from_slice(&chunk);
            }
        }
        if end {
            out.extend(self.finish()?);
        }
        *body = (!out.is_empty() || end).then(|| Bytes::from(out));
        Ok(())
    }

    /// The whole-document part of the output, at the end of the body, and
    /// the recording of checksums.
    fn finish(&mut self) -> pingora::Result<Vec<u8>> {
        let (out, links) = match &mut self.input {
            Input::Html { rewriter, stream } => {
                let links = rewriter.links().to_vec();
                let out = match (*stream, &self.project) {
                    (true, _) => Vec::new(),
                    (false, Some(name)) => pypi::project_json(name, &links),
                    (false, None) => pypi::root_json(&links),
                };
                (out, links)
            }
            Input::Json { map, buffer, api } => {
                let rewritten = if *api {
                    pypi::rewrite_json_api(buffer, map)
                } else {
                    pypi::rewrite_simple_json(buffer, map)
                };
                let (json, links) = rewritten.map_err(|e| {
                    pingora::Error::explain(pingora::ErrorType::Custom(UNREWRITABLE), e.to_string())
                })?;
                let out = match (self.output, &self.project) {
                    (Form::Html, Some(name)) => pypi::project_html(name, &links),
                    _ => json,
                };
                (out, links)
            }
        };
        if self.record {
            self.checksums.record(&self.remote, published(&links));
        }
        Ok(out)
    }
}

/// The per-request module that applies a [`BodyRewriter`] set up in
/// `response_filter`; inert for every other response.
#[derive(Default)]
pub struct RewriteModule {
    rewriter: Option<BodyRewriter>,
    finished: bool,
}

impl RewriteModule {
    pub fn set(&mut self, rewriter: BodyRewriter) {
        self.rewriter = Some(rewriter);
    }
}

#[async_trait::async_trait]
impl HttpModule for RewriteModule {
    fn response_body_filter(&mut self, body: &mut Option<Bytes>, end: bool) -> pingora::Result<()> {
        let Some(rewriter) = self.rewriter.as_mut() else {
            return Ok(());
        };
        if self.finished {
            return Ok(());
        }
        self.finished = end;
        rewriter.filter(body, end)
    }

    fn response_done_filter(&mut self) -> pingora::Result<Option<Bytes>> {
        let Some(rewriter) = self.rewriter.as_mut() else {
            return Ok(None);
        };
        if std::mem::replace(&mut self.finished, true) {
            return Ok(None);
        }
        let mut body = None;
        rewriter.filter(&mut body, true)?;
        Ok(body)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

pub struct RewriteModuleBuilder;

impl HttpModuleBuilder for RewriteModuleBuilder {
    fn init(&self) -> Module {
        Box::new(RewriteModule::default())
    }
}

/// The checksums of the files (and PEP 658 metadata files) a document
/// links back through its remote.
fn published(links: &[FileLink]) -> Vec<Published> {
    let mut out = Vec::new();
    for link in links {
        let Some(path) = &link.remote_path else {
            continue;
        };
        if let Some(digest) = link.expected_digest() {
            out.push(Published {
                path: path.clone(),
                digest,
            });
        }
        if let Some(digest) = link.metadata_digest() {
            out.push(Published {
                path: format!("{path}.metadata"),
                digest,
            });
        }
    }
    out
}
