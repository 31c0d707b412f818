//! Mirror counters and gauges; the root registers them on its `/metrics` registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Clone, Default, Debug)]
pub struct MirrorMetrics {
    pub sent_records: Family<Labels, Counter>,
    pub sent_bytes: Family<Labels, Counter>,
    pub received_records: Family<Labels, Counter>,
    pub received_bytes: Family<Labels, Counter>,
    pub duplicates: Family<Labels, Counter>,
    pub gaps: Family<Labels, Counter>,
    pub gap_records: Family<Labels, Counter>,
    pub reconnects: Family<Labels, Counter>,
    pub lag_records: Family<Labels, Gauge>,
    pub lag_bytes: Family<Labels, Gauge>,
    pub lag_seconds: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub connected: Family<Labels, Gauge>,
    pub heartbeat_timestamp: Family<Labels, Gauge>,
    pub checkpoints: Family<Labels, Counter>,
    pub deleted_unmirrored: Family<Labels, Counter>,
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl MirrorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mirror");
        r.register(
            "sent_records",
            "Records the hub acknowledged (edge side), by topic",
            self.sent_records.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes of stored batches the hub acknowledged (edge side), by topic",
            self.sent_bytes.clone(),
        );
        r.register(
            "received_records",
            "Records appended from edges (hub side), by edge and topic",
            self.received_records.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of batches appended from edges (hub side), by edge and topic",
            self.received_bytes.clone(),
        );
        r.register(
            "duplicates",
            "Batches received that the hub already held (skipped), by edge and topic",
            self.duplicates.clone(),
        );
        r.register(
            "gaps",
            "Gaps: ranges an edge deleted before they were mirrored, by edge and topic",
            self.gaps.clone(),
        );
        r.register(
            "gap_records",
            "Offsets lost in gaps, by edge and topic",
            self.gap_records.clone(),
        );
        r.register(
            "reconnects",
            "Connections to the hub opened after the first (edge side)",
            self.reconnects.clone(),
        );
        r.register(
            "lag_records",
            "Records stored on the edge and not yet acknowledged by the hub, by topic and partition",
            self.lag_records.clone(),
        );
        r.register(
            "lag_bytes",
            "Stored bytes on the edge not yet acknowledged by the hub, by topic and partition",
            self.lag_bytes.clone(),
        );
        r.register(
            "lag_seconds",
            "Age of the oldest record sent and not yet acknowledged (0 when caught up), by topic and partition",
            self.lag_seconds.clone(),
        );
        r.register(
            "heartbeat_timestamp_seconds",
            "Edge clock time of the newest heartbeat the hub holds, by edge (age = time() - this)",
            self.heartbeat_timestamp.clone(),
        );
        r.register(
            "checkpoints",
            "Group offsets committed on the hub from edge checkpoints, by edge",
            self.checkpoints.clone(),
        );
        r.register(
            "deleted_unmirrored_records",
            "Records the edge's retention or disk budget deleted before the hub had them, by topic",
            self.deleted_unmirrored.clone(),
        );
        r.register(
            "connected",
            "1 while the link is up: per hub on an edge, per edge on a hub",
            self.connected.clone(),
        );
    }
}
