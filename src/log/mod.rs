//! The partition log: segments of Kafka record batches, their indexes, recovery, retention
//! and the group-commit fsync that backs every acknowledged produce.

pub mod batch;
pub mod check;
pub mod checkpoint;
pub mod codec;
pub mod compaction;
pub mod damage;
pub mod group_commit;
pub mod index;
pub mod partition;
pub mod producer_state;
pub mod record_check;
pub mod records;
pub mod segment;
pub mod sync;
#[cfg(test)]
mod tests;

use thiserror::Error;

pub use group_commit::GroupCommit;
pub use partition::{AppendInfo, CleanerStats, Log, Partition, ReadResult};

/// How a topic treats the compression of incoming batches (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionPolicy {
    /// tern's default: uncompressed batches are lz4-compressed once on append; batches a
    /// producer compressed (with any codec) are kept as sent, sparing the gateway's CPU.
    Lz4,
    /// Batches are stored exactly as the producer sent them.
    Producer,
    /// Kafka's semantics for an explicit codec: every batch not already in this codec is
    /// recompressed on append (`Codec::None`: stored uncompressed).
    Exactly(batch::Codec),
}

/// The settings of one topic that the log itself acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `cleanup.policy`: retention deletes old segments, the cleaner compacts, or both.
    pub cleanup: compaction::Cleanup,
    /// The cleaner's settings (`min.cleanable.dirty.ratio`, the compaction lags,
    /// `delete.retention.ms`); read only where `cleanup` compacts.
    pub compaction: compaction::CompactionConfig,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: no size limit for the partition.
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
    pub compression: CompressionPolicy,
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`: batches are stamped with the append time.
    pub log_append_time: bool,
    /// `min.insync.replicas`: above 1, acks=all produces are refused (one replica here).
    pub min_insync_replicas: i32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            cleanup: compaction::Cleanup::Delete,
            compaction: compaction::CompactionConfig::default(),
            segment_bytes: 64 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            compression: CompressionPolicy::Lz4,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            min_insync_replicas: 1,
        }
    }
}

/// Errors of the storage layer. Each maps to one Kafka error code in `kafka::errors`.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("storage I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid record batch: {0}")]
    Corrupt(#[from] batch::BatchError),
    #[error(
        "min.insync.replicas is {0}, and tern is a single replica: acks=all cannot be satisfied"
    )]
    NotEnoughReplicas(i32),
    #[error("damaged batch at byte {position} of segment {segment_base}: {reason}")]
    Damaged {
        segment_base: i64,
        position: u64,
        reason: String,
    },
    #[error("records refused: {0}")]
    InvalidRecords(String),
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("the disk write did not become durable: {0}")]
    NotDurable(String),
    #[error("the log is shutting down")]
    ShuttingDown,
    #[error(
        "partition fenced after a storage error ({0}); it is reopened from disk automatically"
    )]
    Fenced(String),
    #[error(transparent)]
    Sequence(#[from] producer_state::SequenceError),
    #[error("mirrored batch {base}..={last} overlaps the log end {end} mid-batch: the two logs disagree")]
    MirrorOverlap { base: i64, last: i64, end: i64 },
}

impl LogError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> LogError {
        LogError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// True when the error means the disk is full (ENOSPC / EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => matches!(source.raw_os_error(), Some(28) | Some(122)),
            _ => false,
        }
    }
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A Raspberry Pi without a battery-backed clock boots in 1970 until NTP answers: time-based
/// retention must not run on such a clock (it would delete everything).
pub fn clock_is_plausible(now_ms: i64) -> bool {
    const JAN_2024_MS: i64 = 1_704_067_200_000;
    now_ms >= JAN_2024_MS
}
