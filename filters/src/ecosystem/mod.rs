//! Package formats, one module each, and the one place that dispatches
//! between them.
//!
//! Every format answers the same questions: which of its paths change in
//! place upstream ([`Ecosystem::default_mutable_patterns`]), how a client's
//! path is spelled before it is validated ([`Ecosystem::client_path`]),
//! what a request for a path is — the path asked upstream, the cache key,
//! its class and whether it is an index document ([`Ecosystem::route`]) —
//! and what `Accept` goes upstream for a document ([`Document::upstream_accept`]).
//! The answers are plain data; the proxy applies them and never asks which
//! format it serves. A new format is a module here and one arm in each
//! `match` of this file.
//!
//! # Layout
//! - [`generic`], [`alpine`]: files only, with their mutable indexes.
//! - [`oci`]: the OCI distribution API (`package: docker`).
//! - [`pypi`]: the simple and JSON APIs.
//! - [`npm`]: package documents and tarballs.
//! - [`helm`]: chart repositories' `index.yaml`.
//! - [`rpm`]: `repomd.xml` snapshots and their repodata.
//! - [`apt`]: Debian and Ubuntu suites: `InRelease` snapshots, `Packages`.

pub mod alpine;
pub mod apt;
pub mod generic;
pub mod helm;
pub mod npm;
pub mod oci;
pub mod pypi;
pub mod rpm;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// How long a cached artifact may be served without asking the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactClass {
    /// Never changes once published: cached until flushed (or `immutable_ttl`).
    Immutable,
    /// Changes in place: revalidated after `mutable_ttl`. `user_defined` tells
    /// a remote's own `mutable_patterns` apart from the package defaults.
    Mutable { user_defined: bool },
}

/// The package format of a remote (`package:` in `remotes.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecosystem {
    Generic,
    Docker,
    Pypi,
    Npm,
    Helm,
    Rpm,
    Alpine,
    Apt,
}

impl Ecosystem {
    /// Every format, in the order the docs list them.
    pub const ALL: [Ecosystem; 8] = [
        Ecosystem::Generic,
        Ecosystem::Docker,
        Ecosystem::Pypi,
        Ecosystem::Npm,
        Ecosystem::Helm,
        Ecosystem::Rpm,
        Ecosystem::Alpine,
        Ecosystem::Apt,
    ];

