//! The values other parts of artifactd own, encoded at each scrape:
//! breaker states, what each remote stores against the bounds, eviction,
//! fills in progress, the catalog's queue, rewritten documents and the
//! process itself. Reading them costs nothing between scrapes.

use crate::breakers::Breakers;
use crate::catalog::CatalogWriter;
use crate::storage::CacheStorage;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

/// Values owned elsewhere, encoded at each scrape.
pub struct Scraped {
    pub connections: Arc<crate::connections::Connections>,
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

/// A family of one metric without labels.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A family with one series per remote.
fn encode_per_remote<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: impl IntoIterator<Item = (String, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (remote, metric) in series {
        let labels = [("remote", remote.as_str())];
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// An unlabelled metric: name, help and value.
type Plain<'a> = (&'a str, &'a str, u64);

fn encode_gauges(encoder: &mut DescriptorEncoder, gauges: &[Plain]) -> Result<(), std::fmt::Error> {
    for (name, help, value) in gauges {
        encode_one(encoder, name, help, &gauge(*value))?;
    }
    Ok(())
}

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[Plain],
) -> Result<(), std::fmt::Error> {
    for (name, help, value) in counters {
        encode_one(encoder, name, help, &ConstCounter::new(*value))?;
    }
    Ok(())
}

fn gauge(value: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Scraped {
    fn encode_breakers(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let states = self.breakers.states();
        encode_per_remote(
            encoder,
            "artifactd_remote_up",
            "Whether requests reach the remote's upstream (0: marked down by the circuit breaker).",
            MetricType::Gauge,
            states
                .iter()
                .map(|(remote, state)| (remote.clone(), gauge(u64::from(*state == "up")))),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "artifactd_breaker_state",
                "The circuit breaker's state per remote: 1 for the state it is in (up, down, probing).",
                None,
                MetricType::Gauge,
            )?;
            for (remote, state) in &states {
                for word in ["up", "down", "probing"] {
                    let labels = [("remote", remote.as_str()), ("state", word)];
                    gauge(u64::from(*state == word)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        encode_per_remote(
            encoder,
            "artifactd_breaker_rejections",
            "Requests not sent upstream because the remote was marked down.",
            MetricType::Counter,
            (self.breakers.rejections().into_iter())
                .map(|(remote, count)| (remote, ConstCounter::new(count))),
        )
    }

    fn encode_storage(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = self.storage.usage_by_remote();
        encode_per_remote(
            encoder,
            "artifactd_cache_bytes",
            "Bytes of cached bodies stored, by remote.",
            MetricType::Gauge,
            usage.iter().map(|(r, u)| (r.clone(), gauge(u.bytes))),
        )?;
        encode_per_remote(
            encoder,
            "artifactd_cache_objects",
            "Cached objects stored, by remote.",
            MetricType::Gauge,
            usage.iter().map(|(r, u)| (r.clone(), gauge(u.objects))),
        )?;
        let bounds = self.storage.bounds();
        let stats = self.storage.stats();
        let mut gauges = vec![
            (
                "artifactd_cache_max_objects",
                "The most objects the cache keeps (cache.memory_index_entries).",
                bounds.max_entries,
            ),
            (
                "artifactd_cache_index_bytes_per_entry",
                "Memory of the in-memory index per cached object.",
                stats.index_bytes_per_entry,
            ),
        ];
        if let Some(max) = bounds.max_size {
            gauges.push((
                "artifactd_cache_max_bytes",
                "The most bytes of bodies the cache keeps (cache.max_size).",
                max,
            ));
        }
        if let Some(free) = self.storage.bodies().free_bytes() {
            gauges.push((
                "artifactd_storage_free_bytes",
                "Free bytes on the filesystem of the body store.",
                free,
            ));
        }
        if let Some(min_free) = bounds.min_free {
            gauges.push((
                "artifactd_storage_min_free_bytes",
                "The free space eviction keeps on the body store's filesystem (cache.min_free).",
                min_free,
            ));
        }
        encode_gauges(encoder, &gauges)?;
        let (no_room, write_failed) = self.storage.room.counts();
        let mut family = encoder.encode_descriptor(
            "artifactd_cache_unstored",
            "Misses served whole without being kept: no_room (too little free space to admit the fill), write_failed (storing failed midway).",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in [("no_room", no_room), ("write_failed", write_failed)] {
            let labels = [("reason", reason)];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
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
        ];
        encode_counters(encoder, &counters)
    }

    fn encode_fills(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fills = self.storage.fills_in_progress();
        let followers: usize = fills.iter().map(|f| f.followers).sum();
        let stalled = fills.iter().map(|f| f.idle).max().unwrap_or_default();
        encode_one(
            encoder,
            "artifactd_fills_in_progress",
            "Upstream responses being written into the cache on this node now.",
            &gauge(fills.len() as u64),
        )?;
        encode_one(
            encoder,
            "artifactd_fill_followers",
            "Requests streaming a fill in progress from the cache while it is written.",
            &gauge(followers as u64),
        )?;
        encode_one(
            encoder,
            "artifactd_fill_idle_seconds",
            "The longest any fill in progress has gone without receiving a byte (0 without fills).",
            &ConstGauge::new(stalled.as_secs_f64()),
        )
    }

    fn encode_queues(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (rewritten, rewritten_bytes, rewrites_made) = self.rewrites.usage();
        let gauges = [
            (
                "artifactd_client_connections",
                "Client connections open now (limits.max_connections).",
                self.connections.count() as u64,
            ),
            (
                "artifactd_catalog_queue_depth",
                "Catalog events queued and not yet written.",
                self.catalog_writer.queued(),
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
        encode_gauges(encoder, &gauges)?;
        let counters = [
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
        encode_counters(encoder, &counters)
    }
}

/// `process_*` under the names Prometheus's own clients use.
fn encode_process(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(now) = super::process::read() else {
        return Ok(());
    };
    encode_one(
        encoder,
        "process_cpu_seconds",
        "User and system CPU time spent, in seconds.",
        &ConstCounter::new(now.cpu_seconds),
    )?;
    encode_one(
        encoder,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds.",
        &ConstGauge::new(now.start_time_seconds),
    )?;
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            now.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            now.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            now.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            now.max_fds,
        ),
        ("process_threads", "Number of OS threads.", now.threads),
    ];
    encode_gauges(encoder, &gauges)
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_breakers(&mut encoder)?;
        self.encode_storage(&mut encoder)?;
        self.encode_fills(&mut encoder)?;
        self.encode_queues(&mut encoder)?;
        encode_process(&mut encoder)
    }
}
