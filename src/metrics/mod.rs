//! Prometheus metrics through `prometheus-client`: requests by remote,
//! source and status class, bytes served and bytes fetched upstream (what
//! the hit ratio by bytes and the egress saved are computed from),
//! request-duration histograms per remote and source, upstream responses
//! and time to first byte, and the values other parts own (breakers,
//! stored bytes, fills, the catalog queue, the process) read at each
//! scrape ([`scraped`]).
//!
//! Every handle (a counter or a histogram for one label set) of a remote is
//! created once, at start or when a reload adds the remote, and kept in a
//! map swapped whole: recording a request is a map lookup and a few atomic
//! adds, with no lock of the metric families on the request path. The
//! status page ([`crate::status`]) reads the same handles, so its ratios
//! are the ones `/metrics` gives.
//!
//! Labels are bounded: a remote (from the configuration), a source, a
//! status class. Never a path or a client.

pub mod exposition;
pub mod process;
pub mod recent;
pub mod scraped;

use crate::served_from::ServedFrom;
use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use recent::{Problem, ProblemKind, Recent};
pub use scraped::Scraped;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What one finished request was, for the counters beside its source
/// and status (which say hit, miss or revalidated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by its remote's patterns.
    Denied,
    /// A file uploaded to a local repository.
    Upload,
    /// Anything else.
    Other,
}

impl EncodeLabelValue for ServedFrom {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// An HTTP status by its first digit; `none` when there was no response
/// (the client left before one was written, or the upstream never
/// answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
    NoResponse,
}

impl StatusClass {
    /// In declaration order, so `class as usize` is a position here.
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::NoResponse,
    ];

    /// The class of `status`; 0 (or anything outside 100–599) is none.
    pub fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::NoResponse,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::NoResponse => "none",
        }
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// What the client got when the upstream failed its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// A cached copy stood in.
    Stale,
    /// Nothing: the client got the error.
    None,
}

impl EncodeLabelValue for Fallback {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let word = match self {
            Fallback::Stale => "stale",
            Fallback::None => "none",
        };
        std::fmt::Write::write_str(encoder, word)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabel {
    remote: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    remote: String,
    source: ServedFrom,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    remote: String,
    source: ServedFrom,
    status: StatusClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    remote: String,
    status: StatusClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    remote: String,
    fallback: Fallback,
}

/// The plain counters of one remote (one label: the remote).
#[derive(Clone, Default)]
struct RemoteCounters {
    upstream_bytes: Counter,
    denied: Counter,
    quarantined: Counter,
    uploads: Counter,
    digest_mismatches: Counter,
    checksum_mismatches: Counter,
    invalid_documents: Counter,
    fast_hits: Counter,
}

/// A counter family: name, help, and which counter of a remote it is.
type CounterSpec = (
    &'static str,
    &'static str,
    fn(&mut RemoteCounters) -> &mut Counter,
);

/// The plain counter families, each with a handle per remote.
const COUNTERS: [CounterSpec; 8] = [
    (
        "artifactd_upstream_bytes",
        "Response body bytes received from upstreams (not from other nodes of a cluster)",
        |c| &mut c.upstream_bytes,
    ),
    (
        "artifactd_denied_requests",
        "Requests refused by a remote's patterns",
        |c| &mut c.denied,
    ),
    (
        "artifactd_quarantined_requests",
        "Requests refused because the artifact is inside its remote's quarantine period",
        |c| &mut c.quarantined,
    ),
    (
        "artifactd_uploads",
        "Files uploaded to local repositories",
        |c| &mut c.uploads,
    ),
    (
        "artifactd_digest_mismatches",
        "Upstream manifests and blobs refused because they did not match their digest",
        |c| &mut c.digest_mismatches,
    ),
    (
        "artifactd_checksum_mismatches",
        "Package files refused because they did not match the checksum their index published",
        |c| &mut c.checksum_mismatches,
    ),
    (
        "artifactd_invalid_documents",
        "Upstream index documents refused because they were not well-formed (JSON, YAML, XML) or came compressed unasked",
        |c| &mut c.invalid_documents,
    ),
    (
        "artifactd_fast_path_hits",
        "Hits answered from memory before pingora's phases (part of artifactd_requests_total{source=\"hit\"})",
        |c| &mut c.fast_hits,
    ),
];

/// Seconds, from half a millisecond (a hit from memory) to five minutes
/// (a large layer on a slow link).
const DURATION_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

const SOURCES: usize = ServedFrom::ALL.len();
const CLASSES: usize = StatusClass::ALL.len();

/// What one request contributes to the metrics.
pub struct Request<'a> {
    pub remote: &'a str,
    pub outcome: Outcome,
    pub source: ServedFrom,
    /// The status sent to the client; 0 when none was.
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// Body bytes received from the upstream for this request.
    pub upstream_bytes: u64,
    pub upstream_error: bool,
    /// Refused by its remote's quarantine.
    pub quarantined: bool,
    pub duration: Duration,
    /// Until the upstream's response header, when the upstream was asked.
    pub upstream: Option<Duration>,
    /// Answered by the hit fast path.
    pub fast_path: bool,
}