    /// The spelling used in `remotes.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Generic => "generic",
            Ecosystem::Docker => "docker",
            Ecosystem::Pypi => "pypi",
            Ecosystem::Npm => "npm",
            Ecosystem::Helm => "helm",
            Ecosystem::Rpm => "rpm",
            Ecosystem::Alpine => "alpine",
            Ecosystem::Apt => "apt",
        }
    }

    /// Built-in mutable patterns: metadata that changes in place upstream.
    pub fn default_mutable_patterns(self) -> &'static [&'static str] {
        match self {
            Ecosystem::Generic => generic::MUTABLE_PATTERNS,
            Ecosystem::Docker => oci::MUTABLE_PATTERNS,
            Ecosystem::Pypi => pypi::MUTABLE_PATTERNS,
            Ecosystem::Npm => npm::MUTABLE_PATTERNS,
            Ecosystem::Helm => helm::MUTABLE_PATTERNS,
            Ecosystem::Rpm => rpm::MUTABLE_PATTERNS,
            Ecosystem::Alpine => alpine::MUTABLE_PATTERNS,
            Ecosystem::Apt => apt::MUTABLE_PATTERNS,
        }
    }

    /// The remote path as the format's clients spell it, made ready for
    /// validation (npm's `@scope%2fname`).
    pub fn client_path(self, raw_path: &str) -> Cow<'_, str> {
        match self {
            Ecosystem::Npm => npm::unescape_scope(raw_path),
            _ => Cow::Borrowed(raw_path),
        }
    }

    /// Where the remote's paths live on its upstream, below its base path
    /// (registries speak the API under `/v2`).
    pub fn upstream_prefix(self) -> &'static str {
        match self {
            Ecosystem::Docker => "/v2",
            _ => "",
        }
    }

    /// Whether a remote of this format may name upstream hosts it stands
    /// in for (`mirror_of`): registries that containerd asks for by name,
    /// and hosts whose clients use artifactd as their HTTP proxy.
    pub fn can_mirror(self) -> bool {
        matches!(self, Ecosystem::Docker | Ecosystem::Apt)
    }

    /// Whether the format's clients reach a mirrored host through
    /// artifactd as their HTTP proxy (absolute-URI requests).
    pub fn proxied(self) -> bool {
        matches!(self, Ecosystem::Apt)
    }

    /// Whether remotes of this format answer the registry API (`/v2/…`).
    pub fn speaks_registry_api(self) -> bool {
        matches!(self, Ecosystem::Docker)
    }

    /// Whether the format's files are a project's release assets, which
    /// `POST /cache-artifact` lists from a releases API and pre-fills.
    pub fn has_release_assets(self) -> bool {
        matches!(self, Ecosystem::Generic)
    }

    /// Whether the format's index may live on another host than its files
    /// (the remote's `index_url`).
    pub fn has_separate_index(self) -> bool {
        matches!(self, Ecosystem::Pypi)
    }

    /// Whether the format's indexes publish checksums that its files are
    /// verified against.
    pub fn verifies_files(self) -> bool {
        matches!(
            self,
            Ecosystem::Pypi | Ecosystem::Npm | Ecosystem::Helm | Ecosystem::Rpm | Ecosystem::Apt
        )
    }

    /// What a snapshot index at `path` names (see [`Snapshot`]); `Err`
    /// says why it could not be read (it is then served unchecked).
    pub fn snapshot(self, path: &str, body: &[u8], scope: &Scope<'_>) -> Result<Snapshot, String> {
        match self {
            Ecosystem::Rpm => rpm::snapshot(path, body),
            Ecosystem::Apt => apt::snapshot(path, body, scope),
            _ => Err(format!("{self} has no snapshot indexes")),
        }
    }

    /// Reads one package list of a snapshot (decompressed), calling
    /// `found` with each package's remote path and `sha256:hex` digest.
    pub fn read_package_list(
        self,
        snapshot_root: &str,
        list: &IndexedFile,
        reader: &mut dyn std::io::BufRead,
        found: &mut dyn FnMut(String, String),
    ) -> Result<u64, String> {
        match self {
            Ecosystem::Rpm => rpm::read_package_list(snapshot_root, reader, found),
            Ecosystem::Apt => apt::read_package_list(snapshot_root, reader, found),
            _ => Err(format!("{self} has no package lists ({})", list.path)),
        }
    }

    /// The index document a path names that a virtual repository merges
    /// from its members and a local repository generates from its uploads.
    pub fn index_document(self, path: &str) -> Option<IndexDocument> {
        match self {
            Ecosystem::Pypi => match pypi::document(path)? {
                pypi::Document::RootIndex => Some(IndexDocument::PypiRoot),
                pypi::Document::Project { name } => Some(IndexDocument::PypiProject { name }),
                pypi::Document::JsonApi { .. } => None,
            },
            Ecosystem::Npm => match npm::classify(path) {
                npm::NpmPath::Document { name } => Some(IndexDocument::NpmPackage { name }),
                _ => None,
            },
            Ecosystem::Helm => helm::is_index(path).then_some(IndexDocument::HelmIndex),
            _ => None,
        }
    }

    /// The package and version a file of this format belongs to, as the
    /// artifact firewall names them; `None` for a file that is no
    /// package's release (an index, a signature of the whole repository)
    /// or a format without package coordinates.
    pub fn package_of(self, path: &str) -> Option<PackageVersion> {
        match self {
            Ecosystem::Npm => npm::package_of(path),
            Ecosystem::Pypi => pypi::package_of(path),
            Ecosystem::Helm => helm::package_of(path),
            Ecosystem::Generic
            | Ecosystem::Docker
            | Ecosystem::Rpm
            | Ecosystem::Alpine
            | Ecosystem::Apt => None,
        }
    }

    /// The package an index document lists the versions of, when it is
    /// one package's (npm's package document, PyPI's project page).
    pub fn package_of_document(self, document: &Document, path: &str) -> Option<String> {
        match document {
            Document::PypiSimple { project, .. } => project.clone(),
            Document::PypiJsonApi => pypi::document(path).and_then(|d| match d {
                pypi::Document::JsonApi { name, .. } => Some(name),
                _ => None,
            }),
            Document::NpmPackage { .. } => match npm::classify(path) {
                npm::NpmPath::Document { name } => Some(name),
                _ => None,
            },
            _ => None,
        }
    }

    /// How this format's clients are told that a release is refused (a
    /// 403): a body each prints. npm shows an error JSON's `error`; a
    /// registry client a `DENIED` error; the others read a line of text
    /// (and pip the status line's reason, which the proxy sets too).
    pub fn refusal(self, message: &str) -> Refusal {
        match self {
            Ecosystem::Npm => Refusal {
                content_type: "application/json",
                body: serde_json::json!({ "error": message }).to_string(),
            },
            Ecosystem::Docker => Refusal {
                content_type: "application/json",
                body: serde_json::json!({
                    "errors": [{ "code": "DENIED", "message": message }]
                })
                .to_string(),
            },
            _ => Refusal {
                content_type: "text/plain; charset=utf-8",
                body: format!("{message}\n"),
            },
        }
    }

    /// Routes a request for a path of a remote of this format. An index
    /// document is mutable whatever the remote's patterns say (npm has no
    /// built-in mutable patterns, and a remote that lists none would
    /// otherwise keep package documents forever).
    pub fn route(self, request: &Request<'_>) -> Routed {
        let mut routed = match self {
            Ecosystem::Pypi => pypi::route(request),
            Ecosystem::Npm => npm::route(request),
            Ecosystem::Helm => helm::route(request),
            Ecosystem::Rpm => rpm::route(request),
            Ecosystem::Apt => apt::route(request),
            Ecosystem::Generic | Ecosystem::Alpine | Ecosystem::Docker => Routed::file(request),
        };
        if routed.document.is_some() && routed.class == ArtifactClass::Immutable {
            routed.class = ArtifactClass::Mutable {
                user_defined: false,
            };
        }
        routed
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ecosystem {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ecosystem::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Ecosystem::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown package type {s:?}, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A request for a path of a remote, as routing sees it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// As the client sent it (after [`Ecosystem::client_path`]), still
    /// percent-encoded.
    pub raw_path: &'a str,
    /// Decoded and validated: what patterns match and the catalog lists.
    pub path: &'a str,
    /// What the remote's patterns made of the path.
    pub class: ArtifactClass,
    pub accept: Option<&'a str>,
    pub query: Option<&'a str>,
    /// The remote hides quarantined versions from its documents.
    pub quarantine_hide: bool,
}

/// A refusal in the language of a format's clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub content_type: &'static str,
    pub body: String,
}

