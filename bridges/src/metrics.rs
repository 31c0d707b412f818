//! Bridge counters and gauges, labelled by bridge name; the root registers them on its
//! `/metrics` registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
pub struct BridgeMetrics {
    received: Family<Labels, Counter>,
    appended: Family<Labels, Counter>,
    acked: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    published: Family<Labels, Counter>,
    reconnects: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    inflight: Family<Labels, Gauge>,
    connected: Family<Labels, Gauge>,
    last_error: Family<Labels, Gauge>,
}

/// One bridge's handles.
#[derive(Clone)]
pub struct Meters {
    pub received: Counter,
    pub appended: Counter,
    pub acked: Counter,
    pub dropped: Counter,
    pub published: Counter,
    pub reconnects: Counter,
    pub errors: Counter,
    pub inflight: Gauge,
    pub connected: Gauge,
    last_error: Gauge,
}

impl Meters {
    /// When the last error happened (seconds since the epoch), 0 if never.
    pub fn last_error_secs(&self) -> i64 {
        self.last_error.get()
    }

    /// Counts an error and stamps its time (seconds since the epoch).
    pub fn error(&self) {
        self.errors.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.last_error.set(now);
    }
}

impl BridgeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mqtt");
        r.register(
            "received",
            "MQTT messages received by inbound rules",
            self.received.clone(),
        );
        r.register(
            "appended",
            "Records appended durably from MQTT messages",
            self.appended.clone(),
        );
        r.register(
            "acked",
            "MQTT messages acknowledged (PUBACK) after their append",
            self.acked.clone(),
        );
        r.register("dropped", "MQTT messages or records not bridged (no rule, retained replay, unnameable or rejected), see logs", self.dropped.clone());
        r.register(
            "published",
            "Records published to MQTT and acknowledged by the broker",
            self.published.clone(),
        );
        r.register(
            "reconnects",
            "MQTT connection attempts after the first",
            self.reconnects.clone(),
        );
        r.register(
            "errors",
            "Bridge errors (connection, append, publish)",
            self.errors.clone(),
        );
        r.register("inflight", "Messages received but not yet acknowledged, and records published but not yet acknowledged", self.inflight.clone());
        r.register(
            "connected",
            "1 while the bridge's MQTT connection is up",
            self.connected.clone(),
        );
        r.register(
            "last_error_timestamp_seconds",
            "When the bridge last hit an error",
            self.last_error.clone(),
        );
    }

    /// Handles for `bridge` in `direction` (`in` / `out`).
    pub fn meters(&self, bridge: &str, direction: &str) -> Meters {
        let labels = vec![
            ("bridge".to_string(), bridge.to_string()),
            ("direction".to_string(), direction.to_string()),
        ];
        Meters {
            received: self.received.get_or_create(&labels).clone(),
            appended: self.appended.get_or_create(&labels).clone(),
            acked: self.acked.get_or_create(&labels).clone(),
            dropped: self.dropped.get_or_create(&labels).clone(),
            published: self.published.get_or_create(&labels).clone(),
            reconnects: self.reconnects.get_or_create(&labels).clone(),
            errors: self.errors.get_or_create(&labels).clone(),
            inflight: self.inflight.get_or_create(&labels).clone(),
            connected: self.connected.get_or_create(&labels).clone(),
            last_error: self.last_error.get_or_create(&labels).clone(),
        }
    }
}
