//! What each kind of artifact adds to the proxy's phases: one hook per
//! phase, called once by that phase, which never asks which kind it
//! serves. A plain file adds the check against the checksum its index
//! published; an index document is rewritten for its client (and a
//! snapshot index waits for what it names); the OCI API completes and
//! verifies its responses and speaks its own error bodies. A new kind is
//! one arm in each hook that concerns it; every other hook passes it by.

use super::artifact::{Artifact, ArtifactKind};
use super::ctx::Checks;
use super::failure::Failure;
use super::verify::DocumentCheck;
use super::{documents, files, oci};
use crate::app::App;
use crate::firewall::POLICY_HEADER;
use crate::metrics::recent::ProblemKind;
use crate::reply::Reply;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use std::sync::Arc;

/// `request_filter`: the client's request as the cache should see it.
pub fn client_request(artifact: &Artifact, req: &mut RequestHeader) {
    if let ArtifactKind::Document(_) = artifact.kind {
        documents::prepare_client_request(req);
    }
}

/// `request_cache_filter`: whether the cache keeps this artifact at all.
pub fn cached(artifact: &Artifact) -> bool {
    match &artifact.kind {
        ArtifactKind::Document(document) => document.cached(),
        ArtifactKind::File | ArtifactKind::Oci(_) => true,
    }
}

/// The hit fast path: whether the artifact is cached and a hit sends the
/// stored response as it is (an index document is rewritten per client,
/// answered fast only with a kept rewrite: `documents::served_rewritten`;
/// the OCI API adds its headers, so its hits go through the phases).
pub fn served_as_stored(artifact: &Artifact) -> bool {
    match &artifact.kind {
        ArtifactKind::File => true,
        ArtifactKind::Document(_) | ArtifactKind::Oci(_) => false,
    }
}

/// `upstream_response_filter`: completes the upstream's header and sets
/// what its body is checked against as it streams; `can_keep_previous`
/// says an expired copy may still be served instead (a snapshot index
/// waits for what it names only then).
pub async fn upstream_response(
    app: &Arc<App>,
    artifact: &Artifact,
    resp: &mut ResponseHeader,
    can_keep_previous: bool,
    checks: &mut Checks,
) -> Result<()> {
    match &artifact.kind {
        ArtifactKind::Oci(oci) => {
            oci::complete_upstream_headers(oci, resp)?;
            checks.body_check = oci::body_check(oci, resp);
            checks.file_check = None;
        }
        ArtifactKind::File | ArtifactKind::Document(_) => {
            files::label(artifact, resp)?;
            checks.body_check = None;
            checks.file_check = files::check(app, artifact, resp, can_keep_previous).await?;
            checks.document_check = document_check(app, artifact, resp)?;
        }
    }
    Ok(())
}

/// The syntax check of a `200` index document, or its refusal when it
/// came compressed: `Accept-Encoding` is never sent upstream, and a
/// document artifactd cannot read (a gzip bomb among others) is neither
/// rewritten, checked nor kept.
fn document_check(
    app: &App,
    artifact: &Artifact,
    resp: &ResponseHeader,
) -> Result<Option<DocumentCheck>> {
    let Some(document) = artifact.document() else {
        return Ok(None);
    };
    if resp.status != http::StatusCode::OK {
        return Ok(None);
    }
    let text = |name| resp.headers.get(name).and_then(|v| v.to_str().ok());
    let encoding =
        text(http::header::CONTENT_ENCODING).filter(|e| !e.eq_ignore_ascii_case("identity"));
    if let Some(encoding) = encoding {
        let why = format!("sent with Content-Encoding {encoding}, which was not asked for");
        return Err(invalid_document(app, artifact, why));
    }
    Ok(document
        .syntax(text(http::header::CONTENT_TYPE))
        .map(DocumentCheck::new))
}

/// The error of an index document refused: logged, counted, and nothing
/// committed.
fn invalid_document(app: &App, artifact: &Artifact, why: String) -> Box<pingora::Error> {
    let (remote, path) = (&artifact.remote.name, &artifact.key_parts[0]);
    log::warn!("invalid index document: remote '{remote}' {path}: {why}; nothing committed");
    (app.metrics).refused_body(ProblemKind::InvalidDocument, remote, path, why.clone());
    Failure::InvalidDocument.explain(why)
}

/// `response_filter`: headers the client's response carries for the kind,
/// and the firewall's dry-run mark.
pub fn client_response(artifact: &Artifact, resp: &mut ResponseHeader) -> Result<()> {
    if let Some(finding) = &artifact.judged.dry_run {
        resp.insert_header(POLICY_HEADER, finding.dry_run_mark())?;
    }
    if let ArtifactKind::Oci(oci) = &artifact.kind {
        resp.insert_header(oci::API_VERSION.0, oci::API_VERSION.1)?;
        oci::rewrite_link(oci, resp)?;
    }
    Ok(())
}

/// `fail_to_proxy`: the error response in the kind's own terms; `code` 0
/// means nothing is sent.
pub fn error_reply(
    artifact: Option<&Artifact>,
    code: u16,
    reply: Reply,
    upstream_status: Option<u16>,
) -> (u16, Reply) {
    match artifact.map(|a| &a.kind) {
        Some(ArtifactKind::Oci(oci)) => oci::error_for(code, reply, oci.kind, upstream_status),
        _ => (code, reply),
    }
}

/// `upstream_response_body_filter`: each chunk of the upstream's body
/// through the checks the response set up: the checksum an index
/// published (files), the digest (the OCI API).
pub fn upstream_body(
    app: &Arc<App>,
    artifact: &Artifact,
    checks: &mut Checks,
    body: &mut Option<bytes::Bytes>,
    end_of_stream: bool,
) -> Result<()> {
    if let Some(check) = checks.file_check.as_mut() {
        if let Err(mismatch) = check.filter(body, end_of_stream) {
            return Err(files::checksum_mismatch(app, artifact, mismatch));
        }
    }
    if let Some(check) = checks.document_check.as_mut() {
        if let Err(complaint) = check.filter(body, end_of_stream) {
            let why = format!("not well-formed {}: {complaint}", check.syntax().as_str());
            return Err(invalid_document(app, artifact, why));
        }
    }
    let Some(check) = checks.body_check.as_mut() else {
        return Ok(());
    };
    match check.verifier.filter(body, end_of_stream) {
        Ok(None) => Ok(()),
        Ok(Some(verified)) => {
            checks.header_fix = oci::verified(app, artifact, check, verified);
            Ok(())
        }
        Err(mismatch) => Err(oci::digest_mismatch(app, artifact, mismatch)),
    }
}
