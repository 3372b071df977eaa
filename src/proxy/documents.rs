//! Index documents of package remotes: PyPI's simple pages and JSON API,
//! npm package documents, Helm repository indexes. Routing gives each document one canonical path and a cache key
//! per form; after the cache, the stored upstream document is rewritten for
//! the client that asked, so its file links come back through artifactd and
//! one cached copy serves every host name a client uses (STYLE.md §7.8).
//!
//! Rewriting streams for HTML; JSON and YAML documents are rewritten
//! whole, up to [`MAX_WHOLE_DOCUMENT`]. The checksums a document publishes are recorded
//! ([`crate::checksums`]) so the downloads it links to are verified.
//!
//! The rewriter runs as a downstream HTTP module ([`RewriteModule`]), not
//! in `response_body_filter`: a miss streamed to its client from the cache
//! fill ends with pingora's `Done` task, which only modules see, and a
//! whole-document rewrite needs that end.

use super::artifact::Artifact;
use crate::checksums::{Checksums, Published};
use crate::config::{Remote, ServerConfig, Upstream};
use crate::rewrites::{self, Found, Making, Rewrites, Rewritten};
use crate::storage::layout::EntryLocation;
use crate::storage::CacheStorage;
use bytes::{Bytes, BytesMut};
use filters::ecosystem::pypi::{self, FileLink, Form, HtmlRewriter};
use filters::ecosystem::{npm, Document};
use filters::firewall::Shown;
use filters::links::{self, LinkMap};
use pingora::cache::{CachePhase, HttpCache};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use std::sync::Arc;
use std::time::SystemTime;

/// The largest JSON or YAML index document rewritten; a larger one is
/// passed on as the upstream sent it rather than held in memory.
pub const MAX_WHOLE_DOCUMENT: usize = 64 << 20;

