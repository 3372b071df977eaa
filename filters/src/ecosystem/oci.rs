//! The OCI distribution API as a pull-through mirror sees it: which remote
//! and repository a `/v2/…` path names, what it asks for (manifest by tag
//! or digest, blob, tag list, referrers), how that is cached (class and key
//! parts) and which manifest media types a client's `Accept` admits.
//!
//! Three front-ends reach a docker remote (docs/formats.md, "Container images"):
//! - `/v2/{remote}/{name}/…`: the remote named in the path (RKE2 `rewrite`,
//!   containerd `override_path`);
//! - `/v2/{name}/…?ns={registry host}`: a containerd `hosts.toml` mirror;
//!   the remote whose `mirror_of` lists that host;
//! - `/v2/{name}/…` without `ns`: a dockerd `registry-mirrors` entry, which
//!   only ever mirrors Docker Hub.
//!
//! A remote name in the first segment always wins over a mirror mapping.
//! Nothing here does I/O; `src/` resolves a mirror host to its remote.

use std::fmt;

/// Built-in mutable patterns: tags move; digests do not. Look-ahead, so
/// it uses the fallback engine.
pub const MUTABLE_PATTERNS: &[&str] = &[r"/manifests/(?!sha256:)[^/]+$", r"/tags/list$"];

/// The registry host a plain `dockerd` mirror stands in for.
pub const DOCKER_HUB: &str = "docker.io";

/// Which remote a `/v2/` request is for, before names are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry<'a> {
    /// The first path segment named this remote.
    Remote(&'a str),
    /// A mirror request for this registry host (`ns`, or Docker Hub).
    Mirror(&'a str),
}

/// A parsed `/v2/` request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Route<'a> {
    /// `GET /v2/`: the API version check.
    Ping,
    /// A repository operation.
    Repository {
        registry: Registry<'a>,
        /// Repository name as the client wrote it (before `library/`).
        name: &'a str,
        op: Operation<'a>,
    },
}

/// What a repository request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    Manifest(Reference<'a>),
    Blob(Digest<'a>),
    /// `tags/list`; `n` and `last` travel in the query string.
    TagsList,
    /// OCI 1.1 referrers of a manifest digest.
    Referrers(Digest<'a>),
}

/// What kind of object an [`Operation`] asks for, without its borrowed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TagManifest,
    DigestManifest,
    Blob,
    TagsList,
    Referrers,
}

impl Kind {
    /// Whether the answer changes in place upstream (tags, tag lists,
    /// referrers) or is content-addressed (digests).
    pub fn is_mutable(self) -> bool {
        matches!(self, Kind::TagManifest | Kind::TagsList | Kind::Referrers)
    }

    /// Whether the body is a manifest (served with its media type).
    pub fn is_manifest(self) -> bool {
        matches!(self, Kind::TagManifest | Kind::DigestManifest)
    }
}

impl Operation<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Operation::Manifest(Reference::Tag(_)) => Kind::TagManifest,
            Operation::Manifest(Reference::Digest(_)) => Kind::DigestManifest,
            Operation::Blob(_) => Kind::Blob,
            Operation::TagsList => Kind::TagsList,
            Operation::Referrers(_) => Kind::Referrers,
        }
    }

    /// The digest the body must hash to, for content-addressed objects.
    pub fn content_digest(&self) -> Option<Digest<'_>> {
        match self {
            Operation::Manifest(Reference::Digest(d)) | Operation::Blob(d) => Some(*d),
            _ => None,
        }
    }
}

/// A manifest reference: a tag (moves) or a digest (does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    Tag(&'a str),
    Digest(Digest<'a>),
}

/// Hash algorithms a digest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// A validated content digest, `algorithm:hex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest<'a> {
    pub algorithm: Algorithm,
    /// Lower-case hex of the expected hash.
    pub hex: &'a str,
    /// The whole digest as written (`sha256:…`).
    pub text: &'a str,
}

