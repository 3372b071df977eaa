//! The OCI distribution API on docker remotes: routing a `/v2/` request to
//! its remote and artifact (the parsing is `filters::ecosystem::oci`), the OCI error
//! bodies, and the registry headers of responses.

use super::action::{Action, Decision};
use super::artifact::{Artifact, ArtifactKind, OciArtifact};
use super::verify::{Mismatch, Verified, Verifier};
use crate::app::App;
use crate::config::{Remote, RemoteKind};
use crate::reply::Reply;
use filters::ecosystem::oci::{self, AcceptClass, ErrorCode, Kind, Registry, V2Route};
use filters::ArtifactClass;
use http::{Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::Arc;

/// Every registry API response says which API it speaks.
pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// An OCI error body: `{"errors":[{"code":…,"message":…}]}`.
pub fn error_reply(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Reply {
    let body = serde_json::json!({
        "errors": [{"code": code.as_str(), "message": message.into(), "detail": null}]
    });
    Reply::json(status, &body).header(API_VERSION.0, API_VERSION.1)
}

/// An OCI error with the status the spec pairs with `code`.
fn refuse(code: ErrorCode, message: impl Into<String>) -> Action {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    Action::Reply(error_reply(status, code, message))
}

/// Decides a `/v2…` request: the version check, an artifact of a docker
/// remote, or an OCI error.
pub fn decide(app: &App, req: &RequestHeader, after_v2: &str) -> Decision {
    let plain = |action| Decision {
        action,
        remote: None,
        denied: false,
        firewall: None,
    };
    // Pushing is refused whatever the path, before it is parsed.
    if req.method != Method::GET && req.method != Method::HEAD {
        let reply = error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            "artifactd is a pull-through mirror: pushing is not supported",
        )
        .header("allow", "GET, HEAD");
        return plain(Action::Reply(reply));
    }
    let ns = filters::route::query_param(req.uri.query(), "ns");
    let route = match oci::route(after_v2, ns.as_deref(), |s| {
        app.config().remotes.contains_key(s)
    }) {
        Ok(route) => route,
        Err(e) => return plain(refuse(e.code, e.message)),
    };
    let V2Route::Repository { registry, name, op } = route else {
        return plain(Action::Reply(
            Reply::json(StatusCode::OK, &serde_json::json!({}))
                .header(API_VERSION.0, API_VERSION.1),
        ));
    };
    let remote = match registry_remote(app, registry) {
        Ok(remote) => remote,
        Err(unknown) => return plain(refuse(ErrorCode::NameUnknown, unknown)),
    };
    let (action, denied, firewall) = match repository_action(&remote, req, name, &op) {
        Ok(mut artifact) => match crate::firewall::judge(app, &mut artifact) {
            Err(refused) => (Action::Reply(refused.reply), true, Some(refused.why)),
            Ok(()) => (Action::Proxy(artifact), false, None),
        },
        Err((reply, denied)) => (Action::Reply(reply), denied, None),
    };
    Decision {
        action,
        remote: Some(remote.name.clone()),
        denied,
        firewall,
    }
}

/// The remote a repository route names, by its name or by the registry
/// host it mirrors; `Err` says why there is none.
fn registry_remote(app: &App, registry: Registry<'_>) -> Result<Arc<Remote>, String> {
    let config = app.config();
    let (remote, unknown) = match registry {
        Registry::Remote(remote) => (
            config.remotes.get(remote),
            format!("unknown remote '{remote}'"),
        ),
        Registry::Mirror(host) => (
            config.mirrors.get(&host.to_ascii_lowercase()),
            format!("no remote mirrors registry {host:?} (mirror_of)"),
        ),
    };
    remote.cloned().ok_or(unknown)
}

/// The artifact of a repository request on `remote`, or the OCI error
/// refusing it (with whether the remote's patterns denied it).
fn repository_action(
    remote: &Arc<Remote>,
    req: &RequestHeader,
    name: &str,
    op: &oci::Operation<'_>,
) -> Result<Artifact, (Reply, bool)> {
    if !remote.ecosystem.speaks_registry_api() || remote.kind != RemoteKind::Remote {
        let reply = error_reply(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            format!(
                "remote '{}' is not a docker remote (package: {})",
                remote.name, remote.ecosystem
            ),
        );
        return Err((reply, false));
    }
    let name = if remote.mirrors_docker_hub() {
        oci::docker_hub_name(name).into_owned()
    } else {
        name.to_string()
    };
    let upstream_path = oci::upstream_path(&name, op);
    if !remote
        .policy
        .allows_image(&[&name, first_two_segments(&name), &upstream_path])
    {
        let reply = error_reply(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!(
                "image {name:?} is not allowed by the patterns of remote '{}'",
                remote.name
            ),
        );
        return Err((reply, true));
    }
    Ok(artifact(remote, req, name, op, upstream_path))
}

fn first_two_segments(name: &str) -> &str {
    match name.match_indices('/').nth(1) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

fn artifact(
    remote: &Arc<Remote>,
    req: &RequestHeader,
    name: String,
    op: &oci::Operation<'_>,
    upstream_path: String,
) -> Artifact {
    let kind = op.kind();
    let accept = AcceptClass::from_accept(
        req.headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    // Only tag lists and referrers take query parameters (`n`, `last`,
    // `artifactType`); `ns` is the mirror's, not the upstream's.
    let query = match kind {
        Kind::TagsList | Kind::Referrers => req
            .uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter(|p| !p.starts_with("ns=") && !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    let key_parts = oci::key_parts(&name, op, accept, &query);
    let class = if kind.is_mutable() {
        ArtifactClass::Mutable {
            user_defined: remote.policy.user_mutable(&upstream_path),
        }
    } else {
        ArtifactClass::Immutable
    };
    let raw_path = if query.is_empty() {
        upstream_path
    } else {
        format!("{upstream_path}?{query}")
    };
    Artifact {
        remote: remote.clone(),
        raw_path,
        key_parts,
        class,
        kind: ArtifactKind::Oci(OciArtifact {
            client_base: client_base(req.uri.path()),
            name,
            kind,
            digest: op.content_digest().map(|d| d.text.to_string()),
            accept,
        }),
        judged: Default::default(),
    }
}

/// The client's path without its operation, which is always the last two
/// segments (`manifests/{ref}`, `blobs/{digest}`, `tags/list`,
/// `referrers/{digest}`).
fn client_base(path: &str) -> String {
    let mut base = path;
    for _ in 0..2 {
        base = base.rsplit_once('/').map_or(base, |(head, _)| head);
    }
    base.to_string()
}

/// A manifest or blob that matched its digest: its references are
/// recorded, a manifest fetched by tag is linked to its digest, and the
/// headers the upstream left out are returned, to be stored with it.
pub fn verified(
    app: &Arc<App>,
    artifact: &Artifact,
    check: &BodyCheck,
    verified: Verified,
) -> Option<HeaderFix> {
    record_references(app, artifact, &verified);
    let fix = HeaderFix::of(check, &verified);
    cross_link(app, artifact, check, fix.as_ref(), verified);
    fix
}

/// Points an upstream pagination `Link` (`</v2/{name}/tags/list?…>`) at the
/// client's own path layout; runs after the cache, per client.
pub fn rewrite_link(oci: &OciArtifact, resp: &mut ResponseHeader) -> pingora::Result<()> {
    let Some(link) = resp
        .headers
        .get(http::header::LINK)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let upstream_base = format!("</v2/{}/", oci.name);
    if !link.starts_with(&upstream_base) {
        return Ok(());
    }
    let rewritten = format!("<{}/{}", oci.client_base, &link[upstream_base.len()..]);
    resp.insert_header(http::header::LINK, rewritten)
}

/// The `Accept` header asked of the upstream for an OCI request: the
/// client's manifest types, normalized (so the answer suits the cache key).
pub fn upstream_accept(oci: &OciArtifact) -> String {
    match oci.kind {
        Kind::TagManifest | Kind::DigestManifest => oci.accept.header_value(),
        Kind::Blob => "application/octet-stream".to_string(),
        Kind::TagsList => "application/json".to_string(),
        Kind::Referrers => "application/vnd.oci.image.index.v1+json".to_string(),
    }
}

/// Fills in what a registry response must carry and an upstream may have
/// left out: the digest of a content-addressed object, and an `ETag` from
/// a tag manifest's digest, which is its validator on revalidation.
pub fn complete_upstream_headers(
    oci: &OciArtifact,
    resp: &mut ResponseHeader,
) -> pingora::Result<()> {
    if resp.status == StatusCode::UNAUTHORIZED {
        // artifactd already answered the upstream's challenge with the
        // remote's credentials; a client sent to the upstream's token realm
        // would only come back with a token artifactd does not forward.
        resp.remove_header(&http::header::WWW_AUTHENTICATE);
    }
    if resp.status != StatusCode::OK {
        return Ok(());
    }
    if let Some(digest) = &oci.digest {
        if !resp.headers.contains_key("docker-content-digest") {
            resp.insert_header("docker-content-digest", digest.as_str())?;
        }
    }
    if oci.kind == Kind::TagManifest && !resp.headers.contains_key(http::header::ETAG) {
        let digest = resp
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(|d| format!("\"{d}\""));
        if let Some(etag) = digest {
            resp.insert_header(http::header::ETAG, etag)?;
        }
    }
    Ok(())
}

/// The digest a response body must hash to: the URL's for content-addressed
/// objects, the upstream's `Docker-Content-Digest` for a tag manifest.
pub fn expected_digest(oci: &OciArtifact, resp: &ResponseHeader) -> Option<String> {
    match oci.kind {
        Kind::Blob | Kind::DigestManifest => oci.digest.clone(),
        Kind::TagManifest => resp
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| oci::Digest::parse(d).is_some())
            .map(str::to_string),
        Kind::TagsList | Kind::Referrers => None,
    }
}

/// The check of one upstream body, with what the cross-link needs.
pub struct BodyCheck {
    pub verifier: Verifier,
    /// The manifest's media type, as the upstream labelled it.
    content_type: Option<String>,
    /// Whether the upstream sent `Docker-Content-Digest`.
    digest_sent: bool,
}

/// The digest check for an upstream `200` of a manifest or blob: against
/// its [`expected_digest`], and for a tag manifest also keeping the body
/// for the cross-link.
pub fn body_check(oci: &OciArtifact, resp: &ResponseHeader) -> Option<BodyCheck> {
    if resp.status != StatusCode::OK
        || !matches!(
            oci.kind,
            Kind::Blob | Kind::DigestManifest | Kind::TagManifest
        )
    {
        return None;
    }
    let content_type = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if content_type.as_deref().is_some_and(oci::is_signed_schema1) {
        // A schema 1 digest covers the JWS payload, not the bytes served
        // (its signatures are part of the body): nothing to compare, and
        // no cross-link under a digest the body does not have.
        return None;
    }
    let verifier = Verifier::new(
        expected_digest(oci, resp).as_deref(),
        oci.kind.is_manifest(),
    )?;
    Some(BodyCheck {
        verifier,
        digest_sent: resp.headers.contains_key("docker-content-digest"),
        content_type,
    })
}

/// Headers a manifest must carry that its upstream response lacked,
/// learnt from the complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFix {
    pub content_type: Option<String>,
    pub digest: Option<String>,
    /// Hex sha256 of the body this was learnt from: the fix applies to
    /// that body only.
    pub body_sha256: String,
}

impl HeaderFix {
    /// What the body of a manifest response tells that its headers did
    /// not: the declared media type when the upstream sent no manifest
    /// `Content-Type`, the digest when it sent no `Docker-Content-Digest`.
    pub fn of(check: &BodyCheck, verified: &Verified) -> Option<HeaderFix> {
        let labelled = check
            .content_type
            .as_deref()
            .is_some_and(oci::is_manifest_type);
        let content_type = match (labelled, &verified.body) {
            (false, Some(body)) => declared_media_type(body),
            _ => None,
        };
        let digest = (!check.digest_sent).then(|| verified.digest.clone());
        let body_sha256 = verified.digest.strip_prefix("sha256:")?.to_string();
        (content_type.is_some() || digest.is_some()).then_some(HeaderFix {
            content_type,
            digest,
            body_sha256,
        })
    }

    pub fn apply(&self, header: &mut ResponseHeader) -> pingora::Result<()> {
        if let Some(content_type) = &self.content_type {
            header.insert_header(http::header::CONTENT_TYPE, content_type.as_str())?;
        }
        if let Some(digest) = &self.digest {
            header.insert_header("docker-content-digest", digest.as_str())?;
        }
        Ok(())
    }
}

/// The media type a manifest declares (`mediaType`), or that its shape
/// implies: OCI manifests and indexes may omit the field.
pub fn declared_media_type(body: &[u8]) -> Option<String> {
    let manifest: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(media_type) = manifest.get("mediaType").and_then(|m| m.as_str()) {
        return oci::is_manifest_type(media_type).then(|| media_type.to_string());
    }
    let implied = if manifest.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        "application/vnd.docker.distribution.manifest.v1+json"
    } else if manifest.get("manifests").is_some() {
        "application/vnd.oci.image.index.v1+json"
    } else if manifest.get("layers").is_some() || manifest.get("config").is_some() {
        "application/vnd.oci.image.manifest.v1+json"
    } else {
        return None;
    };
    Some(implied.to_string())
}

/// Counts and logs a body that did not match its digest, and turns it into
/// the upstream error that fails the transfer.
pub fn digest_mismatch(app: &App, artifact: &Artifact, mismatch: Mismatch) -> Box<pingora::Error> {
    let name = artifact
        .oci()
        .as_ref()
        .map(|o| o.name.as_str())
        .unwrap_or("-");
    log::warn!(
        "digest mismatch: remote '{}' image {name}: expected {}, upstream sent {}; nothing committed",
        artifact.remote.name,
        mismatch.expected,
        mismatch.actual
    );
    let detail = format!(
        "expected {}, upstream sent {}",
        mismatch.expected, mismatch.actual
    );
    let (remote, path) = (&artifact.remote.name, &artifact.key_parts[0]);
    (app.metrics).refused_body(
        crate::metrics::recent::ProblemKind::DigestMismatch,
        remote,
        path,
        detail,
    );
    mismatch.into_error(super::failure::Failure::DigestMismatch)
}

/// Seed 000: a tag manifest just fetched is also stored under its digest
/// (if absent), so a later pull by digest is a hit. Runs in the background;
/// the client's response does not wait for it.
/// Records what a verified manifest names, under its own key and, for a
/// tag, under the digest it will be cross-linked to: eviction then keeps
/// those blobs and manifests while it is cached.
pub fn record_references(app: &App, artifact: &Artifact, verified: &Verified) {
    let (Some(oci), Some(body)) = (artifact.oci(), &verified.body) else {
        return;
    };
    if !oci.kind.is_manifest() {
        return;
    }
    let remote = &artifact.remote.name;
    let targets: Vec<_> = oci::manifest_references(body)
        .into_iter()
        .map(|named| match named {
            oci::Named::Blob(digest) => super::cache::key_of(remote, &oci::blob_key_parts(&digest)),
            oci::Named::Manifest(digest) => {
                super::cache::key_of(remote, &oci::digest_manifest_key_parts(&digest))
            }
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    app.storage
        .add_references(&super::cache::key(artifact), &targets);
    if oci.kind == Kind::TagManifest && verified.digest.starts_with("sha256:") {
        let by_digest =
            super::cache::key_of(remote, &oci::digest_manifest_key_parts(&verified.digest));
        app.storage.add_references(&by_digest, &targets);
    }
}

pub fn cross_link(
    app: &App,
    artifact: &Artifact,
    check: &BodyCheck,
    fix: Option<&HeaderFix>,
    verified: Verified,
) {
    let (Some(oci), Some(body)) = (artifact.oci(), verified.body) else {
        return;
    };
    let content_type = fix
        .and_then(|f| f.content_type.as_deref())
        .or(check.content_type.as_deref());
    if oci.kind != Kind::TagManifest || !verified.digest.starts_with("sha256:") {
        return;
    }
    let key = super::cache::key_of(
        &artifact.remote.name,
        &oci::digest_manifest_key_parts(&verified.digest),
    );
    let meta = match manifest_meta(&artifact.remote, &verified.digest, content_type, body.len()) {
        Ok(meta) => meta,
        Err(e) => {
            log::warn!("cross-link of {}: {e}", verified.digest);
            return;
        }
    };
    let storage = app.storage;
    let remote = artifact.remote.name.clone();
    app.background.spawn(async move {
        if let Err(e) = storage.store_if_absent(&key, &meta, body).await {
            log::warn!(
                "remote '{remote}': storing manifest {} by digest: {e}",
                verified.digest
            );
        }
    });
}

fn manifest_meta(
    remote: &Remote,
    digest: &str,
    content_type: Option<&str>,
    len: usize,
) -> pingora::Result<pingora::cache::CacheMeta> {
    let mut header = ResponseHeader::build(StatusCode::OK, Some(4))?;
    header.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    if let Some(content_type) = content_type {
        header.insert_header(http::header::CONTENT_TYPE, content_type)?;
    }
    header.insert_header("docker-content-digest", digest)?;
    header.insert_header(http::header::ETAG, format!("\"{digest}\""))?;
    Ok(super::cache::immutable_meta(remote, header))
}

/// Turns the text error reply of a failed OCI request into an OCI error
/// body with the same headers. An upstream rate limit stays a 429
/// `TOOMANYREQUESTS`, which registry clients back off from.
pub fn error_for(
    code: u16,
    reply: Reply,
    kind: Kind,
    upstream_status: Option<u16>,
) -> (u16, Reply) {
    if code == 0 {
        return (code, reply);
    }
    let code = if upstream_status == Some(429) && code == 503 {
        429
    } else {
        code
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
    let message = String::from_utf8_lossy(&reply.body).trim().to_string();
    let mut oci_reply = error_reply(status, ErrorCode::for_status(code, Some(kind)), message);
    oci_reply.headers.extend(reply.headers);
    (code, oci_reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn tags_list(name: &str, client_base: &str) -> OciArtifact {
        OciArtifact {
            name: name.into(),
            kind: Kind::TagsList,
            digest: None,
            accept: AcceptClass::DEFAULT,
            client_base: client_base.into(),
        }
    }

    #[test]
    fn media_types_declared_or_implied_by_the_body() {
        let declared = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[]}"#;
        assert_eq!(
            declared_media_type(declared).as_deref(),
            Some("application/vnd.docker.distribution.manifest.v2+json")
        );
        let bare_oci = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(declared_media_type(bare_oci).as_deref(), Some(OCI_MANIFEST));
        let bare_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            declared_media_type(bare_index).as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(declared_media_type(br#"{"mediaType":"text/html"}"#), None);
        assert_eq!(declared_media_type(b"not json"), None);
    }

    #[test]
    fn pagination_links_follow_the_client_layout() {
        assert_eq!(client_base("/v2/hub/nginx/tags/list"), "/v2/hub/nginx");
        assert_eq!(client_base("/v2/a/b/manifests/v1"), "/v2/a/b");
        let oci = tags_list("library/nginx", "/v2/hub/nginx");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header(
            "link",
            r#"</v2/library/nginx/tags/list?last=b&n=2>; rel="next""#,
        )
        .unwrap();
        rewrite_link(&oci, &mut resp).unwrap();
        assert_eq!(
            resp.headers["link"],
            r#"</v2/hub/nginx/tags/list?last=b&n=2>; rel="next""#
        );
        // A link elsewhere is left alone.
        let mut other = ResponseHeader::build(200, None).unwrap();
        other
            .insert_header("link", "</elsewhere>; rel=next")
            .unwrap();
        rewrite_link(&oci, &mut other).unwrap();
        assert_eq!(other.headers["link"], "</elsewhere>; rel=next");
    }
}
