//! Prometheus metrics through `prometheus-client`: counters per remote,
//! request-duration histograms per remote and cache source, upstream
//! time-to-first-byte histograms, and the values other parts own (breaker
//! states, cache size, evictions, catalog losses) read at each scrape.
//!
//! Every handle (a counter or a histogram for one label set) of a remote is
//! created once, at start or when a reload adds the remote, and kept in a
//! map swapped whole: recording a request is a map lookup and a few atomic
//! adds, with no lock of the metric families on the request path.

use crate::breakers::Breakers;
use crate::catalog::CatalogWriter;
use crate::served_from::ServedFrom;
use crate::storage::CacheStorage;
use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What one finished request was, for the counters.
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

impl From<ServedFrom> for Outcome {
    /// The counter a request without an outcome of its own moves.
    fn from(served: ServedFrom) -> Outcome {
        match served {
            ServedFrom::Hit | ServedFrom::Stale => Outcome::Hit,
            ServedFrom::Revalidated => Outcome::Revalidated,
            ServedFrom::Miss => Outcome::Miss,
            ServedFrom::Local | ServedFrom::Passed => Outcome::Other,
        }
    }
}

impl EncodeLabelValue for ServedFrom {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabel {
    remote: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    remote: String,
    source: ServedFrom,
}

/// The counters of one remote.
#[derive(Clone, Default)]
struct RemoteCounters {
    hits: Counter,
    misses: Counter,
    revalidations: Counter,
    upstream_errors: Counter,
    denied: Counter,
    bytes_served: Counter,
    uploads: Counter,
    digest_mismatches: Counter,
    checksum_mismatches: Counter,
    fast_hits: Counter,
}

/// A counter family: name, help, and which counter of a remote it is.
type CounterSpec = (
    &'static str,
    &'static str,
    fn(&mut RemoteCounters) -> &mut Counter,
);

/// Seconds, from half a millisecond (a hit from memory) to five minutes
/// (a large layer on a slow link).
const DURATION_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// What one request contributes to the metrics.
pub struct Request<'a> {
    pub remote: &'a str,
    pub outcome: Outcome,
    pub source: ServedFrom,
    pub bytes: u64,
    pub upstream_error: bool,
    pub duration: Duration,
    /// Until the upstream's response header, when the upstream was asked.
    pub upstream: Option<Duration>,
    /// Answered by the hit fast path.
    pub fast_path: bool,
}

/// Everything recorded for one remote, found with one lookup per request.
struct RemoteMetrics {
    counters: RemoteCounters,
    /// One histogram per [`ServedFrom`], indexed by it.
    durations: [Histogram; ServedFrom::ALL.len()],
    upstream: Histogram,
}

/// The counter families, each with a handle per remote.
const COUNTERS: [CounterSpec; 10] = [
    ("artifactd_cache_hits", "Requests served from cache.", |c| {
        &mut c.hits
    }),
    (
        "artifactd_cache_misses",
        "Requests fetched from the upstream.",
        |c| &mut c.misses,
    ),
    (
        "artifactd_cache_revalidations",
        "Expired entries confirmed by the upstream (304) and served from cache.",
        |c| &mut c.revalidations,
    ),
    (
        "artifactd_upstream_errors",
        "Requests whose upstream failed or answered 5xx.",
        |c| &mut c.upstream_errors,
    ),
    (
        "artifactd_denied",
        "Requests refused by a remote's patterns.",
        |c| &mut c.denied,
    ),
    (
        "artifactd_bytes_served",
        "Response body bytes sent to clients.",
        |c| &mut c.bytes_served,
    ),
    (
        "artifactd_uploads",
        "Files uploaded to local repositories.",
        |c| &mut c.uploads,
    ),
    (
        "artifactd_digest_mismatch",
        "Upstream manifests and blobs refused because they did not match their digest.",
        |c| &mut c.digest_mismatches,
    ),
    (
        "artifactd_checksum_mismatch",
        "Package files refused because they did not match the checksum their index published.",
        |c| &mut c.checksum_mismatches,
    ),
    (
        "artifactd_fast_path_hits",
        "Hits answered from memory before pingora's phases (part of artifactd_cache_hits).",
        |c| &mut c.fast_hits,
    ),
];

pub struct Metrics {
    registry: Registry,
    families: Families,
    /// Swapped whole when a reload adds remotes; the request path reads it
    /// without a lock.
    remotes: ArcSwap<HashMap<String, Arc<RemoteMetrics>>>,
    reloads: Family<ReloadLabel, Counter>,
}