/// A request header's value, if it is text.
pub(super) fn header(req: &RequestHeader, name: http::header::HeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The upstream a request goes to: a PyPI remote's index host for its
/// index documents, else the remote's `base_url`.
pub fn upstream_of(artifact: &Artifact) -> Option<&Upstream> {
    let index = artifact
        .document()
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

/// `scheme://host:port/base_path/` of an upstream.
pub fn url_of(upstream: &Upstream) -> String {
    let scheme = if upstream.tls { "https" } else { "http" };
    let host = if upstream.host.contains(':') {
        format!("[{}]", upstream.host)
    } else {
        upstream.host.clone()
    };
    format!("{scheme}://{host}:{}{}/", upstream.port, upstream.base_path)
}

/// The base URL a document's links point at for a client that sent these
/// `Host` and `X-Forwarded-Proto` headers.
pub fn client_base(
    server: &ServerConfig,
    remote: &Remote,
    host: Option<&str>,
    forwarded_proto: Option<&str>,
) -> String {
    links::proxy_base(
        server.public_url.as_deref(),
        host,
        forwarded_proto,
        &remote.name,
    )
}

/// Whether a hit on the artifact is a stored index document rewritten
/// for its client, whose rewrite may be kept ([`crate::rewrites`]): not
/// where quarantined versions are hidden, as what shows moves with the
/// clock.
pub fn served_rewritten(artifact: &Artifact) -> bool {
    let hides = artifact.judged.shown.hide_after.is_some();
    artifact.document().is_some_and(|d| d.rewritten()) && !hides
}

/// What a hit may reuse of an earlier rewrite ([`crate::rewrites`]).
pub enum Reuse {
    /// Rewrite, and keep nothing.
    Nothing,
    /// The kept copy, for a hit on the stored meta of `epoch`.
    Copy {
        copy: Arc<Rewritten>,
        epoch: SystemTime,
        rewrites: Arc<Rewrites>,
    },
    /// Rewrite, and keep the result (made from the meta of `epoch`).
    Make { making: Making, epoch: SystemTime },
}

/// What the response `cache` describes may reuse: a fresh hit on a
/// document whose stored body the hot tier holds (its lookup has just put
/// it there) looks for a kept copy for this client, and waits for one
/// being made.
pub async fn reuse(
    (kept, storage): (&Arc<Rewrites>, &CacheStorage),
    server: &ServerConfig,
    artifact: &Artifact,
    req: &RequestHeader,
    cache: &HttpCache,
) -> Reuse {
    // Not a stale response: its header is not the one a hit sends, and it
    // records the document's checksums again.
    let hit = cache.phase() == CachePhase::Hit;
    if !hit || !kept.enabled() || !served_rewritten(artifact) {
        return Reuse::Nothing;
    }
    let (Some(key), Some(meta)) = (cache.maybe_cache_key(), cache.maybe_cache_meta()) else {
        return Reuse::Nothing;
    };
    let (id, epoch) = (EntryLocation::from_key(key).id(), meta.epoch());
    let Some(digest) = storage.held_digest(id) else {
        return Reuse::Nothing;
    };
    let base = client_base(
        server,
        &artifact.remote,
        header(req, http::header::HOST),
        header(req, FORWARDED_PROTO),
    );
    let key = rewrites::key(id, &digest, &base, artifact.judged.generation);
    match kept.get_or_make(key).await {
        Found::Copy(copy) => Reuse::Copy {
            copy,
            epoch,
            rewrites: kept.clone(),
        },
        Found::Make(making) => Reuse::Make { making, epoch },
    }
}

const FORWARDED_PROTO: http::header::HeaderName =
    http::header::HeaderName::from_static("x-forwarded-proto");

/// The link map of a document of `remote` for the client of `req`;
/// `canonical_path` is the upstream path (still percent-encoded).
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
    let proxy_base = client_base(
        server,
        remote,
        header(req, http::header::HOST),
        header(req, FORWARDED_PROTO),
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
    /// The package whose listed versions are recorded at the end (a fresh
    /// document of a remote that refuses withdrawn releases).
    listing: Option<String>,
    document: Document,
    checksums: Arc<Checksums>,
    /// What the document leaves out or marks (minimum age, firewall).
    shown: Shown,
    /// The output being gathered to keep, when this rewrite is kept.
    keep: Option<Keep>,
}

/// A rewrite being kept ([`crate::rewrites`]).
struct Keep {
    making: Making,
    header: ResponseHeader,
    epoch: SystemTime,
    out: BytesMut,
}

enum Input {
    /// An HTML page; `stream` passes the rewritten page on as it comes.
    Html {
        rewriter: HtmlRewriter,
        stream: bool,
    },
    /// A JSON or YAML document, gathered whole.
    Whole {
        map: LinkMap,
        buffer: BytesMut,
        kind: WholeKind,
    },
    /// A document too large to rewrite, passed on unchanged.
    Passthrough,
    /// A kept rewrite of the stored body: the body read is dropped and the
    /// copy sent at its end.
    Kept(Bytes),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WholeKind {
    PypiSimple,
    PypiApi,
    Npm,
    Helm,
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
        reuse: Reuse,
    ) -> pingora::Result<Option<BodyRewriter>> {
        let Some(document) = artifact.document().filter(|d| d.rewritten()) else {
            return Ok(None);
        };
        if resp.status != http::StatusCode::OK {
            return Ok(None);
        }
        let stored_json = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(pypi::is_json_type);
        let (project, output, content_type, json_kind) = match document {
            Document::PypiSimple { project, form } => (
                project.clone(),
                *form,
                Some(form.content_type()),
                stored_json.then_some(WholeKind::PypiSimple),
            ),
            Document::PypiJsonApi => (
                None,
                Form::Json,
                Some("application/json"),
                Some(WholeKind::PypiApi),
            ),
            // The upstream's type stays: full or abbreviated.
            Document::NpmPackage { .. } => (None, Form::Json, None, Some(WholeKind::Npm)),
            Document::HelmIndex => (None, Form::Json, None, Some(WholeKind::Helm)),
            // Search results pass through; a snapshot index's links are
            // relative and its bytes are checked against the gate's copy.
            _ => return Ok(None),
        };
        let Some(map) = link_map(&artifact.remote, &artifact.raw_path, req, server) else {
            return Ok(None);
        };
        let input = match json_kind {
            Some(kind) => Input::Whole {
                map,
                buffer: BytesMut::new(),
                kind,
            },
            None => Input::Html {
                rewriter: HtmlRewriter::new(map, artifact.judged.shown.clone()),
                stream: output == Form::Html,
            },
        };
        let output_type = match (&input, output) {
            (Input::Html { .. }, Form::Html) => Some("text/html; charset=utf-8"),
            _ => content_type,
        };
        if let Some(output_type) = output_type {
            resp.insert_header(http::header::CONTENT_TYPE, output_type)?;
        }
        resp.remove_header(&http::header::CONTENT_LENGTH);
        resp.remove_header(&http::header::ETAG);
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        if !matches!(document, Document::PypiJsonApi | Document::HelmIndex) {
            resp.insert_header(http::header::VARY, "Accept")?;
        }
        let (input, keep) = match reuse {
            Reuse::Nothing => (input, None),
            Reuse::Copy {
                copy,
                epoch,
                rewrites,
            } => {
                if copy.epoch != epoch {
                    rewrites.reframe(&copy, resp.clone(), epoch);
                }
                (Input::Kept(copy.body.clone()), None)
            }
            Reuse::Make { making, epoch } => {
                let keep = Keep {
                    making,
                    header: resp.clone(),
                    epoch,
                    out: BytesMut::new(),
                };
                (input, Some(keep))
            }
        };
        Ok(Some(BodyRewriter {
            remote: artifact.remote.name.clone(),
            input,
            output,
            project,
            record,
            checksums: checksums.clone(),
            shown: artifact.judged.shown.clone(),
            listing: (record && artifact.remote.refuse_withdrawn)
                .then(|| {
                    (artifact.remote.ecosystem)
                        .package_of_document(document, &artifact.key_parts[0])
                })
                .flatten(),
            document: document.clone(),
            keep,
        }))
    }

    /// Rewrites one body event in place.
    pub fn filter(&mut self, body: &mut Option<Bytes>, end: bool) -> pingora::Result<()> {
        let chunk = body.take().unwrap_or_default();
        let mut out = Vec::new();
        match &mut self.input {
            Input::Kept(copy) => {
                // Sent whole at the end, without a copy into `out`.
                *body = end.then(|| copy.clone());
                return Ok(());
            }
            Input::Html { rewriter, stream } => {
                rewriter.push(&chunk, &mut out);
                if end {
                    rewriter.finish(&mut out);
                }
                if !*stream {
                    out.clear();
                }
            }
            Input::Whole { buffer, .. } => {
                if buffer.len() + chunk.len() > MAX_WHOLE_DOCUMENT {
                    // Too large to hold: the rest goes out as the upstream
                    // sent it.
                    log::warn!(
                        "remote '{}': {UNREWRITABLE}: over {MAX_WHOLE_DOCUMENT} bytes; passed on as is",
                        self.remote
                    );
                    out.extend_from_slice(buffer);
                    out.extend_from_slice(&chunk);
                    self.input = Input::Passthrough;
                    self.keep = None;
                } else {
                    buffer.extend_from_slice(&chunk);
                }
            }
            Input::Passthrough => out.extend_from_slice(&chunk),
        }
        if end {
            out.extend(self.finish()?);
        }
        self.gather(&out, end);
        *body = (!out.is_empty() || end).then(|| Bytes::from(out));
        Ok(())
    }

    /// Gathers the output of a rewrite being kept, and keeps it at the end.
    fn gather(&mut self, out: &[u8], end: bool) {
        let Some(keep) = &mut self.keep else {
            return;
        };
        keep.out.extend_from_slice(out);
        if keep.out.len() > MAX_WHOLE_DOCUMENT {
            self.keep = None;
        } else if end {
            if let Some(keep) = self.keep.take() {
                keep.making
                    .finish(keep.header, keep.epoch, keep.out.freeze());
            }
        }
    }

    /// The whole-document part of the output, at the end of the body, and
    /// the recording of checksums. A document that cannot be parsed is
    /// passed on as the upstream sent it (and logged): the client's own
    /// parser has the last word.
    fn finish(&mut self) -> pingora::Result<Vec<u8>> {
        let (out, published) = match &mut self.input {
            Input::Html { rewriter, stream } => {
                let links = rewriter.links();
                let out = match (*stream, &self.project) {
                    (true, _) => Vec::new(),
                    (false, Some(name)) => pypi::project_json(name, links),
                    (false, None) => pypi::root_json(links),
                };
                (out, published(links))
            }
            Input::Whole { map, buffer, kind } => {
                let project = self
                    .project
                    .as_deref()
                    .filter(|_| self.output == Form::Html);
                match rewrite_whole(*kind, buffer, map, &self.shown, project) {
                    Ok(rewritten) => rewritten,
                    Err(e) => {
                        log::warn!(
                            "remote '{}': {UNREWRITABLE}: {e}; passed on as is",
                            self.remote
                        );
                        // Not kept: the next hit tries (and logs) again.
                        self.keep = None;
                        (buffer.to_vec(), Vec::new())
                    }
                }
            }
            Input::Passthrough | Input::Kept(_) => (Vec::new(), Vec::new()),
        };
        if self.record && !published.is_empty() {
            self.checksums.record(&self.remote, published);
        }
        self.record_listing();
        Ok(out)
    }
}

impl BodyRewriter {
    /// Records which versions the fresh document lists, for a remote that
    /// refuses what its upstream withdrew.
    fn record_listing(&self) {
        let Some(package) = &self.listing else {
            return;
        };
        let versions: Option<Vec<String>> = match &self.input {
            Input::Html { rewriter, .. } => Some(
                rewriter
                    .links()
                    .iter()
                    .filter_map(|link| pypi::package_of(&link.filename))
                    .map(|release| release.version)
                    .collect(),
            ),
            Input::Whole { buffer, .. } => self.document.listed_versions(buffer),
            Input::Passthrough | Input::Kept(_) => None,
        };
        if let Some(versions) = versions {
            self.checksums
                .record_listing(&self.remote, package, versions.into_iter().collect());
        }
    }
}

/// Rewrites a whole JSON or YAML document; `html_project` renders a PyPI
/// page as HTML for a client that asked for that form.
fn rewrite_whole(
    kind: WholeKind,
    doc: &[u8],
    map: &LinkMap,
    shown: &Shown,
    html_project: Option<&str>,
) -> Result<(Vec<u8>, Vec<Published>), String> {
    match kind {
        WholeKind::Npm => {
            let rewritten = npm::rewrite(doc, map, shown).map_err(|e| e.to_string())?;
            let published = rewritten.tarballs.into_iter().filter_map(|t| {
                Some(Published {
                    path: t.remote_path?,
                    digest: t.digest?,
                })
            });
            Ok((rewritten.body, published.collect()))
        }
        WholeKind::Helm => {
            let rewritten = filters::ecosystem::helm::rewrite(doc, map, shown.hide_after)
                .map_err(|e| e.to_string())?;
            let published = rewritten.charts.into_iter().flat_map(|chart| {
                let digest = chart.digest;
                chart.remote_paths.into_iter().filter_map(move |path| {
                    Some(Published {
                        path,
                        digest: digest.clone()?,
                    })
                })
            });
            Ok((rewritten.body, published.collect()))
        }
        WholeKind::PypiApi | WholeKind::PypiSimple => {
            let rewritten = match kind {
                WholeKind::PypiApi => pypi::rewrite_json_api(doc, map, shown),
                _ => pypi::rewrite_simple_json(doc, map, shown),
            };
            let (json, links) = rewritten.map_err(|e| e.to_string())?;
            let out = match html_project {
                Some(name) => pypi::project_html(name, &links),
                None => json,
            };
            Ok((out, published(&links)))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EmbeddedState;

    const NPM: &str = include_str!("../../tests/fixtures/npm/verdaccio-scoped-full.json");
    const PYPI_HTML: &str = include_str!("../../tests/fixtures/pypi/pypiserver-tiny-dep.html");

    fn checksums(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> Arc<Checksums> {
        let state: Arc<dyn crate::state::StateStore> = Arc::new(EmbeddedState::open(dir).unwrap());
        Arc::new(Checksums::new(state, runtime.handle().clone()))
    }

    fn map(upstream: &str, page: &str) -> LinkMap {
        let page = format!("{upstream}/{page}");
        let upstreams = vec![links::Upstream::new(upstream, &[]).unwrap()];
        LinkMap::new(&page, upstreams, "http://cache/api/v1/remote/r/").unwrap()
    }

    /// A rewriter of a whole npm document, recording nothing.
    fn npm_rewriter(page: &str, checksums: &Arc<Checksums>) -> BodyRewriter {
        BodyRewriter {
            remote: "r".into(),
            input: Input::Whole {
                map: map("http://127.0.0.1:38300", page),
                buffer: BytesMut::new(),
                kind: WholeKind::Npm,
            },
            output: Form::Json,
            project: None,
            record: false,
            checksums: checksums.clone(),
            shown: Shown::default(),
            listing: None,
            document: Document::HelmIndex,
            keep: None,
        }
    }

    /// Runs `input` through a rewriter in chunks of `size`, through the
    /// module as pingora calls it (body events, then `Done`).
    fn rewrite(make: &dyn Fn() -> BodyRewriter, doc: &str, size: usize) -> Vec<u8> {
        let mut module = RewriteModule::default();
        module.set(make());
        let mut out = Vec::new();
        for piece in doc.as_bytes().chunks(size) {
            let mut body = Some(Bytes::copy_from_slice(piece));
            module.response_body_filter(&mut body, false).unwrap();
            out.extend(body.unwrap_or_default());
        }
        out.extend(module.response_done_filter().unwrap().unwrap_or_default());
        // A second end (a body event with end after Done) adds nothing.
        let mut end = None;
        module.response_body_filter(&mut end, true).unwrap();
        assert!(end.is_none_or(|b| b.is_empty()));
        out
    }

    #[test]
    fn whole_and_streamed_documents_come_out_the_same_at_every_chunk_size() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let checksums = checksums(dir.path(), &runtime);
        let npm = || npm_rewriter("@demo%2fapp", &checksums);
        let whole = rewrite(&npm, NPM, NPM.len());
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(
            text.contains("http://cache/api/v1/remote/r/@demo/app/-/app-1.0.0.tgz"),
            "{text}"
        );
        for size in [1, 2, 7, 64, 333] {
            assert_eq!(rewrite(&npm, NPM, size), whole, "npm, chunks of {size}");
        }
        let html_to_json = || BodyRewriter {
            remote: "r".into(),
            input: Input::Html {
                rewriter: HtmlRewriter::new(
                    map("http://127.0.0.1:38111", "simple/tiny-dep/"),
                    Shown::default(),
                ),
                stream: false,
            },
            output: Form::Json,
            project: Some("tiny-dep".into()),
            record: false,
            checksums: checksums.clone(),
            shown: Shown::default(),
            listing: None,
            document: Document::HelmIndex,
            keep: None,
        };
        let whole = rewrite(&html_to_json, PYPI_HTML, PYPI_HTML.len());
        let json: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(json["files"].as_array().unwrap().len(), 2);
        for size in [1, 3, 17, 100] {
            assert_eq!(
                rewrite(&html_to_json, PYPI_HTML, size),
                whole,
                "PyPI, chunks of {size}"
            );
        }
    }

    #[test]
    fn an_unparsable_or_oversized_document_is_passed_on_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let checksums = checksums(dir.path(), &runtime);
        let broken = || npm_rewriter("x", &checksums);
        assert_eq!(rewrite(&broken, "<html>not json", 3), b"<html>not json");
        let mut module = RewriteModule::default();
        module.set(broken());
        let big = vec![b' '; MAX_WHOLE_DOCUMENT - 10];
        let mut out = 0;
        for piece in [&big[..], b"0123456789abcdef"] {
            let mut body = Some(Bytes::copy_from_slice(piece));
            module.response_body_filter(&mut body, false).unwrap();
            out += body.map_or(0, |b| b.len());
        }
        assert_eq!(
            out,
            MAX_WHOLE_DOCUMENT + 6,
            "everything passed on once too large"
        );
    }
}
