//! What `tern mirror status` and `/v1/mirror` show: the state of this edge's link and of
//! every edge connected to this hub. Updated by the link tasks, read by the HTTP handler.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One mirrored partition seen from the edge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EdgePartition {
    pub topic: String,
    pub partition: i32,
    pub edge_start: i64,
    pub edge_end: i64,
    /// The hub's durable end, as last acknowledged (-1 until the hub answered).
    pub hub_end: i64,
    pub records_behind: i64,
    /// Stored bytes not yet on the hub (refreshed about once a second).
    pub bytes_behind: u64,
    /// Age of the oldest record not yet on the hub (None when nothing is behind or its
    /// batch has not been read yet).
    pub seconds_behind: Option<f64>,
    /// Records the hub recorded as lost (the edge deleted them before they were mirrored).
    pub gap_records: i64,
    /// Records retention or the disk budget deleted here before the hub acknowledged
    /// them (they become a gap on the hub).
    #[serde(default)]
    pub deleted_unmirrored: i64,
    pub last_error: Option<String>,
}

/// One partition sent down from the hub to an edge (a command topic), seen from either end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DownlinkPartition {
    /// The hub's topic (`commands.gw-017`) and the edge's (`commands`).
    pub hub_topic: String,
    pub edge_topic: String,
    pub partition: i32,
    /// The hub's durable end (as last seen) and the edge's durable end (as last acknowledged).
    pub hub_end: i64,
    pub edge_end: i64,
    pub records_behind: i64,
    pub gap_records: i64,
    pub last_error: Option<String>,
}

/// The edge's link to its hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EdgeStatus {
    pub name: String,
    pub hub: String,
    /// `connecting`, `connected` or `waiting` (backing off after a failure).
    pub state: String,
    pub connected_since_ms: Option<i64>,
    pub local_address: Option<String>,
    pub rtt_ms: Option<f64>,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// UDP bytes sent and received on all connections so far (QUIC and TLS overhead in).
    pub wire_tx_bytes: u64,
    pub wire_rx_bytes: u64,
    #[serde(skip)]
    pub wire_tx_bytes_before: u64,
    #[serde(skip)]
    pub wire_rx_bytes_before: u64,
    pub partitions: BTreeMap<String, EdgePartition>,
    /// Group offsets the hub committed from this edge's checkpoints, and when last.
    #[serde(default)]
    pub checkpoints: u64,
    #[serde(default)]
    pub last_checkpoint_ms: Option<i64>,
    /// Group offsets this edge committed from the hub's checkpoints.
    #[serde(default)]
    pub checkpoints_from_hub: u64,
    /// Command topics the hub sends down, by `<edge topic>/<partition>`.
    #[serde(default)]
    pub downlink: BTreeMap<String, DownlinkPartition>,
}

/// One partition of an edge's namespace on the hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HubPartition {
    pub topic: String,
    pub partition: i32,
    pub hub_end: i64,
    /// The edge's end when it last sent (-1 if it has not sent yet).
    pub edge_end: i64,
    pub records_behind: i64,
    pub duplicates: u64,
    pub gap_records: i64,
    /// The most recent gaps, `[from, to)`.
    pub gaps: Vec<(i64, i64)>,
}

/// One edge as the hub knows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HubEdge {
    pub connected: bool,
    pub connected_since_ms: Option<i64>,
    pub address: Option<String>,
    pub rtt_ms: Option<f64>,
    pub last_error: Option<String>,
    /// Timestamp of the newest heartbeat record received from the edge, and how long it
    /// took from the edge's clock to the hub's log.
    pub last_heartbeat_ms: Option<i64>,
    pub heartbeat_latency_ms: Option<i64>,
    pub partitions: BTreeMap<String, HubPartition>,
    /// Group offsets committed from this edge's checkpoints, and when last.
    #[serde(default)]
    pub checkpoints: u64,
    #[serde(default)]
    pub last_checkpoint_ms: Option<i64>,
    /// Group offsets the edge committed from this hub's checkpoints.
    #[serde(default)]
    pub checkpoints_to_edge: u64,
    /// Command topics sent down to this edge, by `<hub topic>/<partition>`.
    #[serde(default)]
    pub downlink: BTreeMap<String, DownlinkPartition>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HubStatus {
    pub listen: String,
    pub edges: BTreeMap<String, HubEdge>,
}