/// Everything recorded for one remote, found with one lookup per request.
struct RemoteMetrics {
    counters: RemoteCounters,
    /// By [`ServedFrom`], then [`StatusClass`].
    requests: [[Counter; CLASSES]; SOURCES],
    served_bytes: [Counter; SOURCES],
    durations: [Histogram; SOURCES],
    upstream: Histogram,
    upstream_responses: [Counter; CLASSES],
    /// By [`Fallback`]: stale, none.
    upstream_errors: [Counter; 2],
}

/// The families every remote's handles come from (each an `Arc` inside).
struct Families {
    counters: [(CounterSpec, Family<RemoteLabel, Counter>); COUNTERS.len()],
    requests: Family<RequestLabels, Counter>,
    served_bytes: Family<SourceLabels, Counter>,
    durations: Family<SourceLabels, Histogram>,
    upstream: Family<RemoteLabel, Histogram>,
    upstream_responses: Family<StatusLabels, Counter>,
    upstream_errors: Family<FallbackLabels, Counter>,
}

impl Families {
    fn new() -> Families {
        Families {
            counters: COUNTERS.map(|spec| (spec, Family::default())),
            requests: Family::default(),
            served_bytes: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            upstream: Family::new_with_constructor(duration_histogram),
            upstream_responses: Family::default(),
            upstream_errors: Family::default(),
        }
    }

    /// Help texts go without a final period: the registry adds one.
    fn register(&self, registry: &mut Registry) {
        for ((name, help, _), family) in &self.counters {
            registry.register(*name, *help, family.clone());
        }
        registry.register(
            "artifactd_requests",
            "Requests by remote, where the body came from (hit, stale, revalidated: the cache; miss: the upstream) and the status class sent",
            self.requests.clone(),
        );
        registry.register(
            "artifactd_served_bytes",
            "Response body bytes sent to clients, by remote and where they came from",
            self.served_bytes.clone(),
        );
        registry.register(
            "artifactd_request_duration_seconds",
            "Time from a request's arrival to its last byte, by remote and where the body came from",
            self.durations.clone(),
        );
        registry.register(
            "artifactd_upstream_response_seconds",
            "Time from sending a request upstream to the upstream's response header",
            self.upstream.clone(),
        );
        registry.register(
            "artifactd_upstream_responses",
            "Upstream responses by status class; none: the upstream was asked and never answered (refused, timed out)",
            self.upstream_responses.clone(),
        );
        registry.register(
            "artifactd_upstream_errors",
            "Requests whose upstream failed or answered 5xx, by what the client got instead: a stale copy, or none (the error)",
            self.upstream_errors.clone(),
        );
    }

