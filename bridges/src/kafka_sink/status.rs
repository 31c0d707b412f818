//! What `/v1/sinks` shows of one sink: the forwarder publishes a fresh copy after every
//! step.

use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStatus {
    pub name: String,
    pub bootstrap_servers: Vec<String>,
    /// Whether the sink holds a producer id from the cluster.
    pub connected: bool,
    pub producer_id: i64,
    pub last_error: Option<String>,
    pub records_forwarded: u64,
    pub partitions: Vec<SinkPartitionStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkPartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub target_topic: String,
    /// Next local offset to forward.
    pub cursor: i64,
    pub log_end: i64,
    pub lag_records: i64,
    /// The target partition's end after the last acknowledged batch, if known.
    pub target_end: Option<i64>,
    /// Why the partition waits, if it does.
    pub waiting: Option<String>,
}

/// Shared between the forwarder and the HTTP handler.
pub type SharedStatus = Arc<Mutex<SinkStatus>>;