/// Everything, as served on `/v1/mirror`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub edge: Option<EdgeStatus>,
    pub hub: Option<HubStatus>,
}

/// Gaps kept per partition in the status (the journal keeps them all).
pub const RECENT_GAPS: usize = 16;

/// Shared, cheaply cloned handle on the status.
#[derive(Debug, Clone, Default)]
pub struct SharedStatus(Arc<Mutex<MirrorStatus>>);

impl SharedStatus {
    pub fn lock(&self) -> MutexGuard<'_, MirrorStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> MirrorStatus {
        self.lock().clone()
    }

    pub fn edge<R>(&self, f: impl FnOnce(&mut EdgeStatus) -> R) -> R {
        f(self.lock().edge.get_or_insert_with(Default::default))
    }

    pub fn edge_partition<R>(
        &self,
        topic: &str,
        partition: i32,
        f: impl FnOnce(&mut EdgePartition) -> R,
    ) -> R {
        self.edge(|e| {
            let p = e
                .partitions
                .entry(format!("{topic}/{partition}"))
                .or_insert_with(|| EdgePartition {
                    topic: topic.to_string(),
                    partition,
                    hub_end: -1,
                    ..Default::default()
                });
            f(p)
        })
    }

    /// A command topic partition this edge receives, created on first use.
    pub fn edge_downlink<R>(
        &self,
        edge_topic: &str,
        partition: i32,
        f: impl FnOnce(&mut DownlinkPartition) -> R,
    ) -> R {
        self.edge(|e| f(downlink_entry(&mut e.downlink, "", edge_topic, partition)))
    }

    /// A command topic partition this hub sends to `edge`, created on first use.
    pub fn hub_downlink<R>(
        &self,
        edge: &str,
        hub_topic: &str,
        edge_topic: &str,
        partition: i32,
        f: impl FnOnce(&mut DownlinkPartition) -> R,
    ) -> R {
        self.hub(|h| {
            let e = h.edges.entry(edge.to_string()).or_default();
            f(downlink_entry(
                &mut e.downlink,
                hub_topic,
                edge_topic,
                partition,
            ))
        })
    }

    pub fn hub<R>(&self, f: impl FnOnce(&mut HubStatus) -> R) -> R {
        f(self.lock().hub.get_or_insert_with(Default::default))
    }

    pub fn hub_partition<R>(
        &self,
        edge: &str,
        topic: &str,
        partition: i32,
        f: impl FnOnce(&mut HubPartition) -> R,
    ) -> R {
        self.hub(|h| {
            let e = h.edges.entry(edge.to_string()).or_default();
            let p = e
                .partitions
                .entry(format!("{topic}/{partition}"))
                .or_insert_with(|| HubPartition {
                    topic: topic.to_string(),
                    partition,
                    edge_end: -1,
                    ..Default::default()
                });
            f(p)
        })
    }
}

/// Keyed by the topic of the side that holds the map (the hub's topic on a hub).
fn downlink_entry<'a>(
    map: &'a mut BTreeMap<String, DownlinkPartition>,
    hub_topic: &str,
    edge_topic: &str,
    partition: i32,
) -> &'a mut DownlinkPartition {
    let key_topic = if hub_topic.is_empty() {
        edge_topic
    } else {
        hub_topic
    };
    map.entry(format!("{key_topic}/{partition}"))
        .or_insert_with(|| DownlinkPartition {
            hub_topic: hub_topic.to_string(),
            edge_topic: edge_topic.to_string(),
            partition,
            hub_end: -1,
            edge_end: -1,
            ..Default::default()
        })
}
