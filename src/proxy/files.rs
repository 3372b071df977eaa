//! Package files checked against the checksum their index published
//! ([`crate::checksums`]) while they stream from the upstream: a PyPI
//! file against the `sha256` of the simple page that listed it, an npm
//! tarball against its document's `dist.integrity` (or `dist.shasum`), a
//! Helm chart against the `digest` of its `index.yaml` entry, RPM repodata
//! against `repomd.xml` and packages against `primary.xml`
//! ([`super::snapshots`] records those, and gates `repomd.xml` itself).
//!
//! The check holds back the last chunk ([`super::verify`]), so a file that
//! does not match never completes for the client and is never committed.

use super::artifact::{Artifact, ArtifactKind};
use super::verify::{Mismatch, Verifier};
use crate::app::App;
use pingora::http::ResponseHeader;
use std::sync::Arc;

/// The check of an upstream `200` for a package file whose index
/// published a checksum (`None` when nothing is known about it), or for a
/// `repomd.xml`, the snapshot gate; `can_keep_previous` says an expired
/// copy may still be served instead.
pub async fn check(
    app: &Arc<App>,
    artifact: &Artifact,
    resp: &ResponseHeader,
    can_keep_previous: bool,
) -> pingora::Result<Option<Verifier>> {
    if resp.status != http::StatusCode::OK || !artifact.remote.ecosystem.verifies_files() {
        return Ok(None);
    }
    match &artifact.kind {
        ArtifactKind::Document(document) if document.is_snapshot() => {
            return app.snapshots.gate(artifact, can_keep_previous).await;
        }
        ArtifactKind::Document(_) | ArtifactKind::Oci(_) => return Ok(None),
        ArtifactKind::File => {}
    }
    let path = &artifact.key_parts[0];
    let expected = app.checksums.expected(&artifact.remote.name, path).await;
    Ok(expected.and_then(|digest| Verifier::new(Some(&digest), false)))
}

/// Labels a successful upstream response for a file or document the way
/// the reference did (seed 003): a media type from the path when the
/// upstream sent none or only `application/octet-stream`, and, for a file
/// (not an index document), `Content-Disposition: attachment` naming it
/// unless the upstream named it already. Done before the response is
/// stored, so hits carry the same header.
pub fn label(artifact: &Artifact, resp: &mut ResponseHeader) -> pingora::Result<()> {
    if !resp.status.is_success() {
        return Ok(());
    }
    let path = &artifact.key_parts[0];
    let sent = resp.headers.get(http::header::CONTENT_TYPE);
    if let Some(media_type) = filters::media_type::relabel(sent.and_then(|v| v.to_str().ok()), path)
    {
        resp.insert_header(http::header::CONTENT_TYPE, media_type)?;
    }
    let is_file = matches!(artifact.kind, ArtifactKind::File);
    if is_file && !resp.headers.contains_key(http::header::CONTENT_DISPOSITION) {
        if let Some(disposition) = filters::media_type::attachment(path) {
            resp.insert_header(http::header::CONTENT_DISPOSITION, disposition)?;
        }
    }
    Ok(())
}

/// The error of a file that did not match its published checksum: logged,
/// counted, and nothing committed.
pub fn checksum_mismatch(
    app: &App,
    artifact: &Artifact,
    mismatch: Mismatch,
) -> Box<pingora::Error> {
    log::warn!(
        "checksum mismatch: remote '{}' file {}: its index published {}, upstream sent {}; nothing committed",
        artifact.remote.name,
        artifact.key_parts[0],
        mismatch.expected,
        mismatch.actual
    );
    let detail = format!(
        "index published {}, upstream sent {}",
        mismatch.expected, mismatch.actual
    );
    let (remote, path) = (&artifact.remote.name, &artifact.key_parts[0]);
    (app.metrics).refused_body(
        crate::metrics::recent::ProblemKind::ChecksumMismatch,
        remote,
        path,
        detail,
    );
    mismatch.into_error(super::failure::Failure::ChecksumMismatch)
}