impl<'a> Digest<'a> {
    /// Parses `sha256:<64 hex>` or `sha512:<128 hex>` (lower case only, as
    /// the OCI spec registers them).
    pub fn parse(text: &'a str) -> Option<Digest<'a>> {
        let (algorithm, hex) = text.split_once(':')?;
        let (algorithm, len) = match algorithm {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return None,
        };
        let valid = hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then_some(Digest {
            algorithm,
            hex,
            text,
        })
    }
}

impl fmt::Display for Digest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

/// Why a `/v2/` path was refused, with the OCI error code to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> RouteError {
    RouteError {
        code,
        message: message.into(),
    }
}

/// Parses the part of a path after `/v2` (`""`, `"/"` or `"/{…}"`).
///
/// `ns` is the `ns` query parameter; `is_remote` says whether a first
/// segment names a configured remote.
///
/// ```
/// use filters::ecosystem::oci::{route, Operation, Reference, Registry, V2Route};
/// let r = route("/hub/library/nginx/manifests/1.27", None, |s| s == "hub").unwrap();
/// assert_eq!(r, V2Route::Repository {
///     registry: Registry::Remote("hub"),
///     name: "library/nginx",
///     op: Operation::Manifest(Reference::Tag("1.27")),
/// });
/// ```
pub fn route<'a>(
    after_v2: &'a str,
    ns: Option<&'a str>,
    is_remote: impl Fn(&str) -> bool,
) -> Result<V2Route<'a>, RouteError> {
    let rest = match after_v2 {
        "" | "/" => return Ok(V2Route::Ping),
        rest => rest
            .strip_prefix('/')
            .ok_or_else(|| refuse(ErrorCode::NameUnknown, "not a registry API path"))?,
    };
    let (first, after_first) = rest
        .split_once('/')
        .ok_or_else(|| refuse(ErrorCode::NameUnknown, "no repository operation in path"))?;
    let (registry, repository_path) = if is_remote(first) {
        (Registry::Remote(first), after_first)
    } else {
        (Registry::Mirror(ns.unwrap_or(DOCKER_HUB)), rest)
    };
    let (name, op) = split_operation(repository_path)?;
    Ok(V2Route::Repository { registry, name, op })
}

/// Splits `{name}/{manifests|blobs|tags|referrers}/…` at its operation:
/// the name has any number of segments and ends at the last segment that
/// starts a well-formed operation.
fn split_operation(path: &str) -> Result<(&str, Operation<'_>), RouteError> {
    let segments: Vec<&str> = path.split('/').collect();
    let n = segments.len();
    let (name_len, op) = match segments.as_slice() {
        [.., "tags", "list"] if n > 2 => (n - 2, Operation::TagsList),
        [.., "manifests", reference] if n > 2 => {
            let reference = if reference.contains(':') {
                let digest = Digest::parse(reference).ok_or_else(|| {
                    refuse(
                        ErrorCode::ManifestUnknown,
                        format!("invalid digest {reference:?}"),
                    )
                })?;
                Reference::Digest(digest)
            } else if valid_tag(reference) {
                Reference::Tag(reference)
            } else {
                return Err(refuse(
                    ErrorCode::ManifestUnknown,
                    format!("invalid tag {reference:?}"),
                ));
            };
            (n - 2, Operation::Manifest(reference))
        }
        [.., "blobs", digest] if n > 2 => {
            let digest = Digest::parse(digest).ok_or_else(|| {
                refuse(ErrorCode::BlobUnknown, format!("invalid digest {digest:?}"))
            })?;
            (n - 2, Operation::Blob(digest))
        }
        [.., "referrers", digest] if n > 2 => {
            let digest = Digest::parse(digest).ok_or_else(|| {
                refuse(
                    ErrorCode::ManifestUnknown,
                    format!("invalid digest {digest:?}"),
                )
            })?;
            (n - 2, Operation::Referrers(digest))
        }
        _ => {
            return Err(refuse(
                ErrorCode::NameUnknown,
                "no repository operation (manifests, blobs, tags/list, referrers) in path",
            ))
        }
    };
    let name_bytes = segments[..name_len]
        .iter()
        .map(|s| s.len() + 1)
        .sum::<usize>()
        - 1;
    let name = &path[..name_bytes];
    if !valid_name(name) {
        return Err(refuse(
            ErrorCode::NameInvalid,
            format!("invalid repository name {name:?}"),
        ));
    }
    Ok((name, op))
}

