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
//! - [`fill_ranges`]: filling one object in ranges: which answers continue
//!   a fill, backoff between attempts.
//! - [`pace`]: many streams' bytes paced to one shared rate (a remote's
//!   `max_upstream_bytes_per_second`).
//! - [`fill_plan`]: which ranges a large fill fetches next: for readers of
//!   ranges at once, parallel parts near the front, resumes of gaps.
//! - [`request_head`]: HTTP/1 request heads as the hit fast path reads
//!   them, and whether one is plain enough to answer without pingora.
//! - [`breaker`]: the per-remote circuit breaker state machine.
//! - [`cache_key`]: unambiguous, length-prefixed cache key encoding.
//! - [`flush`]: what `PUT /cache/flush` removes (`cache_type`).
//! - [`size`]: byte sizes with units (`50GiB`) from configuration.
//! - [`duration`]: durations with units (`30s`, `1h`) from configuration.
//! - [`ecosystem`]: one module per package format (generic, Alpine, OCI,
//!   PyPI, npm, Helm, RPM) and the one dispatch between them: default
//!   mutable patterns, routing, index documents, rewriting, published
//!   checksums.
//! - [`firewall`]: the artifact firewall's rules (known-malicious feeds
//!   in the OSV format, deny and allow lists, minimum age) and versions
//!   in each format's order.
//! - [`links`]: resolving links in index documents and mapping them back
//!   through a remote.
//! - [`media_type`]: a file's media type by its name, for files stored
//!   without an upstream's header.
//! - [`syntax`]: whether an index document is well-formed JSON, YAML or
//!   XML before it is kept.
//! - [`yaml`]: YAML read with a bound on nesting (configuration files and
//!   Helm indexes are hostile input too).

pub mod accept;
pub mod breaker;
pub mod cache_key;
pub mod duration;
pub mod ecosystem;
pub mod fill_plan;
pub mod fill_ranges;
pub mod firewall;
pub mod flush;
pub mod links;
pub mod media_type;
pub mod pace;
pub mod path;
pub mod pattern;
pub mod policy;
pub mod quarantine;
pub mod range;
pub mod request_head;
pub mod route;
pub mod size;
pub mod stale;
pub mod syntax;
pub mod yaml;

pub use ecosystem::Ecosystem;
pub use path::{validate_artifact_path, PathError};
pub use pattern::{PatternError, PatternSet};
pub use policy::{Access, ArtifactClass, RemotePolicy};
pub use route::{route, AdminRoute, CacheApiRoute, Route};
