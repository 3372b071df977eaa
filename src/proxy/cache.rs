//! Cache policy for artifact requests: the key, the freshness of a response
//! and how a response is labelled for the client.
//!
//! Upstream `Cache-Control` is deliberately not what decides freshness: an
//! artifact cache keeps release assets whose origin says `max-age=300`.
//! Freshness comes from the remote's classification of the path instead.

use super::artifact::Artifact;
use super::failure::Failure;
use crate::storage::room::Unstored;
use crate::storage::CacheStorage;
use filters::ArtifactClass;
use pingora::cache::{CacheKey, CacheMeta, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

/// How long "until flushed" is in practice.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The stale-if-error window stored with an entry: effectively unbounded,
/// because the remote's `stale_if_error` period is applied when serving
/// (`should_serve_stale`), so a changed period applies to entries already
/// cached.
const STALE_IF_ERROR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The cache key: remote and the artifact's key parts (decoded path first),
/// length-prefixed. The remote name is also the user tag, which the storage
/// uses to group entries by remote.
pub fn key(artifact: &Artifact) -> CacheKey {
    key_of(&artifact.remote.name, &artifact.key_parts)
}

/// The cache key of `parts` of `remote` (see [`key`]), its hash computed
/// once: pingora-cache hashes a key again each time it asks for it.
pub fn key_of(remote: &str, parts: &[String]) -> CacheKey {
    let primary = primary_of(remote, parts);
    let hash = primary_hash(primary.as_bytes());
    let mut key = CacheKey::new(primary, remote.to_string());
    key.set_primary_bin_override(hash);
    key
}

/// The entry id of `artifact`: what [`key`]'s hash names, without the key.
pub fn id(artifact: &Artifact) -> u128 {
    let primary = primary_of(&artifact.remote.name, &artifact.key_parts);
    u128::from_be_bytes(primary_hash(primary.as_bytes()))
}

fn primary_of(remote: &str, parts: &[String]) -> String {
    let mut all: Vec<&str> = Vec::with_capacity(parts.len() + 1);
    all.push(remote);
    all.extend(parts.iter().map(String::as_str));
    filters::cache_key::encode(&all)
}

/// pingora-cache's hash of a primary key (blake2b of 128 bits), computed
/// with the CPU's vector instructions: the portable blake2 that
/// pingora-cache uses cost a tenth of a hit the decision memo missed
/// (1,900 instructions, against 800 here).
fn primary_hash(primary: &[u8]) -> [u8; 16] {
    let hash = blake2b_simd::Params::new().hash_length(16).hash(primary);
    let mut out = [0; 16];
    out.copy_from_slice(hash.as_bytes());
    out
}

/// How long a fresh response of this artifact may be served without asking.
pub fn fresh_for(artifact: &Artifact) -> Duration {
    match artifact.class {
        ArtifactClass::Immutable => artifact.remote.immutable_ttl.unwrap_or(FOREVER),
        ArtifactClass::Mutable { .. } => artifact.remote.mutable_ttl,
    }
}

/// What is stored: complete `200 OK` responses, for their class's TTL, and
/// a 404 for a mutable path for the negative TTL (so a storm of requests for
/// a missing index costs one upstream request; an immutable path is not
/// remembered as missing, since it may be published any moment). Errors,
/// redirects and partial content pass through.
pub fn cacheability(
    artifact: &Artifact,
    resp: &ResponseHeader,
    default_negative_ttl: Duration,
) -> RespCacheable {
    let (fresh, stale_if_error) = match (resp.status, artifact.class) {
        (http::StatusCode::OK, _) => (fresh_for(artifact), STALE_IF_ERROR),
        (http::StatusCode::NOT_FOUND, ArtifactClass::Mutable { .. }) => {
            let ttl = artifact.remote.negative_ttl.unwrap_or(default_negative_ttl);
            if ttl.is_zero() {
                return RespCacheable::Uncacheable(NoCacheReason::Custom("negative caching off"));
            }
            // A remembered 404 is never served in place of an upstream error.
            (ttl, Duration::ZERO)
        }
        _ => return RespCacheable::Uncacheable(NoCacheReason::Custom("status not cached")),
    };
    let mut header = resp.clone();
    header.remove_header(&http::header::SET_COOKIE);
    RespCacheable::Cacheable(meta(fresh, stale_if_error, header))
}

/// A cacheable response the storage has no room for passes through
/// uncached ([`crate::storage::room`]), counted and logged there.
pub fn within_room(
    storage: &CacheStorage,
    cacheable: RespCacheable,
    resp: &ResponseHeader,
    artifact: &Artifact,
) -> RespCacheable {
    if !matches!(cacheable, RespCacheable::Cacheable(_)) {
        return cacheable;
    }
    let length = (resp.headers.get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    if storage.has_room(length) {
        return cacheable;
    }
    storage.room.unstored(Unstored::NoRoom, || {
        format!(
            "{length} bytes of {}/{}, {} bytes free",
            artifact.remote.name,
            artifact.raw_path,
            storage.bodies().free_bytes().unwrap_or(0)
        )
    });
    RespCacheable::Uncacheable(NoCacheReason::Custom("no room in storage"))
}

fn meta(fresh: Duration, stale_if_error: Duration, header: ResponseHeader) -> CacheMeta {
    let now = SystemTime::now();
    CacheMeta::new(now + fresh, now, 0, stale_if_error.as_secs() as u32, header)
}

/// The meta of an immutable artifact of `remote` stored by artifactd
/// itself (a manifest cross-linked under its digest).
pub fn immutable_meta(remote: &crate::config::Remote, header: ResponseHeader) -> CacheMeta {
    meta(
        remote.immutable_ttl.unwrap_or(FOREVER),
        STALE_IF_ERROR,
        header,
    )
}

/// How long past expiry a cached copy of `artifact` may stand in for a
/// failing upstream: the remote's `cache.stale_if_error`, else the server's.
pub fn stale_period(artifact: &Artifact, server: &crate::config::ServerConfig) -> Duration {
    artifact
        .remote
        .stale_if_error
        .unwrap_or(server.stale_if_error)
}

/// Whether a copy whose freshness is `meta` may still stand in for the
/// upstream now: within the remote's stale period past its expiry.
pub fn within_stale_period(
    artifact: &Artifact,
    server: &crate::config::ServerConfig,
    meta: &CacheMeta,
) -> bool {
    let period = stale_period(artifact, server);
    let verdict = filters::stale::decide(meta.fresh_until(), SystemTime::now(), period);
    matches!(verdict, filters::stale::Stale::Serve { .. })
}

/// Whether an expired copy is revalidated with `If-None-Match` /
/// `If-Modified-Since` (seeds 000/003): only for a remote with
/// `check_mutable_updates: true`, and only for its own `mutable_patterns`;
/// otherwise the file is fetched again in full. An immutable artifact with an
/// `immutable_ttl` is always revalidated conditionally: it cannot change.
///
/// Registry tag manifests are always revalidated: their digest is the
/// validator, and an unchanged tag costs no manifest download (nor, on
/// rate-limited registries, a counted pull).
pub fn revalidates_conditionally(artifact: &Artifact) -> bool {
    if artifact.oci().is_some() {
        return true;
    }
    match artifact.class {
        ArtifactClass::Immutable => true,
        ArtifactClass::Mutable { user_defined } => {
            user_defined && artifact.remote.check_mutable_updates
        }
    }
}

/// The `X-Artifact-Stale` reason for an error that allows serving stale,
/// or `None` if it is not an upstream failure (a policy refusal, a client
/// gone, artifactd's own error).
pub fn upstream_failure(error: &pingora::Error) -> Option<String> {
    if error.esource() != &pingora::ErrorSource::Upstream {
        return None;
    }
    let failure = Failure::of(error);
    Some(match error.etype() {
        pingora::ErrorType::HTTPStatus(code) => format!("upstream status {code}"),
        _ if failure == Some(Failure::RemoteDown) => "remote marked down".into(),
        _ if failure == Some(Failure::SnapshotPending) => Failure::SnapshotPending.text().into(),
        pingora::ErrorType::ConnectNoRoute => "upstream unresolvable or unroutable".into(),
        pingora::ErrorType::ConnectRefused => "upstream refused the connection".into(),
        pingora::ErrorType::ConnectTimedout => "upstream connect timeout".into(),
        pingora::ErrorType::ReadTimedout | pingora::ErrorType::WriteTimedout => {
            "upstream timeout".into()
        }
        pingora::ErrorType::TLSHandshakeFailure | pingora::ErrorType::InvalidCert => {
            "upstream TLS failure".into()
        }
        other => format!("upstream error {}", other.as_str()),
    })
}

/// Turns the upstream request of a cache fill into a plain GET of the
/// whole object: a HEAD or a `Range` miss is answered from the fill as it
/// streams into storage (pingora serves the client's part from the fill's
/// reader), and the object is cached whole for every later request.
pub fn request_whole_object(upstream_request: &mut RequestHeader) {
    if upstream_request.method == http::Method::HEAD {
        upstream_request.set_method(http::Method::GET);
    }
    upstream_request.remove_header(&http::header::RANGE);
    upstream_request.remove_header(&http::header::IF_RANGE);
}

/// Whether this response answers a HEAD or a range from the fill the
/// request leads. The request's task lives until the fill completes, so
/// the client is told to close: a next request on the same connection
/// would otherwise wait for the whole object.
pub fn leads_fill_partially(req: &RequestHeader, phase: CachePhase) -> bool {
    matches!(phase, CachePhase::Miss | CachePhase::Expired)
        && (req.method == http::Method::HEAD || req.headers.contains_key(http::header::RANGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::key::{hash_key, CacheHashKey};

    #[test]
    fn the_hash_is_pingora_caches_own() {
        let mut primary = String::new();
        // Empty, one block, past one block, and blocks' edges.
        for len in [0, 1, 15, 16, 100, 127, 128, 129, 255, 256, 1000] {
            primary.clear();
            primary.extend((0..len).map(|i| char::from(b'a' + (i % 26) as u8)));
            assert_eq!(
                primary_hash(primary.as_bytes()),
                hash_key(&primary),
                "{len}"
            );
        }
    }

    #[test]
    fn a_key_names_its_entry_as_pingora_would() {
        let parts = ["pkg/a-1.0.tgz".to_string(), "json".to_string()];
        let key = key_of("npm", &parts);
        let unhashed = CacheKey::new(primary_of("npm", &parts), "npm");
        assert_eq!(key.primary_bin(), unhashed.primary_bin());
        assert_eq!(key.primary_key(), unhashed.primary_key());
        assert_eq!(key.user_tag(), "npm");
    }
}