/// The distribution spec's repository name grammar: `/`-separated
/// components of lower-case letters and digits joined by `.`, `_`, `__`
/// or runs of `-`; at most 255 bytes.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 255 && !name.is_empty() && name.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-".
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Docker Hub's official images live under `library/`: `nginx` is
/// `library/nginx` there.
pub fn docker_hub_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('/') {
        name.into()
    } else {
        format!("library/{name}").into()
    }
}

/// The path of the operation under `/v2/` upstream, without query.
pub fn upstream_path(name: &str, op: &Operation<'_>) -> String {
    match op {
        Operation::Manifest(Reference::Tag(tag)) => format!("{name}/manifests/{tag}"),
        Operation::Manifest(Reference::Digest(d)) => format!("{name}/manifests/{d}"),
        Operation::Blob(d) => format!("{name}/blobs/{d}"),
        Operation::TagsList => format!("{name}/tags/list"),
        Operation::Referrers(d) => format!("{name}/referrers/{d}"),
    }
}

/// The cache key parts after the remote: the first is the path the
/// catalog lists, the rest tell variants apart.
///
/// Content-addressed objects are keyed by digest alone, so a layer shared
/// by many images of a remote is fetched and stored once (seed 001). A tag
/// manifest is keyed per [`AcceptClass`]: the registry answers one tag with
/// different manifests for different `Accept` headers. Tag lists and
/// referrers keep their query (`n`, `last`, `artifactType`).
pub fn key_parts(name: &str, op: &Operation<'_>, accept: AcceptClass, query: &str) -> Vec<String> {
    match op {
        Operation::Blob(d) => blob_key_parts(&d.to_string()),
        Operation::Manifest(Reference::Digest(d)) => digest_manifest_key_parts(&d.to_string()),
        Operation::Manifest(Reference::Tag(_)) => {
            vec![upstream_path(name, op), accept.key_part()]
        }
        Operation::TagsList | Operation::Referrers(_) => {
            vec![upstream_path(name, op), query.to_string()]
        }
    }
}

/// The key parts of a blob, by digest: one entry per remote, whatever
/// repository it was pulled through.
pub fn blob_key_parts(digest: &str) -> Vec<String> {
    vec![format!("blobs/{digest}")]
}

/// The key parts of a manifest fetched by digest.
pub fn digest_manifest_key_parts(digest: &str) -> Vec<String> {
    vec![format!("manifests/{digest}")]
}

/// Manifest types a registry may answer, indexes first: what a client
/// that takes any manifest asks for.
pub const ANY_MANIFEST: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Where the signatures and attestations of the manifest `digest` are
/// found, below its repository: cosign's tags (`sha256-<hex>.sig`,
/// `.att`), the OCI 1.1 referrers API, and the referrers tag a registry
/// without that API holds (`sha256-<hex>`, an index of them).
///
/// ```
/// let at = filters::ecosystem::oci::signature_paths("sha256:ab12");
/// assert_eq!(at[0], "manifests/sha256-ab12.sig");
/// assert_eq!(at[3], "referrers/sha256:ab12");
/// ```
pub fn signature_paths(digest: &str) -> Vec<String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Vec::new();
    };
    let tag = format!("{algorithm}-{hex}");
    vec![
        format!("manifests/{tag}.sig"),
        format!("manifests/{tag}.att"),
        format!("manifests/{tag}"),
        format!("referrers/{digest}"),
    ]
}

