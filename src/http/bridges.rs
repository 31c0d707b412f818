//! `/v1/bridges`: each configured MQTT bridge and direction, with its connection state and
//! counters (the same numbers `/metrics` has as `tern_mqtt_*`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::broker::Broker;

#[derive(Serialize)]
pub struct BridgeView {
    name: String,
    host: String,
    port: Option<u16>,
    /// `in` (MQTT → tern) or `out` (tern → MQTT).
    direction: &'static str,
    rules: usize,
    connected: bool,
    received: u64,
    appended: u64,
    published: u64,
    dropped: u64,
    reconnects: u64,
    errors: u64,
    inflight: i64,
    /// Seconds since the epoch; 0: never.
    last_error: i64,
}

pub async fn list(State(broker): State<Arc<Broker>>) -> Json<serde_json::Value> {
    let mut bridges = Vec::new();
    for config in &broker.config.bridges.mqtt {
        for (direction, rules) in [("in", config.inbound.len()), ("out", config.outbound.len())] {
            if rules == 0 {
                continue;
            }
            let m = broker.metrics.mqtt.meters(&config.name, direction);
            bridges.push(BridgeView {
                name: config.name.clone(),
                host: config.host.clone(),
                port: config.port,
                direction,
                rules,
                connected: m.connected.get() > 0,
                received: m.received.get(),
                appended: m.appended.get(),
                published: m.published.get(),
                dropped: m.dropped.get(),
                reconnects: m.reconnects.get(),
                errors: m.errors.get(),
                inflight: m.inflight.get(),
                last_error: m.last_error_secs(),
            });
        }
    }
    Json(serde_json::json!({ "bridges": bridges }))
}
