//! The bridge's view of tern: a small trait the root crate implements over its log and
//! metadata store, so this crate never depends on the broker.

use std::future::Future;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::watch;

/// A record made from one MQTT message.
#[derive(Debug, Clone)]
pub struct InboundRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    pub timestamp_ms: i64,
}

/// A stored record read for publishing.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
}

/// What one read returned: the records, and the offset after the last batch it covered
/// (batches that could not be decoded are skipped, so `end` can lie past the last record).
#[derive(Debug, Clone, Default)]
pub struct StoredRead {
    pub records: Vec<StoredRecord>,
    pub end: i64,
}

#[derive(Debug, Error)]
pub enum PortError {
    /// Worth retrying later (disk full, I/O error): nothing was acknowledged.
    #[error("{0}")]
    Unavailable(String),
    /// The cursor points before the log start (retention deleted records).
    #[error("offset {offset} is no longer stored; the log starts at {start}")]
    OutOfRange { offset: i64, start: i64 },
}

pub trait TernLog: Send + Sync + 'static {
    /// Creates `topic` with `partitions` partitions if it does not exist; returns its
    /// partition count.
    fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32, PortError>;

    /// Appends the records (partitioned by key the way Kafka's Java client does) and
    /// resolves once they are durable. Records too large for the topic are left out (and
    /// logged); returns how many.
    fn append(
        &self,
        topic: &str,
        records: &[InboundRecord],
    ) -> impl Future<Output = Result<usize, PortError>> + Send;

    /// Durable records of one partition from `offset` on, up to about `max_bytes`.
    /// Batches that cannot be decoded are reported by the implementation and skipped.
    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<StoredRead, PortError>;

    /// (log start, durable end) of one partition.
    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PortError>;

    /// Changes whenever new records became durable somewhere.
    fn durable_events(&self) -> watch::Receiver<u64>;

    /// The stored outbound cursor of a bridge for one partition.
    fn load_cursor(
        &self,
        bridge: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, PortError>;

    /// Stores cursors durably (resolves after they are).
    fn save_cursors(
        &self,
        bridge: &str,
        cursors: Vec<(String, i32, i64)>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}