/// Content a manifest names by digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Named {
    /// A config or layer blob (`blobs/{digest}`).
    Blob(String),
    /// A manifest of an index (`manifests/{digest}`).
    Manifest(String),
}

/// The digests a manifest names: config, layers and blobs of an image
/// manifest (and the layers of a schema 1 one), or the manifests of an
/// index. Malformed documents and digests name nothing.
pub fn manifest_references(body: &[u8]) -> Vec<Named> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let digest_of = |v: &serde_json::Value, field: &str| {
        v.get(field)
            .and_then(|d| d.as_str())
            .filter(|d| Digest::parse(d).is_some())
            .map(str::to_string)
    };
    let list = |field: &str| {
        doc.get(field)
            .and_then(|v| v.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let mut named = Vec::new();
    named.extend(
        doc.get("config")
            .and_then(|c| digest_of(c, "digest"))
            .map(Named::Blob),
    );
    for field in ["layers", "blobs"] {
        named.extend(
            list(field)
                .iter()
                .filter_map(|l| digest_of(l, "digest"))
                .map(Named::Blob),
        );
    }
    named.extend(
        list("fsLayers")
            .iter()
            .filter_map(|l| digest_of(l, "blobSum"))
            .map(Named::Blob),
    );
    named.extend(
        list("manifests")
            .iter()
            .filter_map(|m| digest_of(m, "digest"))
            .map(Named::Manifest),
    );
    named.sort();
    named.dedup();
    named
}

/// Whether a `Content-Type` names a manifest media type (parameters
/// ignored): a registry that sends anything else has not labelled it.
pub fn is_manifest_type(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    MANIFEST_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(media_type))
}

/// Whether a manifest media type is the legacy signed schema 1, whose
/// digest is that of its JWS payload rather than of the bytes served.
pub fn is_signed_schema1(media_type: &str) -> bool {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case(MANIFEST_TYPES[4])
}

/// Manifest media types a registry may answer with.
pub const MANIFEST_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
];

/// The set of manifest media types a client accepts, as bits over
/// [`MANIFEST_TYPES`]: the normalized form of its `Accept` header, which
/// keys tag manifests and is what artifactd asks the upstream for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcceptClass(u8);

impl AcceptClass {
    /// Seed 001's list, for clients that name no manifest type (or `*/*`):
    /// both Docker v2 forms and both OCI forms, never the legacy schema 1.
    pub const DEFAULT: AcceptClass = AcceptClass(0b1111);

    /// Reads every `Accept` header value of a request. Parameters are
    /// ignored except `q=0`, which refuses a type.
    pub fn from_accept<'h>(values: impl IntoIterator<Item = &'h str>) -> AcceptClass {
        let mut bits = 0u8;
        for item in values.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = item.split(';');
            let media_type = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if let Some(i) = MANIFEST_TYPES
                .iter()
                .position(|t| t.eq_ignore_ascii_case(media_type))
            {
                bits |= 1 << i;
            }
        }
        if bits == 0 {
            AcceptClass::DEFAULT
        } else {
            AcceptClass(bits)
        }
    }

    /// The media types of this class, in [`MANIFEST_TYPES`] order.
    pub fn media_types(self) -> impl Iterator<Item = &'static str> {
        MANIFEST_TYPES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, t)| *t)
    }

    /// The `Accept` header sent upstream for this class.
    pub fn header_value(self) -> String {
        self.media_types().collect::<Vec<_>>().join(", ")
    }

    /// A stable short form for cache keys.
    pub fn key_part(self) -> String {
        format!("accept:{:02x}", self.0)
    }

    /// Whether a manifest of `media_type` may be served to this class.
    pub fn admits(self, media_type: &str) -> bool {
        self.media_types()
            .any(|t| t.eq_ignore_ascii_case(media_type.split(';').next().unwrap_or("").trim()))
    }
}

