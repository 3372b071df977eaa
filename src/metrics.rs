//! Prometheus counters per remote.
//!
//! The set of remotes is fixed at start, so the map is built once and read
//! without locks; each counter is a relaxed atomic. Rendering happens only
//! when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter family: metric name, help text and the field it reads.
type Family = (&'static str, &'static str, fn(&RemoteMetrics) -> &AtomicU64);

/// Counters of one remote.
#[derive(Debug, Default)]
pub struct RemoteMetrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub revalidations: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub denied: AtomicU64,
    pub bytes_served: AtomicU64,
    pub uploads: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub checksum_mismatches: AtomicU64,
}

/// What one finished request contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// Served from cache after the upstream confirmed it (304).
    Revalidated,
    Denied,
    Upload,
    /// Anything else (local reads, deletes, client errors).
    Other,
}

#[derive(Debug, Default)]
pub struct Metrics {
    remotes: BTreeMap<String, RemoteMetrics>,
}

impl Metrics {
    pub fn new<'a>(remotes: impl IntoIterator<Item = &'a String>) -> Self {
        Metrics {
            remotes: remotes
                .into_iter()
                .map(|name| (name.clone(), RemoteMetrics::default()))
                .collect(),
        }
    }

    /// Records one finished request of `remote`.
    pub fn record(&self, remote: &str, outcome: Outcome, bytes: u64, upstream_error: bool) {
        let Some(m) = self.remotes.get(remote) else {
            return;
        };
        let counter = match outcome {
            Outcome::Hit => Some(&m.hits),
            Outcome::Miss => Some(&m.misses),
            Outcome::Revalidated => Some(&m.revalidations),
            Outcome::Denied => Some(&m.denied),
            Outcome::Upload => Some(&m.uploads),
            Outcome::Other => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if upstream_error {
            m.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
        m.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts an upstream body that did not match its digest.
    pub fn digest_mismatch(&self, remote: &str) {
        if let Some(m) = self.remotes.get(remote) {
            m.digest_mismatches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a package file refused because it did not match the checksum
    /// its index published.
    pub fn checksum_mismatch(&self, remote: &str) {
        if let Some(m) = self.remotes.get(remote) {
            m.checksum_mismatches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, catalog_events_dropped: u64) -> String {
        let families: [Family; 9] = [
            (
                "artifactd_cache_hits_total",
                "Requests served from cache.",
                |m| &m.hits,
            ),
            (
                "artifactd_cache_misses_total",
                "Requests fetched from the upstream.",
                |m| &m.misses,
            ),
            (
                "artifactd_cache_revalidations_total",
                "Expired entries confirmed by the upstream (304) and served from cache.",
                |m| &m.revalidations,
            ),
            (
                "artifactd_upstream_errors_total",
                "Requests whose upstream failed or answered 5xx.",
                |m| &m.upstream_errors,
            ),
            (
                "artifactd_denied_total",
                "Requests refused by a remote's patterns.",
                |m| &m.denied,
            ),
            (
                "artifactd_bytes_served_total",
                "Response body bytes sent to clients.",
                |m| &m.bytes_served,
            ),
            (
                "artifactd_uploads_total",
                "Files uploaded to local repositories.",
                |m| &m.uploads,
            ),
            (
                "artifactd_digest_mismatch_total",
                "Upstream manifests and blobs refused because they did not match their digest.",
                |m| &m.digest_mismatches,
            ),
            (
                "artifactd_checksum_mismatch_total",
                "Package files refused because they did not match the checksum their index published.",
                |m| &m.checksum_mismatches,
            ),
        ];
        let mut out = String::new();
        for (name, help, field) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (remote, m) in &self.remotes {
                let _ = writeln!(
                    out,
                    "{name}{{remote=\"{remote}\"}} {}",
                    field(m).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP artifactd_catalog_events_dropped_total Catalog events lost to a full queue.\n# TYPE artifactd_catalog_events_dropped_total counter\nartifactd_catalog_events_dropped_total {}",
            catalog_events_dropped
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_per_remote() {
        let names = vec!["a".to_string(), "b".to_string()];
        let m = Metrics::new(&names);
        m.record("a", Outcome::Hit, 10, false);
        m.record("a", Outcome::Miss, 5, true);
        m.record("unknown", Outcome::Hit, 1, false);
        let text = m.render(0);
        assert!(text.contains("artifactd_cache_hits_total{remote=\"a\"} 1"));
        assert!(text.contains("artifactd_cache_hits_total{remote=\"b\"} 0"));
        assert!(text.contains("artifactd_bytes_served_total{remote=\"a\"} 15"));
        assert!(text.contains("artifactd_upstream_errors_total{remote=\"a\"} 1"));
    }
}
