//! Prometheus metrics (prometheus-client). Counters are bumped on the data path; per-
//! partition gauges are refreshed from the logs when `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn topic_label(topic: &str) -> Labels {
    vec![("topic".to_string(), topic.to_string())]
}

/// Handles to labelled series already created, so the data path neither allocates label
/// vectors nor hashes them per request (a family lookup costs both).
#[derive(Default)]
struct SeriesCache {
    topics_in: RwLock<HashMap<String, (Counter, Counter)>>,
    topics_out: RwLock<HashMap<String, (Counter, Counter)>>,
    requests: RwLock<HashMap<&'static str, Histogram>>,
}

/// The cached pair for `topic`, created from `families` on first use.
fn topic_series(
    cache: &RwLock<HashMap<String, (Counter, Counter)>>,
    families: (&Family<Labels, Counter>, &Family<Labels, Counter>),
    topic: &str,
) -> (Counter, Counter) {
    if let Some(pair) = cache
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(topic)
    {
        return pair.clone();
    }
    let labels = topic_label(topic);
    let pair = (
        families.0.get_or_create(&labels).clone(),
        families.1.get_or_create(&labels).clone(),
    );
    cache
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(topic.to_string(), pair.clone());
    pair
}

pub struct Metrics {
    registry: Registry,
    series: SeriesCache,
    records_in: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    records_out: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram>,
    request_errors: Family<Labels, Counter>,
    fsync_seconds: Histogram,
    fsync_partitions: Counter,
    pub connections: Gauge,
    pub connections_rejected: Counter,
    pub auth_failures: Counter,
    pub authorization_denied: crate::acls::authorizer::Denied,
    group_lag: Family<Labels, Gauge>,
    group_max_lag: Family<Labels, Gauge>,
    group_status: Family<Labels, Gauge>,
    pub bad_requests: Counter,
    log_size: Family<Labels, Gauge>,
    log_segments: Family<Labels, Gauge>,
    log_start: Family<Labels, Gauge>,
    log_end: Family<Labels, Gauge>,
    cleaner_dirty_ratio: Family<Labels, Gauge<f64, AtomicU64>>,
    cleaner_last_clean: Family<Labels, Gauge>,
    cleaner_reclaimed: Family<Labels, Gauge>,
    pub cleaner_passes: Counter,
    pub cleaner_reclaimed_bytes: Counter,
    pub cleaner_errors: Counter,
    pub retention_deleted_bytes: Counter,
    pub budget_evicted_bytes: Counter,
    pub stored_bytes: Gauge<u64, AtomicU64>,
    pub offset_commits: Counter,
    pub fsync_errors: Counter,
    pub fenced_partitions: Gauge,
    pub corrupt_batches: Counter,
    pub quarantined_ranges: Gauge,
    pub mqtt: tern_bridges::metrics::BridgeMetrics,
    pub sinks: tern_bridges::kafka_sink::metrics::SinkMetrics,
    pub mirror: tern_mirror::metrics::MirrorMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tern");
        let m = Metrics {
            series: SeriesCache::default(),
            records_in: Family::default(),
            bytes_in: Family::default(),
            records_out: Family::default(),
            bytes_out: Family::default(),
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            request_errors: Family::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            fsync_partitions: Counter::default(),
            connections: Gauge::default(),
            connections_rejected: Counter::default(),
            auth_failures: Counter::default(),
            authorization_denied: Default::default(),
            group_lag: Family::default(),
            group_max_lag: Family::default(),
            group_status: Family::default(),
            bad_requests: Counter::default(),
            log_size: Family::default(),
            log_segments: Family::default(),
            log_start: Family::default(),
            log_end: Family::default(),
            cleaner_dirty_ratio: Family::default(),
            cleaner_last_clean: Family::default(),
            cleaner_reclaimed: Family::default(),
            cleaner_passes: Counter::default(),
            cleaner_reclaimed_bytes: Counter::default(),
            cleaner_errors: Counter::default(),
            retention_deleted_bytes: Counter::default(),
            budget_evicted_bytes: Counter::default(),
            stored_bytes: Gauge::default(),
            offset_commits: Counter::default(),
            fsync_errors: Counter::default(),
            fenced_partitions: Gauge::default(),
            corrupt_batches: Counter::default(),
            quarantined_ranges: Gauge::default(),
            mqtt: Default::default(),
            sinks: Default::default(),
            mirror: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_in",
            "Records appended by producers",
            m.records_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes appended by producers, as stored",
            m.bytes_in.clone(),
        );
        registry.register(
            "records_out",
            "Records served to fetchers",
            m.records_out.clone(),
        );
        registry.register("bytes_out", "Bytes served to fetchers", m.bytes_out.clone());
        registry.register(
            "request_duration_seconds",
            "Kafka request handling time by API, including durability waits and long polls",
            m.request_seconds.clone(),
        );
        registry.register(
            "request_errors",
            "Kafka requests answered with an error, by API",
            m.request_errors.clone(),
        );
        registry.register(
            "fsync_duration_seconds",
            "Duration of one group-commit fsync round",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "fsync_partitions",
            "Partition fsyncs done by group commit",
            m.fsync_partitions.clone(),
        );
        registry.register(
            "log_cleaner_dirty_ratio",
            "Compacted partitions: not yet cleaned bytes / cleanable bytes (cleaned at min.cleanable.dirty.ratio)",
            m.cleaner_dirty_ratio.clone(),
        );
        registry.register(
            "log_cleaner_last_clean_timestamp_seconds",
            "Compacted partitions: when a cleaner pass last changed the log (0: not since start)",
            m.cleaner_last_clean.clone(),
        );
        registry.register(
            "log_cleaner_partition_reclaimed_bytes",
            "Compacted partitions: bytes the cleaner reclaimed since start",
            m.cleaner_reclaimed.clone(),
        );
        registry.register(
            "log_cleaner_passes",
            "Cleaner passes run over compacted partitions",
            m.cleaner_passes.clone(),
        );
        registry.register(
            "log_cleaner_reclaimed_bytes",
            "Bytes the cleaner reclaimed from compacted partitions",
            m.cleaner_reclaimed_bytes.clone(),
        );
        registry.register(
            "log_cleaner_errors",
            "Cleaner passes that failed (the partition is left as it was)",
            m.cleaner_errors.clone(),
        );
        registry.register(
            "fsync_errors",
            "Failed fsyncs; each fences its partition until it is reopened from disk",
            m.fsync_errors.clone(),
        );
        registry.register(
            "fenced_partitions",
            "Partitions refusing appends after a storage error",
            m.fenced_partitions.clone(),
        );
        registry.register(
            "corrupt_batches",
            "Stored batches that could not be decoded and were skipped by a reader (MQTT bridge)",
            m.corrupt_batches.clone(),
        );
        registry.register(
            "quarantined_ranges",
            "Damaged byte ranges of segments found (by reads or the scrub) and quarantined since start",
            m.quarantined_ranges.clone(),
        );
        registry.register(
            "connections",
            "Open Kafka connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections refused at the connection limit",
            m.connections_rejected.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed SASL authentications, and requests sent before authenticating",
            m.auth_failures.clone(),
        );
        registry.register(
            "consumer_group_lag",
            "Records a consumer group is behind, over all its partitions",
            m.group_lag.clone(),
        );
        registry.register(
            "consumer_group_max_lag",
            "The largest lag of one partition of the group",
            m.group_max_lag.clone(),
        );
        registry.register(
            "consumer_group_status",
            "Burrow's status of the group: 1 OK, 2 WARN, 3 ERR",
            m.group_status.clone(),
        );
        registry.register(
            "authorization_denied",
            "Operations refused by the ACLs, by resource type",
            m.authorization_denied.clone(),
        );
        registry.register(
            "bad_requests",
            "Kafka connections closed for malformed or oversized requests",
            m.bad_requests.clone(),
        );
        registry.register(
            "log_size_bytes",
            "Bytes on disk per partition",
            m.log_size.clone(),
        );
        registry.register(
            "log_segments",
            "Segments per partition",
            m.log_segments.clone(),
        );
        registry.register(
            "log_start_offset",
            "First offset still stored per partition",
            m.log_start.clone(),
        );
        registry.register(
            "log_end_offset",
            "High watermark (end of the fsynced log) per partition",
            m.log_end.clone(),
        );
        registry.register(
            "retention_deleted_bytes",
            "Bytes deleted by retention.ms / retention.bytes",
            m.retention_deleted_bytes.clone(),
        );
        registry.register(
            "storage_budget_evicted_bytes",
            "Bytes evicted to keep storage.max_bytes",
            m.budget_evicted_bytes.clone(),
        );
        registry.register(
            "storage_bytes",
            "Bytes stored by all partitions",
            m.stored_bytes.clone(),
        );
        registry.register(
            "offset_commits",
            "OffsetCommit requests made durable",
            m.offset_commits.clone(),
        );
        m.mqtt.register(&mut registry);
        m.sinks.register(&mut registry);
        m.mirror.register(&mut registry);
        Metrics { registry, ..m }
    }

    pub fn record_produce(&self, topic: &str, records: u64, bytes: u64) {
        let families = (&self.records_in, &self.bytes_in);
        let (r, b) = topic_series(&self.series.topics_in, families, topic);
        r.inc_by(records);
        b.inc_by(bytes);
    }

    pub fn record_fetch(&self, topic: &str, records: u64, bytes: u64) {
        let families = (&self.records_out, &self.bytes_out);
        let (r, b) = topic_series(&self.series.topics_out, families, topic);
        r.inc_by(records);
        b.inc_by(bytes);
    }

    pub fn observe_request(&self, api: &'static str, elapsed: Duration, failed: bool) {
        let cached = self
            .series
            .requests
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(api)
            .cloned();
        let histogram = cached.unwrap_or_else(|| {
            let labels = vec![("api".to_string(), api.to_string())];
            let histogram = self.request_seconds.get_or_create(&labels).clone();
            self.series
                .requests
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(api, histogram.clone());
            histogram
        });
        histogram.observe(elapsed.as_secs_f64());
        if failed {
            let labels = vec![("api".to_string(), api.to_string())];
            self.request_errors.get_or_create(&labels).inc();
        }
    }

    pub fn observe_fsync(&self, elapsed: Duration, partitions: usize) {
        self.fsync_seconds.observe(elapsed.as_secs_f64());
        self.fsync_partitions.inc_by(partitions as u64);
    }

    /// Sets the per-partition gauges (called at scrape time).
    pub fn set_partition(
        &self,
        topic: &str,
        partition: i32,
        size: u64,
        segments: usize,
        start: i64,
        end: i64,
    ) {
        let labels = vec![
            ("topic".to_string(), topic.to_string()),
            ("partition".to_string(), partition.to_string()),
        ];
        self.log_size.get_or_create(&labels).set(size as i64);
        self.log_segments
            .get_or_create(&labels)
            .set(segments as i64);
        self.log_start.get_or_create(&labels).set(start);
        self.log_end.get_or_create(&labels).set(end);
    }

    /// Sets a group's lag gauges (called at scrape time).
    pub fn set_group(&self, group: &str, total_lag: i64, max_lag: i64, status: i64) {
        let labels = vec![("group".to_string(), group.to_string())];
        self.group_lag.get_or_create(&labels).set(total_lag);
        self.group_max_lag.get_or_create(&labels).set(max_lag);
        self.group_status.get_or_create(&labels).set(status);
    }

    /// Forgets the gauges of deleted groups.
    pub fn clear_groups(&self) {
        self.group_lag.clear();
        self.group_max_lag.clear();
        self.group_status.clear();
    }

    /// Forgets the gauges of deleted topics.
    pub fn clear_partitions(&self) {
        self.log_size.clear();
        self.log_segments.clear();
        self.log_start.clear();
        self.log_end.clear();
        self.cleaner_dirty_ratio.clear();
        self.cleaner_last_clean.clear();
        self.cleaner_reclaimed.clear();
    }

    /// Sets a compacted partition's cleaner gauges (called at scrape time).
    pub fn set_cleaner(&self, topic: &str, partition: i32, stats: &crate::log::CleanerStats) {
        let labels = vec![
            ("topic".to_string(), topic.to_string()),
            ("partition".to_string(), partition.to_string()),
        ];
        self.cleaner_dirty_ratio
            .get_or_create(&labels)
            .set(stats.dirty_ratio);
        self.cleaner_last_clean
            .get_or_create(&labels)
            .set(stats.last_clean_ms.unwrap_or(0) / 1000);
        self.cleaner_reclaimed
            .get_or_create(&labels)
            .set(stats.bytes_reclaimed as i64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
