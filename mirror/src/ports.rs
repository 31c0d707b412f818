//! The mirror's view of tern: a small trait the root crate implements over its log, so
//! this crate never depends on the broker.

use std::future::Future;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::watch;

pub use crate::wire::GroupOffset;

/// A topic as the edge stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
    /// Configs set on the topic (not broker defaults), copied to the hub's topic.
    pub configs: Vec<(String, String)>,
    /// Internal topics (`__consumer_offsets`) are never mirrored.
    pub internal: bool,
}

/// What a mirrored append wrote (not yet durable).
#[derive(Debug, Clone, Default)]
pub struct Appended {
    pub log_end: i64,
    pub records: u64,
    pub bytes: u64,
    pub duplicates: u64,
    pub gaps: Vec<(i64, i64)>,
    /// Opaque to the mirror: what the durability wait needs.
    pub generation: u64,
}

#[derive(Debug, Error)]
pub enum PortError {
    /// Worth retrying later (disk full, I/O error, a fenced partition).
    #[error("{0}")]
    Unavailable(String),
    /// The offset is below the log start (retention deleted it).
    #[error("offset {offset} is no longer stored; the log starts at {start}")]
    OutOfRange { offset: i64, start: i64 },
    /// Will not work however often it is retried (an invalid name, logs that disagree).
    #[error("{0}")]
    Refused(String),
}

/// What became of a group's checkpoint on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// This many offsets changed and are durable.
    Applied(u32),
    /// Nothing written, and why (the group is active here).
    Skipped(String),
}

pub trait MirrorLog: Send + Sync + 'static {
    /// Every topic with its partition count and configs.
    fn topics(&self) -> Vec<TopicInfo>;

    /// (log start, durable end) of one partition.
    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PortError>;

    /// Whole stored batches from the one holding `offset`, up to about `max_bytes` (at
    /// least one batch), never past the durable end. May block on disk reads.
    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, PortError>;

    /// Stored bytes from the batch holding `offset` to the durable end (lag in bytes).
    fn bytes_from(&self, topic: &str, partition: i32, offset: i64) -> Result<u64, PortError>;

    /// Creates `topic` with `partitions` partitions, or grows it to that many, and makes
    /// its configs `configs` — except keys for which `keep_local` is true, which keep this
    /// side's values. Returns the partition count.
    fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(String, String)],
        keep_local: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<i32, PortError>;

    /// Writes stored batches at the offsets they carry: duplicates below the log end are
    /// skipped, a batch above it jumps the gap. May block on disk writes.
    fn append_mirrored(
        &self,
        topic: &str,
        partition: i32,
        batches: &[u8],
    ) -> Result<Appended, PortError>;

    /// Resolves once what `appended` wrote is durable.
    fn wait_durable(
        &self,
        topic: &str,
        partition: i32,
        appended: &Appended,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Appends one record to partition 0 of `topic` (created with one partition if
    /// missing) and resolves once it is durable: the edge's heartbeats.
    fn append_record(
        &self,
        topic: &str,
        key: Bytes,
        value: Bytes,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Reserves a topic prefix for the mirror (on a hub: `<edge><separator>`), durably:
    /// Kafka producers may not write there.
    fn claim_namespace(&self, prefix: &str) -> Result<(), PortError>;

    /// Reserves one topic for the mirror, durably (on an edge: a topic the hub sends
    /// down): Kafka producers may not write it.
    fn claim_topic(&self, topic: &str) -> Result<(), PortError>;

    /// Every consumer group's committed offsets here.
    fn committed_offsets(&self) -> Vec<(String, Vec<GroupOffset>)>;

    /// Commits `offsets` (topics named as here) for `group` and resolves once durable —
    /// unless the group has members here, which must never be overwritten. Offsets beyond
    /// a partition's end are lowered to it; only offsets ahead of what the group
    /// committed here are written (MirrorMaker's rule: a consumer here that went further
    /// stays there).
    fn commit_checkpoint(
        &self,
        group: &str,
        offsets: &[GroupOffset],
    ) -> impl Future<Output = Result<CheckpointOutcome, PortError>> + Send;

    /// Changes whenever new records became durable somewhere.
    fn durable_events(&self) -> watch::Receiver<u64>;
}