/// Error codes of the distribution spec that artifactd answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NameUnknown,
    NameInvalid,
    ManifestUnknown,
    BlobUnknown,
    Denied,
    Unsupported,
    TooManyRequests,
    Unauthorized,
    /// The upstream failed and no cached copy could stand in.
    Unavailable,
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec pairs with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::NameUnknown | ErrorCode::ManifestUnknown | ErrorCode::BlobUnknown => 404,
            ErrorCode::NameInvalid => 400,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Unavailable => 503,
            ErrorCode::Unknown => 500,
        }
    }

    /// The code for an HTTP status artifactd answers by itself.
    pub fn for_status(status: u16, kind: Option<Kind>) -> ErrorCode {
        match status {
            400 => ErrorCode::NameInvalid,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Denied,
            404 => match kind {
                Some(Kind::Blob) => ErrorCode::BlobUnknown,
                Some(Kind::TagManifest | Kind::DigestManifest | Kind::Referrers) => {
                    ErrorCode::ManifestUnknown
                }
                _ => ErrorCode::NameUnknown,
            },
            405 => ErrorCode::Unsupported,
            429 => ErrorCode::TooManyRequests,
            502..=504 => ErrorCode::Unavailable,
            _ => ErrorCode::Unknown,
        }
    }
}

/// The parts of a `WWW-Authenticate: Bearer …` challenge a token request
/// needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses a `Bearer` challenge (`realm` is required); `None` for any other
/// scheme or a malformed header.
///
/// ```
/// let c = filters::ecosystem::oci::parse_bearer_challenge(
///     r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull""#,
/// ).unwrap();
/// assert_eq!(c.realm, "https://auth.example/token");
/// assert_eq!(c.scope.as_deref(), Some("repository:a/b:pull"));
/// ```
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
        rest = remaining.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(BearerChallenge {
        realm: realm.filter(|r| !r.is_empty())?,
        service,
        scope,
    })
}