/// A release of a package, as the artifact firewall names it: the name in
/// its format's normal form (PyPI's PEP 503 name), the version as the file
/// spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

/// What a request asks for, once routed: the plain data the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The path asked of the upstream, still percent-encoded.
    pub upstream_path: String,
    /// The cache key after the remote name. The first part is the decoded
    /// path that patterns matched and the catalog lists; the rest tell
    /// variants apart (a form, a query).
    pub key_parts: Vec<String>,
    /// How long it is served without asking the upstream: decided here,
    /// once.
    pub class: ArtifactClass,
    /// Set for an index document that is rewritten for each client.
    pub document: Option<Document>,
}

impl Routed {
    /// A plain file: asked and keyed as it was requested.
    pub fn file(request: &Request<'_>) -> Routed {
        Routed {
            upstream_path: request.raw_path.to_string(),
            key_parts: vec![request.path.to_string()],
            class: request.class,
            document: None,
        }
    }

    /// An index document at `path` (asked upstream as `upstream_path`).
    pub(crate) fn document(
        upstream_path: String,
        key_parts: Vec<String>,
        request: &Request<'_>,
        document: Document,
    ) -> Routed {
        Routed {
            upstream_path,
            key_parts,
            class: request.class,
            document: Some(document),
        }
    }
}

/// What a snapshot index names: the files a client fetches after it,
/// each with its checksum. A repository is consistent only as a snapshot
/// (its indexes name files by checksum, and when the upstream regenerates,
/// the old files go): a refreshed index is served only once every file
/// here is cached (or known absent upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every file to have cached before the index is served.
    pub files: Vec<IndexedFile>,
    /// Every file whose checksum the index publishes (the files above and
    /// any others), so that downloads of them are verified.
    pub checksums: Vec<IndexedFile>,
    /// The package lists: each a choice of files in order of preference
    /// (compressions, forms), the first readable one read.
    pub package_lists: Vec<Vec<IndexedFile>>,
    /// The remote path the package lists' paths are relative to.
    pub root: String,
}

/// What of a snapshot a remote keeps (its configuration).
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    /// The architectures whose package lists are kept; empty for all.
    pub architectures: &'a [String],
}

/// A file an index names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    /// The decoded remote path.
    pub path: String,
    /// `sha256:hex` (or another `algorithm:hex`) of the file as stored.
    pub digest: Option<String>,
}

/// An index document that virtual repositories merge and local
/// repositories generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexDocument {
    /// PyPI's `simple/`.
    PypiRoot,
    /// PyPI's `simple/{project}/`, the name normalised.
    PypiProject { name: String },
    /// An npm package document.
    NpmPackage { name: String },
    /// A Helm repository's `index.yaml`.
    HelmIndex,
}

