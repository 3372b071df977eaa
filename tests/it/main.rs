//! artifactd's integration tests: the real binary against real HTTP
//! upstreams on loopback, driven by a real HTTP client.
//!
//! - `harness`: the counting origin server and the artifactd process.
//! - `cluster`: flushes across bucket, Redis and PostgreSQL; serving on
//!   while Redis is killed. (`ARTIFACTD_TEST_SHAPE=cluster` runs the other
//!   suites against S3 + Redis + PostgreSQL too: `make it-cluster`.)
//! - `config`: seed `remotes.yaml` examples and config errors.
//! - `cache`: miss/hit, revalidation, single-flight, truncation, restart, ranges.
//! - `fast_path`: hot hits before the phases: their headers, 304, 206/416,
//!   HEAD, refusals, expiry, flushes, pipelined and HTTP/1.0 connections.
//! - `rewrites`: index documents rewritten once per version and client base.
//! - `cache_api`: `/api/v1/cache`, flush by pattern, verify,
//!   `/cache-artifact`, and the `warm` and `cache` commands.
//! - `evict`: `cache.max_size`, LRU order, readers and images kept, the
//!   index after a restart.
//! - `segments`: records in segment files, recovery after `kill -9` with
//!   the catalog behind, compaction.
//! - `fill`: followers of fills in progress, aborts, HEAD/range misses,
//!   failed fills, staging cleanup after `kill -9`.
//! - `large`: multi-gigabyte fills: resumed after cut connections, never
//!   stitched from two versions.
//! - `local`: local repository uploads, limits, tokens, deletes.
//! - `security`: path validation before storage and upstream.
//! - `clients`: abusive clients against the connection limits (slow and
//!   oversized heads, idle connections by the hundred).
//! - `hostile_upstream`: upstreams that answer garbage (huge headers,
//!   endless bodies, resets, redirect loops, gzip bombs, documents that
//!   are not well-formed): a clear error, nothing committed.
//! - `storage_full`: the store on a small tmpfs: misses pass through whole,
//!   caching resumes with space.
//! - `admin`: `/config` redaction, `/metrics`, `/health`, flush.
//! - `resilience`: quarantine, negative caching.
//! - `firewall`: OSV feeds, revocation and purge, dry run, deny/allow
//!   lists and age exemptions, with pip, uv and npm.
//! - `oci`: the registry API against a real registry, skopeo and umoci.
//! - `pypi`: PyPI remotes with pip and uv against pypiserver.
//! - `npm`: npm remotes with npm against verdaccio.
//! - `rpm`: RPM repositories with dnf: snapshots, verification.
//! - `alpine`: APKINDEX mutable, packages immutable.
//! - `edge`: TLS and certificate rotation, graceful stop and upgrade,
//!   sd_notify, safe defaults, token files, the systemd unit.
//! - `readme`: `make run` from a fresh clone, and the systemd unit's
//!   commands on its shipped config and token files.
//! - `helm`: Helm indexes and charts (no helm client installable: its steps).
//! - `monitoring`: the Grafana dashboard and alert rules against a real
//!   Prometheus; the status page in headless Chromium.

mod admin;
mod alpine;
mod apt;
mod cache;
mod cache_api;
mod clients;
mod cluster;
mod config;
mod container;
mod cookbook;
mod edge;
mod evict;
mod fast_path;
mod fill;
mod firewall;
mod harness;
mod helm;
mod hostile_upstream;
mod import;
mod kubernetes;
mod large;
mod local;
mod monitoring;
mod npm;
mod oci;
mod pypi;
mod readme;
mod reload;
mod resilience;
mod rewrites;
mod rpm;
mod security;
mod segments;
mod storage_full;