    fn handles_of(&self, remote: &str) -> RemoteMetrics {
        let remote = remote.to_string();
        let label = RemoteLabel {
            remote: remote.clone(),
        };
        let mut counters = RemoteCounters::default();
        for ((_, _, field), family) in &self.counters {
            *field(&mut counters) = family.get_or_create(&label).clone();
        }
        let by_source = |source: ServedFrom| SourceLabels {
            remote: remote.clone(),
            source,
        };
        let by_status = |status: StatusClass| StatusLabels {
            remote: remote.clone(),
            status,
        };
        let by_fallback = |fallback: Fallback| FallbackLabels {
            remote: remote.clone(),
            fallback,
        };
        RemoteMetrics {
            counters,
            requests: ServedFrom::ALL.map(|source| {
                StatusClass::ALL.map(|status| {
                    let labels = RequestLabels {
                        remote: remote.clone(),
                        source,
                        status,
                    };
                    self.requests.get_or_create(&labels).clone()
                })
            }),
            served_bytes: ServedFrom::ALL
                .map(|source| self.served_bytes.get_or_create(&by_source(source)).clone()),
            durations: ServedFrom::ALL
                .map(|source| self.durations.get_or_create(&by_source(source)).clone()),
            upstream: self.upstream.get_or_create(&label).clone(),
            upstream_responses: StatusClass::ALL.map(|status| {
                (self.upstream_responses)
                    .get_or_create(&by_status(status))
                    .clone()
            }),
            upstream_errors: [Fallback::Stale, Fallback::None].map(|fallback| {
                (self.upstream_errors)
                    .get_or_create(&by_fallback(fallback))
                    .clone()
            }),
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
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FirewallLabels {
    remote: String,
    rule: String,
    action: FirewallAction,
}

/// What the artifact firewall did to a release.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FirewallAction {
    /// Refused a request for it.
    Refused,
    /// Served it, marked, under a dry-run rule.
    DryRun,
    /// Deleted its cached copy (`purge: true`).
    Purged,
}

impl EncodeLabelValue for FirewallAction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let word = match self {
            FirewallAction::Refused => "refused",
            FirewallAction::DryRun => "dry_run",
            FirewallAction::Purged => "purged",
        };
        std::fmt::Write::write_str(encoder, word)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    result: ReloadResult,
}

/// The version and the commit it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("ARTIFACTD_REVISION");

pub struct Metrics {
    registry: Registry,
    families: Families,
    /// Swapped whole when a reload adds remotes; the request path reads it
    /// without a lock.
    remotes: ArcSwap<HashMap<String, Arc<RemoteMetrics>>>,
    reloads: Family<ReloadLabel, Counter>,
    firewall: Family<FirewallLabels, Counter>,
    firewall_loads: Family<ReloadLabel, Counter>,
    /// Client connections answered and closed before their request was
    /// read (`limits`), by reason.
    client_refusals: Family<ReasonLabel, Counter>,
    /// Requests inside pingora's phases now (the fast path's hits, which
    /// take microseconds, are not counted).
    in_flight: Gauge,
    /// Whether the body store answered the last readiness check.
    ready: Gauge,
    backends: Family<BackendLabel, Gauge>,
    /// Upstream failures and refused bodies, for the status page.
    pub recent: Recent,
}

/// Holds one request in [`Metrics`]'s in-flight gauge until dropped.
pub struct InFlightRequest(Gauge);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new<'a>(remotes: impl IntoIterator<Item = &'a String>) -> Self {
        let mut registry = Registry::default();
        let families = Families::new();
        families.register(&mut registry);
        let reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "artifactd_config_reloads",
            "Reloads of the configuration (SIGHUP): applied, or refused and the running one kept",
            reloads.clone(),
        );
        let firewall = Family::<FirewallLabels, Counter>::default();
        registry.register(
            "artifactd_firewall_decisions",
            "Releases the artifact firewall refused, served marked under a dry-run rule, or purged from storage",
            firewall.clone(),
        );
        let firewall_loads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "artifactd_firewall_loads",
            "Loads of changed firewall rules and feeds: applied, or refused and the rules in force kept",
            firewall_loads.clone(),
        );
        let client_refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "artifactd_client_refusals",
            "Client connections answered and closed before their request was read: connections (none idle to make room), header_timeout, header_too_large, uri_too_long",
            client_refusals.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "artifactd_requests_in_flight",
            "Requests being served now (hits answered by the fast path are not counted)",
            in_flight.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "artifactd_ready",
            "Whether the node is ready (its body store answered the last check, made at each scrape)",
            ready.clone(),
        );
        let backends = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "artifactd_backend_up",
            "Whether each backend answered the last check: storage, catalog, and redis when configured",
            backends.clone(),
        );
        // A gauge of 1, not OpenMetrics' `info` type: the Prometheus text
        // parsers (promtool's among them) know only the four classic types.
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: VERSION,
                revision: REVISION,
            })
            .set(1);
        registry.register(
            "artifactd_build_info",
            "The running version and the commit it was built from (always 1)",
            build,
        );
        let metrics = Metrics {
            registry,
            families,
            remotes: ArcSwap::default(),
            reloads,
            firewall,
            firewall_loads,
            client_refusals,
            in_flight,
            ready,
            backends,
            recent: Recent::default(),
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

    /// Counts what the artifact firewall did to a release.
    pub fn firewall(&self, remote: &str, rule: &str, action: FirewallAction) {
        let labels = FirewallLabels {
            remote: remote.to_string(),
            rule: rule.to_string(),
            action,
        };
        self.firewall.get_or_create(&labels).inc();
    }

    /// Counts a load of changed firewall rules.
    pub fn firewall_loaded(&self, result: ReloadResult) {
        self.firewall_loads
            .get_or_create(&ReloadLabel { result })
            .inc();
    }

    /// Counts a client connection refused before its request was read.
    pub fn client_refused(&self, reason: &'static str) {
        self.client_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Adds the values other parts of artifactd own, read at each scrape.
    pub fn register_scraped(&mut self, scraped: Scraped) {
        self.registry.register_collector(Box::new(scraped));
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn request_started(&self) -> InFlightRequest {
        self.in_flight.inc();
        InFlightRequest(self.in_flight.clone())
    }

    /// What the readiness checks found (`redis` is `None` without Redis).
    pub fn set_backends(&self, storage: bool, catalog: bool, redis: Option<bool>) {
        self.ready.set(i64::from(storage));
        let mut up = vec![("storage", storage), ("catalog", catalog)];
        up.extend(redis.map(|redis| ("redis", redis)));
        for (backend, answered) in up {
            let label = BackendLabel { backend };
            self.backends.get_or_create(&label).set(i64::from(answered));
        }
    }

    /// Requests being served now (see [`Self::request_started`]).
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Records one finished request.
    pub fn record(&self, request: &Request<'_>) {
        let remotes = self.remotes.load();
        let Some(m) = remotes.get(request.remote) else {
            return;
        };
        let c = &m.counters;
        match request.outcome {
            Outcome::Denied => {
                c.denied.inc();
            }
            Outcome::Upload => {
                c.uploads.inc();
            }
            _ => {}
        }
        if request.quarantined {
            c.quarantined.inc();
        }
        if request.upstream_error {
            let fallback = match request.source.is_cached() {
                true => Fallback::Stale,
                false => Fallback::None,
            };
            m.upstream_errors[fallback as usize].inc();
        }
        if request.fast_path {
            c.fast_hits.inc();
        }
        let source = request.source as usize;
        m.requests[source][StatusClass::of(request.status) as usize].inc();
        m.served_bytes[source].inc_by(request.bytes);
        if request.upstream_bytes > 0 {
            c.upstream_bytes.inc_by(request.upstream_bytes);
        }
        m.durations[source].observe(request.duration.as_secs_f64());
        if let Some(upstream) = request.upstream {
            m.upstream.observe(upstream.as_secs_f64());
        }
    }

    /// Counts one upstream response (each hop of a redirect and each
    /// challenge is one), or an upstream asked that never answered (0).
    pub fn upstream_response(&self, remote: &str, status: u16) {
        if let Some(m) = self.remotes.load().get(remote) {
            m.upstream_responses[StatusClass::of(status) as usize].inc();
        }
    }

    /// Counts an upstream body refused because it did not match its
    /// digest or the checksum its index published, and lists it.
    pub fn refused_body(&self, kind: ProblemKind, remote: &str, path: &str, detail: String) {
        if let Some(m) = self.remotes.load().get(remote) {
            let c = &m.counters;
            let counter = match kind {
                ProblemKind::DigestMismatch => Some(&c.digest_mismatches),
                ProblemKind::ChecksumMismatch => Some(&c.checksum_mismatches),
                ProblemKind::InvalidDocument => Some(&c.invalid_documents),
                // Counted with their request.
                ProblemKind::UpstreamError | ProblemKind::ServedStale => None,
            };
            counter.map(Counter::inc);
        }
        self.recent.add(Problem::new(kind, remote, path, detail));
    }

    /// What each remote's counters say now, in name order: what the status
    /// page shows, from the handles `/metrics` encodes.
    pub fn remote_totals(&self) -> Vec<RemoteTotals> {
        let remotes = self.remotes.load();
        let mut totals: Vec<RemoteTotals> = remotes
            .iter()
            .map(|(name, m)| RemoteTotals {
                remote: name.clone(),
                requests: m
                    .requests
                    .each_ref()
                    .map(|by_class| by_class.iter().map(Counter::get).sum()),
                server_errors: (m.requests.iter())
                    .map(|by_class| by_class[StatusClass::ServerError as usize].get())
                    .sum(),
                served_bytes: m.served_bytes.each_ref().map(Counter::get),
                upstream_bytes: m.counters.upstream_bytes.get(),
                upstream_errors: m.upstream_errors.iter().map(Counter::get).sum(),
                mismatches: m.counters.checksum_mismatches.get()
                    + m.counters.digest_mismatches.get(),
                refused: m.counters.denied.get() + m.counters.quarantined.get(),
            })
            .collect();
        totals.sort_by(|a, b| a.remote.cmp(&b.remote));
        totals
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

/// One remote's counters, summed over their labels.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RemoteTotals {
    pub remote: String,
    /// By [`ServedFrom`].
    pub requests: [u64; SOURCES],
    /// Answered 5xx.
    pub server_errors: u64,
    /// By [`ServedFrom`].
    pub served_bytes: [u64; SOURCES],
    pub upstream_bytes: u64,
    pub upstream_errors: u64,
    /// Checksum and digest mismatches.
    pub mismatches: u64,
    /// Denied by patterns or held by quarantine.
    pub refused: u64,
}

impl RemoteTotals {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RemoteTotals) {
        for (at, value) in self.requests.iter_mut().enumerate() {
            *value += other.requests[at];
        }
        for (at, value) in self.served_bytes.iter_mut().enumerate() {
            *value += other.served_bytes[at];
        }
        self.server_errors += other.server_errors;
        self.upstream_bytes += other.upstream_bytes;
        self.upstream_errors += other.upstream_errors;
        self.mismatches += other.mismatches;
        self.refused += other.refused;
    }

    fn sum(values: &[u64; SOURCES], sources: impl Fn(ServedFrom) -> bool) -> u64 {
        ServedFrom::ALL
            .iter()
            .filter(|s| sources(**s))
            .map(|s| values[*s as usize])
            .sum()
    }

    pub fn all_requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// Requests answered from the cache, of those answered from the cache
    /// or the upstream (the dashboard's `artifactd:hit_ratio`).
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(&self.requests)
    }

    /// Body bytes served from the cache, of those served from the cache
    /// or the upstream.
    pub fn byte_hit_ratio(&self) -> Option<f64> {
        ratio(&self.served_bytes)
    }

    /// Bytes served from the cache: what the upstream did not have to send.
    pub fn egress_saved(&self) -> u64 {
        Self::sum(&self.served_bytes, ServedFrom::is_cached)
    }
}

/// Cache-sourced over cache- or upstream-sourced; `None` before either.
fn ratio(values: &[u64; SOURCES]) -> Option<f64> {
    let cached = RemoteTotals::sum(values, ServedFrom::is_cached);
    let fetched = values[ServedFrom::Miss as usize];
    let all = cached + fetched;
    (all > 0).then(|| cached as f64 / all as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(remote: &str, source: ServedFrom, status: u16, bytes: u64) -> Request<'_> {
        Request {
            remote,
            outcome: Outcome::Other,
            source,
            status,
            bytes,
            upstream_bytes: if source == ServedFrom::Miss { bytes } else { 0 },
            upstream_error: status >= 500,
            quarantined: false,
            duration: Duration::from_millis(3),
            upstream: (source == ServedFrom::Miss).then_some(Duration::from_millis(2)),
            fast_path: false,
        }
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }

    #[test]
    fn requests_bytes_and_histograms_render_per_remote() {
        let names = vec!["a".to_string(), "b".to_string()];
        let m = Metrics::new(&names);
        m.record(&request("a", ServedFrom::Hit, 200, 10));
        m.record(&request("a", ServedFrom::Miss, 200, 5));
        m.record(&request("a", ServedFrom::Miss, 502, 0));
        m.record(&request("a", ServedFrom::Stale, 200, 7));
        m.record(&request("unknown", ServedFrom::Hit, 200, 1));
        let text = m.render();
        has(
            &text,
            "artifactd_requests_total{remote=\"a\",source=\"hit\",status=\"2xx\"} 1",
        );
        has(
            &text,
            "artifactd_requests_total{remote=\"a\",source=\"miss\",status=\"5xx\"} 1",
        );
        has(
            &text,
            "artifactd_requests_total{remote=\"b\",source=\"hit\",status=\"2xx\"} 0",
        );
        has(
            &text,
            "artifactd_served_bytes_total{remote=\"a\",source=\"hit\"} 10",
        );
        has(&text, "artifactd_upstream_bytes_total{remote=\"a\"} 5");
        has(
            &text,
            "artifactd_upstream_errors_total{remote=\"a\",fallback=\"none\"} 1",
        );
        has(
            &text,
            "artifactd_request_duration_seconds_bucket{le=\"0.005\",remote=\"a\",source=\"hit\"} 1",
        );
        has(
            &text,
            "artifactd_upstream_response_seconds_count{remote=\"a\"} 2",
        );
        has(
            &text,
            &format!("artifactd_build_info{{version=\"{VERSION}\",revision=\"{REVISION}\"}} 1"),
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn totals_give_the_ratios_the_dashboard_computes() {
        let names = vec!["a".to_string()];
        let m = Metrics::new(&names);
        m.record(&request("a", ServedFrom::Hit, 200, 300));
        m.record(&request("a", ServedFrom::Hit, 200, 300));
        m.record(&request("a", ServedFrom::Revalidated, 200, 300));
        m.record(&request("a", ServedFrom::Miss, 200, 100));
        m.record(&request("a", ServedFrom::Passed, 404, 50));
        let totals = m.remote_totals();
        let a = &totals[0];
        assert_eq!(a.all_requests(), 5);
        assert_eq!(a.hit_ratio(), Some(0.75));
        assert_eq!(a.byte_hit_ratio(), Some(0.9));
        assert_eq!(a.egress_saved(), 900);
        assert_eq!(a.upstream_bytes, 100);
        assert_eq!(RemoteTotals::default().hit_ratio(), None);
    }

    #[test]
    fn in_flight_requests_end_when_their_guard_drops() {
        let m = Metrics::new(&[]);
        let first = m.request_started();
        let second = m.request_started();
        drop(first);
        has(&m.render(), "artifactd_requests_in_flight 1");
        drop(second);
        has(&m.render(), "artifactd_requests_in_flight 0");
    }

    #[test]
    fn status_classes_cover_every_status() {
        assert_eq!(StatusClass::of(0), StatusClass::NoResponse);
        assert_eq!(StatusClass::of(204), StatusClass::Success);
        assert_eq!(StatusClass::of(304), StatusClass::Redirection);
        assert_eq!(StatusClass::of(429), StatusClass::ClientError);
        assert_eq!(StatusClass::of(599), StatusClass::ServerError);
        assert_eq!(StatusClass::of(600), StatusClass::NoResponse);
        for (i, class) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
    }
}