/// An index document of some format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// PyPI's `simple/` (no project) or `simple/{project}/`, in a form.
    PypiSimple {
        project: Option<String>,
        form: pypi::Form,
    },
    /// PyPI's `pypi/{project}/json`.
    PypiJsonApi,
    /// An npm package document, in a form.
    NpmPackage { form: npm::Form },
    /// npm's `-/v1/search`: passed to the upstream, never cached.
    NpmSearch,
    /// A Helm repository's `index.yaml`.
    HelmIndex,
    /// An RPM repository's `repodata/repomd.xml`: not rewritten, but only
    /// refreshed as a consistent snapshot.
    RpmRepomd,
    /// An APT suite's `InRelease` or `Release`: likewise.
    AptRelease,
}

impl Document {
    /// Whether this index names the files fetched after it, so that a new
    /// one is served only once they are cached ([`Ecosystem::snapshot`]).
    pub fn is_snapshot(&self) -> bool {
        matches!(self, Document::RpmRepomd | Document::AptRelease)
    }

    /// Whether the document is rewritten for each client (its links come
    /// back through artifactd); snapshot indexes and search results pass
    /// through as the upstream sent them.
    pub fn rewritten(&self) -> bool {
        !self.is_snapshot() && self.cached()
    }

    /// Whether responses are cached (and rewritten).
    pub fn cached(&self) -> bool {
        !matches!(self, Document::NpmSearch)
    }

    /// The versions an index document of one package lists, read from
    /// the document as the upstream sent it (PyPI's HTML pages are read
    /// through the links their rewriter found instead).
    pub fn listed_versions(&self, body: &[u8]) -> Option<Vec<String>> {
        match self {
            Document::NpmPackage { .. } => npm::listed_versions(body),
            Document::PypiSimple { .. } | Document::PypiJsonApi => pypi::listed_versions(body),
            _ => None,
        }
    }

    /// The syntax a `200` of this document must be well-formed in, given
    /// the media type it came with (PyPI's simple pages come as HTML,
    /// which any bytes are, or as JSON). `None`: not checked.
    pub fn syntax(&self, content_type: Option<&str>) -> Option<crate::syntax::Syntax> {
        use crate::syntax::Syntax;
        match self {
            Document::PypiSimple { .. } => content_type
                .is_some_and(pypi::is_json_type)
                .then_some(Syntax::Json),
            Document::PypiJsonApi | Document::NpmPackage { .. } => Some(Syntax::Json),
            Document::HelmIndex => Some(Syntax::Yaml),
            Document::RpmRepomd => Some(Syntax::Xml),
            Document::NpmSearch | Document::AptRelease => None,
        }
    }

    /// The `Accept` asked of the upstream (`None`: the client's).
    pub fn upstream_accept(&self) -> Option<&'static str> {
        match self {
            Document::PypiSimple { form, .. } => Some(pypi::upstream_accept(*form)),
            Document::PypiJsonApi => Some("application/json"),
            Document::NpmPackage { form } => Some(form.accept()),
            Document::NpmSearch
            | Document::HelmIndex
            | Document::RpmRepomd
            | Document::AptRelease => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(path: &'a str, accept: Option<&'a str>) -> Request<'a> {
        Request {
            raw_path: path,
            path,
            class: ArtifactClass::Immutable,
            accept,
            query: None,
            quarantine_hide: false,
        }
    }

    #[test]
    fn names_round_trip() {
        for ecosystem in Ecosystem::ALL {
            assert_eq!(ecosystem.as_str().parse::<Ecosystem>(), Ok(ecosystem));
        }
        let error = "debian".parse::<Ecosystem>().unwrap_err();
        assert!(error.contains("generic, docker"), "{error}");
    }

    #[test]
    fn documents_are_mutable_whatever_the_patterns_say() {
        let routed = Ecosystem::Npm.route(&request("left-pad", None));
        assert_eq!(
            routed.class,
            ArtifactClass::Mutable {
                user_defined: false
            }
        );
        assert_eq!(routed.key_parts, ["left-pad", "form=full"]);
        let tarball = Ecosystem::Npm.route(&request("a/-/a-1.0.0.tgz", None));
        assert_eq!(tarball, Routed::file(&request("a/-/a-1.0.0.tgz", None)));
    }

    #[test]
    fn files_of_every_format_route_as_asked() {
        for ecosystem in Ecosystem::ALL {
            let file = request("dir/f%20g.bin", None);
            let routed = ecosystem.route(&file);
            assert_eq!(routed.upstream_path, "dir/f%20g.bin", "{ecosystem}");
            assert_eq!(routed.document, None, "{ecosystem}");
        }
    }
}
