//! Pure policy for artifactd: everything that decides *what* to do with a
//! request, with no I/O, no async runtime and no Pingora.
//!
//! Keeping the decisions here means they are unit-tested in microseconds and
//! the proxy's phase methods stay thin: they extract plain data, call into
//! this crate and apply the verdict.
//!
//! # Layout
//! - [`accept`]: `Accept` media ranges and their `q` values.
//! - [`route`]: maps a request method and path onto a [`route::Route`].
//! - [`path`]: validates the artifact path part of a URL before anything
//!   touches storage or an upstream.
//! - [`pattern`]: Python `re.search`-compatible pattern sets (a `RegexSet`
//!   with a `fancy-regex` fallback for look-around).
//! - [`policy`]: per-remote access control and immutable/mutable
//!   classification, including the per-package default mutable patterns.
//! - [`quarantine`]: holding newly published artifacts back.
//! - [`stale`]: serving an expired copy while the upstream fails.
//! - [`range`]: single byte ranges for responses artifactd writes itself.
//! - [`breaker`]: the per-remote circuit breaker state machine.
//! - [`cache_key`]: unambiguous, length-prefixed cache key encoding.
//! - [`size`]: byte sizes with units (`50GiB`) from configuration.
//! - [`duration`]: durations with units (`30s`, `1h`) from configuration.
//! - [`helm`]: Helm `index.yaml` rewriting, chart digests, quarantine.
//! - [`links`]: resolving links in index documents and mapping them back
//!   through a remote.
//! - [`npm`]: npm package documents, tarball links, integrity, quarantine
//!   hiding.
//! - [`pypi`]: PyPI's simple and JSON APIs: documents, negotiation,
//!   rewriting, published checksums.
//! - [`rpm`]: RPM `repomd.xml` and `primary.xml`, content-addressed
//!   repodata.
//! - [`oci`]: the OCI distribution API: `/v2/` routes, references,
//!   classification, key parts, `Accept` classes, error codes, Bearer
//!   challenges.

pub mod accept;
pub mod breaker;
pub mod cache_key;
pub mod duration;
pub mod helm;
pub mod links;
pub mod npm;
pub mod oci;
pub mod path;
pub mod pattern;
pub mod policy;
pub mod pypi;
pub mod quarantine;
pub mod range;
pub mod route;
pub mod rpm;
pub mod size;
pub mod stale;

pub use path::{validate_artifact_path, PathError};
pub use pattern::{PatternError, PatternSet};
pub use policy::{Access, ArtifactClass, Package, RemotePolicy};
pub use route::{route, AdminRoute, Route};
