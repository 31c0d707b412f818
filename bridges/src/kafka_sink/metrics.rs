//! Sink counters and gauges, labelled by sink name (lag also by partition); the root
//! registers them on its `/metrics` registry as `tern_sink_*`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
pub struct SinkMetrics {
    records: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    offset_syncs: Family<Labels, Counter>,
    skipped: Family<Labels, Counter>,
    connected: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
}

/// One sink's handles.
#[derive(Clone)]
pub struct SinkMeters {
    sink: String,
    pub records: Counter,
    pub bytes: Counter,
    pub retries: Counter,
    pub errors: Counter,
    pub offset_syncs: Counter,
    pub skipped: Counter,
    pub connected: Gauge,
    lag: Family<Labels, Gauge>,
}

impl SinkMeters {
    /// Records of a source partition not yet acknowledged by the cluster.
    pub fn set_lag(&self, topic: &str, partition: i32, records: i64) {
        self.lag
            .get_or_create(&vec![
                ("sink".to_string(), self.sink.clone()),
                ("topic".to_string(), topic.to_string()),
                ("partition".to_string(), partition.to_string()),
            ])
            .set(records);
    }
}

impl SinkMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sink");
        r.register(
            "records",
            "Records the cluster acknowledged",
            self.records.clone(),
        );
        r.register(
            "bytes",
            "Stored batch bytes the cluster acknowledged",
            self.bytes.clone(),
        );
        r.register(
            "retries",
            "Produce requests or partitions sent again after a retriable error",
            self.retries.clone(),
        );
        r.register(
            "errors",
            "Sink errors (connection, authentication, refused batches), see logs",
            self.errors.clone(),
        );
        r.register(
            "offset_syncs",
            "Offset-sync records written to the cluster",
            self.offset_syncs.clone(),
        );
        r.register(
            "skipped",
            "Records not forwarded: evicted locally before they were sent, or already in the cluster after a restart",
            self.skipped.clone(),
        );
        r.register(
            "connected",
            "1 while the sink has a producer id from the cluster",
            self.connected.clone(),
        );
        r.register(
            "lag_records",
            "Records of a partition stored here and not yet acknowledged by the cluster",
            self.lag.clone(),
        );
    }

    pub fn meters(&self, sink: &str) -> SinkMeters {
        let labels = vec![("sink".to_string(), sink.to_string())];
        SinkMeters {
            sink: sink.to_string(),
            records: self.records.get_or_create(&labels).clone(),
            bytes: self.bytes.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            errors: self.errors.get_or_create(&labels).clone(),
            offset_syncs: self.offset_syncs.get_or_create(&labels).clone(),
            skipped: self.skipped.get_or_create(&labels).clone(),
            connected: self.connected.get_or_create(&labels).clone(),
            lag: self.lag.clone(),
        }
    }
}