/// The pull scope of a repository, as token servers expect it.
pub fn pull_scope(name: &str) -> String {
    format!("repository:{name}:pull")
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifests_name_their_config_layers_and_child_manifests() {
        use super::{manifest_references, Named};
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{a}","size":1}},
               "layers":[{{"digest":"{b}"}},{{"digest":"{a}"}},{{"digest":"nonsense"}}]}}"#
        );
        assert_eq!(
            manifest_references(image.as_bytes()),
            [Named::Blob(a.clone()), Named::Blob(b.clone())]
        );
        let index = format!(r#"{{"manifests":[{{"digest":"{b}","platform":{{}}}}]}}"#);
        assert_eq!(manifest_references(index.as_bytes()), [Named::Manifest(b)]);
        assert!(manifest_references(b"not json").is_empty());
        assert!(manifest_references(b"[1,2]").is_empty());
    }

    use super::*;

    const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn remote(s: &str) -> bool {
        s == "hub" || s == "ghcr"
    }

    fn repo<'a>(route: V2Route<'a>) -> (Registry<'a>, &'a str, Operation<'a>) {
        match route {
            V2Route::Repository { registry, name, op } => (registry, name, op),
            V2Route::Ping => panic!("ping"),
        }
    }

    #[test]
    fn ping() {
        assert_eq!(route("", None, remote).unwrap(), V2Route::Ping);
        assert_eq!(route("/", None, remote).unwrap(), V2Route::Ping);
    }

    #[test]
    fn remote_prefixed_paths_with_deep_names() {
        let path = format!("/hub/a/b/c/blobs/{D}");
        let (registry, name, op) = repo(route(&path, None, remote).unwrap());
        assert_eq!(registry, Registry::Remote("hub"));
        assert_eq!(name, "a/b/c");
        assert_eq!(op, Operation::Blob(Digest::parse(D).unwrap()));
        let (_, name, op) = repo(route("/ghcr/org/app/tags/list", Some("x"), remote).unwrap());
        assert_eq!((name, op), ("org/app", Operation::TagsList));
        let path = format!("/hub/x/referrers/{D}");
        let (_, name, op) = repo(route(&path, None, remote).unwrap());
        assert_eq!(name, "x");
        assert!(matches!(op, Operation::Referrers(_)));
    }

    #[test]
    fn names_may_contain_operation_words() {
        let (_, name, op) = repo(route("/hub/tools/manifests/manifests/v1", None, remote).unwrap());
        assert_eq!(name, "tools/manifests");
        assert_eq!(op, Operation::Manifest(Reference::Tag("v1")));
        let (_, name, _) = repo(route("/hub/blobs/tags/list", None, remote).unwrap());
        assert_eq!(name, "blobs");
    }

    #[test]
    fn mirror_paths_use_ns_or_docker_hub() {
        let (registry, name, _) =
            repo(route("/library/nginx/manifests/1", Some("docker.io"), remote).unwrap());
        assert_eq!(
            (registry, name),
            (Registry::Mirror("docker.io"), "library/nginx")
        );
        let (registry, name, _) = repo(route("/nginx/manifests/1", None, remote).unwrap());
        assert_eq!((registry, name), (Registry::Mirror(DOCKER_HUB), "nginx"));
        // A remote name wins over the mirror mapping, ns or not.
        let (registry, name, _) =
            repo(route("/hub/nginx/manifests/1", Some("quay.io"), remote).unwrap());
        assert_eq!((registry, name), (Registry::Remote("hub"), "nginx"));
    }

    #[test]
    fn bad_paths_get_their_oci_code() {
        let code = |p: &str| route(p, None, remote).unwrap_err().code;
        assert_eq!(
            code("/hub/x/manifests/sha256:zz"),
            ErrorCode::ManifestUnknown
        );
        assert_eq!(code("/hub/x/manifests/-bad"), ErrorCode::ManifestUnknown);
        assert_eq!(code("/hub/x/blobs/md5:abcd"), ErrorCode::BlobUnknown);
        assert_eq!(code("/hub/Upper/manifests/v1"), ErrorCode::NameInvalid);
        assert_eq!(code("/hub/a//b/manifests/v1"), ErrorCode::NameInvalid);
        assert_eq!(code("/hub/../manifests/v1"), ErrorCode::NameInvalid);
        assert_eq!(code("/hub/x/unknown/v1"), ErrorCode::NameUnknown);
        assert_eq!(code("/hub"), ErrorCode::NameUnknown);
        assert_eq!(code("/hub/manifests/v1"), ErrorCode::NameUnknown);
        assert_eq!(code("x"), ErrorCode::NameUnknown);
    }

    #[test]
    fn name_grammar() {
        for ok in ["a", "library/nginx", "a.b_c__d---e/f0", "x/y/z"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a_", "-a", "a..b", "a___b", "a/", "/a", "a//b", "a b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(256)));
    }

    #[test]
    fn tags_and_digests() {
        assert!(valid_tag("v1.2.3-rc_1"));
        assert!(valid_tag("_x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(Digest::parse(D).is_some());
        assert!(Digest::parse(&D.to_uppercase()).is_none());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(128))).is_some());
        assert!(Digest::parse("sha256:abc").is_none());
    }

    #[test]
    fn classes_and_keys() {
        let digest = Digest::parse(D).unwrap();
        let mutable = |op: Operation<'_>| op.kind().is_mutable();
        assert!(mutable(Operation::Manifest(Reference::Tag("v1"))));
        assert!(mutable(Operation::TagsList));
        assert!(mutable(Operation::Referrers(digest)));
        assert!(!mutable(Operation::Blob(digest)));
        assert!(!mutable(Operation::Manifest(Reference::Digest(digest))));
        assert_eq!(Operation::Blob(digest).content_digest(), Some(digest));
        assert_eq!(Operation::Referrers(digest).content_digest(), None);
        let accept = AcceptClass::DEFAULT;
        // Blobs are shared by every image of a remote.
        assert_eq!(
            key_parts("a/b", &Operation::Blob(digest), accept, ""),
            key_parts("c", &Operation::Blob(digest), accept, "")
        );
        let tag = Operation::Manifest(Reference::Tag("v1"));
        let oci = AcceptClass::from_accept(["application/vnd.oci.image.manifest.v1+json"]);
        assert_ne!(
            key_parts("a", &tag, accept, ""),
            key_parts("a", &tag, oci, "")
        );
        assert_ne!(
            key_parts("a", &Operation::TagsList, accept, "n=1"),
            key_parts("a", &Operation::TagsList, accept, "n=2")
        );
        assert_eq!(upstream_path("a/b", &tag), "a/b/manifests/v1");
    }

    #[test]
    fn accept_classes() {
        let containerd = AcceptClass::from_accept([
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
        ]);
        assert_eq!(containerd, AcceptClass::DEFAULT);
        let split = AcceptClass::from_accept([
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json;q=0.9, application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ]);
        assert_eq!(split, AcceptClass::DEFAULT);
        assert_eq!(AcceptClass::from_accept([]), AcceptClass::DEFAULT);
        assert_eq!(AcceptClass::from_accept(["*/*"]), AcceptClass::DEFAULT);
        let oci = AcceptClass::from_accept(["application/vnd.oci.image.manifest.v1+json"]);
        assert_eq!(
            oci.header_value(),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert!(oci.admits("application/vnd.oci.image.manifest.v1+json; charset=utf-8"));
        assert!(!oci.admits("application/vnd.docker.distribution.manifest.v2+json"));
        let refused = AcceptClass::from_accept([
            "application/vnd.oci.image.manifest.v1+json;q=0, application/vnd.docker.distribution.manifest.v2+json",
        ]);
        assert_eq!(
            refused.header_value(),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert!(is_signed_schema1(
            "application/vnd.docker.distribution.manifest.v1+prettyjws"
        ));
        assert!(!is_signed_schema1(DOCKER_V2));
        assert!(is_manifest_type(
            "application/vnd.oci.image.index.v1+json; charset=utf-8"
        ));
        assert!(!is_manifest_type("application/octet-stream"));
        assert!(!is_manifest_type(""));
        let legacy =
            AcceptClass::from_accept(["application/vnd.docker.distribution.manifest.v1+prettyjws"]);
        assert_ne!(legacy.key_part(), AcceptClass::DEFAULT.key_part());
    }

    #[test]
    fn error_codes_and_statuses() {
        assert_eq!(ErrorCode::ManifestUnknown.as_str(), "MANIFEST_UNKNOWN");
        assert_eq!(ErrorCode::TooManyRequests.status(), 429);
        assert_eq!(ErrorCode::Unsupported.status(), 405);
        assert_eq!(
            ErrorCode::for_status(404, Some(Kind::Blob)),
            ErrorCode::BlobUnknown
        );
        assert_eq!(ErrorCode::for_status(404, None), ErrorCode::NameUnknown);
        assert_eq!(ErrorCode::for_status(403, None), ErrorCode::Denied);
        assert_eq!(ErrorCode::for_status(504, None), ErrorCode::Unavailable);
    }

    #[test]
    fn bearer_challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:5001/token",service="reg",scope="repository:a:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "http://127.0.0.1:5001/token");
        assert_eq!(c.service.as_deref(), Some("reg"));
        assert_eq!(c.scope.as_deref(), Some("repository:a:pull,push"));
        let c = parse_bearer_challenge("bearer realm=https://x/t, service=s").unwrap();
        assert_eq!(
            (c.realm.as_str(), c.service.as_deref()),
            ("https://x/t", Some("s"))
        );
        assert_eq!(c.scope, None);
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="x""#), None);
        assert_eq!(
            parse_bearer_challenge(r#"Bearer realm="unterminated"#),
            None
        );
        assert_eq!(pull_scope("library/nginx"), "repository:library/nginx:pull");
    }
}
