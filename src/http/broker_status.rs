//! `/v1/broker`: version, uptime, disk use against the budget, and counters a page turns
//! into rates by polling.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use crate::broker::Broker;

#[derive(Serialize)]
pub struct BrokerStatus {
    version: &'static str,
    node_id: i32,
    cluster_id: String,
    uptime_s: u64,
    disk_used_bytes: u64,
    /// `storage.max_bytes`; 0: no global budget.
    disk_budget_bytes: u64,
    topics: usize,
    partitions: usize,
    groups: usize,
    connections: i64,
    /// Sum of every partition's log end: its change over time is records appended.
    log_end_total: i64,
    /// ACLs on (`[kafka.authorization]`).
    authorization: bool,
    /// Console actions allowed (`http.actions`).
    actions: bool,
}

pub async fn status(State(broker): State<Arc<Broker>>) -> Result<Json<BrokerStatus>, ApiError> {
    let status = tokio::task::spawn_blocking(move || {
        let mut disk = 0u64;
        let mut partitions = 0usize;
        let mut log_end_total = 0i64;
        for topic in broker.topics.list() {
            for p in topic.partitions() {
                let log = p.lock();
                disk += log.size_bytes();
                log_end_total += log.high_watermark();
                partitions += 1;
            }
        }
        let mut groups: std::collections::BTreeSet<String> =
            broker.groups.offsets.groups().into_iter().collect();
        groups.extend(broker.groups.active_groups());
        BrokerStatus {
            version: env!("CARGO_PKG_VERSION"),
            node_id: broker.node_id(),
            cluster_id: broker.config.broker.cluster_id.clone(),
            uptime_s: broker.started.elapsed().as_secs(),
            disk_used_bytes: disk,
            disk_budget_bytes: broker.config.storage.max_bytes,
            topics: broker.topics.list().len(),
            partitions,
            groups: groups.len(),
            connections: broker.metrics.connections.get(),
            log_end_total,
            authorization: broker.authorizer.enabled(),
            actions: broker.config.http.actions,
        }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(status))
}