/// The families every remote's handles come from (each an `Arc` inside).
struct Families {
    counters: [(CounterSpec, Family<RemoteLabel, Counter>); COUNTERS.len()],
    requests: Family<RequestLabels, Histogram>,
    upstream: Family<RemoteLabel, Histogram>,
}

impl Families {
    fn handles_of(&self, remote: &str) -> RemoteMetrics {
        let label = RemoteLabel {
            remote: remote.to_string(),
        };
        let mut counters = RemoteCounters::default();
        for ((_, _, field), family) in &self.counters {
            *field(&mut counters) = family.get_or_create(&label).clone();
        }
        let durations = ServedFrom::ALL.map(|source| {
            let labels = RequestLabels {
                remote: remote.to_string(),
                source,
            };
            self.requests.get_or_create(&labels).clone()
        });
        RemoteMetrics {
            counters,
            durations,
            upstream: self.upstream.get_or_create(&label).clone(),
        }
    }
}

/// How a configuration reload ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    Applied,
    Refused,
}

impl EncodeLabelValue for ReloadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let word = match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Refused => "refused",
        };
        std::fmt::Write::write_str(encoder, word)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    result: ReloadResult,
}

impl Metrics {
    pub fn new<'a>(remotes: impl IntoIterator<Item = &'a String>) -> Self {
        let mut registry = Registry::default();
        let families = Families {
            counters: COUNTERS.map(|spec| (spec, Family::<RemoteLabel, Counter>::default())),
            requests: Family::new_with_constructor(duration_histogram),
            upstream: Family::new_with_constructor(duration_histogram),
        };
        for ((name, help, _), family) in &families.counters {
            registry.register(*name, *help, family.clone());
        }
        registry.register(
            "artifactd_request_duration_seconds",
            "Time from a request's arrival to its last byte, by remote and where the body came from.",
            families.requests.clone(),
        );
        registry.register(
            "artifactd_upstream_response_seconds",
            "Time from sending a request upstream to the upstream's response header.",
            families.upstream.clone(),
        );
        let reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "artifactd_config_reloads",
            "Reloads of the configuration (SIGHUP): applied, or refused and the running one kept.",
            reloads.clone(),
        );
        let metrics = Metrics {
            registry,
            families,
            remotes: ArcSwap::default(),
            reloads,
        };
        metrics.add_remotes(remotes);
        metrics
    }

    /// Creates the handles of remotes not yet known (at start, and for the
    /// remotes a reload adds); a removed remote keeps its series.
    pub fn add_remotes<'a>(&self, remotes: impl IntoIterator<Item = &'a String>) {
        let names: Vec<&String> = remotes.into_iter().collect();
        self.remotes.rcu(|known| {
            let mut grown = HashMap::clone(known);
            for name in &names {
                if !grown.contains_key(*name) {
                    grown.insert(name.to_string(), Arc::new(self.families.handles_of(name)));
                }
            }
            grown
        });
    }

    /// Counts a reload of the configuration.
    pub fn reloaded(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabel { result }).inc();
    }

    /// Adds the values other parts of artifactd own, read at each scrape.
    pub fn register_scraped(&mut self, scraped: Scraped) {
        self.registry.register_collector(Box::new(scraped));
    }

    /// Records one finished request.
    pub fn record(&self, request: &Request<'_>) {
        let remotes = self.remotes.load();
        let Some(m) = remotes.get(request.remote) else {
            return;
        };
        let c = &m.counters;
        let counter = match request.outcome {
            Outcome::Hit => Some(&c.hits),
            Outcome::Miss => Some(&c.misses),
            Outcome::Revalidated => Some(&c.revalidations),
            Outcome::Denied => Some(&c.denied),
            Outcome::Upload => Some(&c.uploads),
            Outcome::Other => None,
        };
        if let Some(counter) = counter {
            counter.inc();
        }
        if request.upstream_error {
            c.upstream_errors.inc();
        }
        if request.fast_path {
            c.fast_hits.inc();
        }
        c.bytes_served.inc_by(request.bytes);
        m.durations[request.source as usize].observe(request.duration.as_secs_f64());
        if let Some(upstream) = request.upstream {
            m.upstream.observe(upstream.as_secs_f64());
        }
    }

    /// Counts an upstream body that did not match its digest.
    pub fn digest_mismatch(&self, remote: &str) {
        if let Some(m) = self.remotes.load().get(remote) {
            m.counters.digest_mismatches.inc();
        }
    }

    /// Counts a package file refused because it did not match the checksum
    /// its index published.
    pub fn checksum_mismatch(&self, remote: &str) {
        if let Some(m) = self.remotes.load().get(remote) {
            m.counters.checksum_mismatches.inc();
        }
    }

    /// The OpenMetrics text exposition, which Prometheus reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::error!("encoding metrics: {e}");
        }
        out
    }
}

/// Values owned elsewhere, encoded at each scrape.
pub struct Scraped {
    pub breakers: Arc<Breakers>,
    pub storage: &'static CacheStorage,
    pub catalog_writer: Arc<CatalogWriter>,
    pub rewrites: Arc<crate::rewrites::Rewrites>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let states = self.breakers.states();
        let mut up = encoder.encode_descriptor(
            "artifactd_remote_up",
            "Whether requests reach the remote's upstream (0: marked down by the circuit breaker).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (remote, state) in &states {
            let labels = [("remote", remote.as_str())];
            ConstGauge::new(i64::from(*state == "up")).encode(up.encode_family(&labels)?)?;
        }
        let mut rejected = encoder.encode_descriptor(
            "artifactd_breaker_rejections",
            "Requests not sent upstream because the remote was marked down.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (remote, count) in self.breakers.rejections() {
            let labels = [("remote", remote.as_str())];
            ConstCounter::new(count).encode(rejected.encode_family(&labels)?)?;
        }
        let stats = self.storage.stats();
        let (rewritten, rewritten_bytes, rewrites_made) = self.rewrites.usage();
        let gauges = [
            (
                "artifactd_cache_bytes",
                "Bytes of cached bodies stored.",
                stats.bytes,
            ),
            (
                "artifactd_cache_objects",
                "Cached objects stored.",
                stats.objects,
            ),
            (
                "artifactd_cache_index_bytes_per_entry",
                "Memory of the in-memory index per cached object.",
                stats.index_bytes_per_entry,
            ),
            (
                "artifactd_rewritten_documents",
                "Index documents kept rewritten for their clients.",
                rewritten as u64,
            ),
            (
                "artifactd_rewritten_documents_bytes",
                "Bytes of index documents kept rewritten for their clients.",
                rewritten_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            encode_one(&mut encoder, name, help, &ConstGauge::new(value as i64))?;
        }
        let counters = [
            (
                "artifactd_cache_evictions",
                "Objects evicted to keep the cache within its bounds.",
                stats.evictions,
            ),
            (
                "artifactd_cache_evicted_bytes",
                "Bytes reclaimed by eviction.",
                stats.bytes_reclaimed,
            ),
            (
                "artifactd_rewritten_documents_made",
                "Index document rewrites kept since start (each served every later hit on its version and client base).",
                rewrites_made,
            ),
            (
                "artifactd_catalog_events_dropped",
                "Catalog events lost to a full queue.",
                self.catalog_writer.dropped(),
            ),
        ];
        for (name, help, value) in counters {
            encode_one(&mut encoder, name, help, &ConstCounter::new(value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(remote: &str, outcome: Outcome, source: ServedFrom, bytes: u64) -> Request<'_> {
        Request {
            remote,
            outcome,
            source,
            bytes,
            upstream_error: outcome == Outcome::Miss,
            duration: Duration::from_millis(3),
            upstream: (source == ServedFrom::Miss).then_some(Duration::from_millis(2)),
            fast_path: false,
        }
    }

    #[test]
    fn counters_and_histograms_render_per_remote() {
        let names = vec!["a".to_string(), "b".to_string()];
        let m = Metrics::new(&names);
        m.record(&request("a", Outcome::Hit, ServedFrom::Hit, 10));
        m.record(&request("a", Outcome::Miss, ServedFrom::Miss, 5));
        m.record(&request("unknown", Outcome::Hit, ServedFrom::Hit, 1));
        let text = m.render();
        assert!(
            text.contains("artifactd_cache_hits_total{remote=\"a\"} 1"),
            "{text}"
        );
        assert!(text.contains("artifactd_cache_hits_total{remote=\"b\"} 0"));
        assert!(text.contains("artifactd_bytes_served_total{remote=\"a\"} 15"));
        assert!(text.contains("artifactd_upstream_errors_total{remote=\"a\"} 1"));
        assert!(text.contains(
            "artifactd_request_duration_seconds_bucket{le=\"0.005\",remote=\"a\",source=\"hit\"} 1"
        ) || text.contains(
            "artifactd_request_duration_seconds_bucket{remote=\"a\",source=\"hit\",le=\"0.005\"} 1"
        ), "{text}");
        assert!(
            text.contains("artifactd_upstream_response_seconds_count{remote=\"a\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
