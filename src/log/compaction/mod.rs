//! Log compaction (`cleanup.policy=compact`): Kafka's semantics, sized for a gateway.
//!
//! A compacted partition keeps at least the latest record of every key. The cleaner
//! (`cleaner.rs`) works on the sealed segments only, never the active one:
//!
//! 1. the *dirty* part of the log (from the cleaner point, `cleaner-point` beside the
//!    segments, to the first segment younger than `min.compaction.lag.ms`) is scanned and
//!    the latest offset of every key goes into a bounded map (`key_map.rs`); when the map
//!    is full, this pass stops there and the next pass continues (several passes for logs
//!    with more keys than fit);
//! 2. every sealed segment from the log start to that point is rewritten beside the old
//!    ones, grouped so that small segments merge into one of at most `segment.bytes`
//!    (`thin.rs` drops superseded records from batches; offsets never change, so a
//!    compacted log has gaps);
//! 3. each rewritten group is swapped in by an atomic rename (`swap.rs`); recovery finishes
//!    or discards a swap a crash interrupted.
//!
//! Tombstones (null values) are kept `delete.retention.ms` after their batch's timestamp,
//! then removed by the next cleaning. The last batch of every rewritten segment and the
//! last batch of every idempotent producer are kept (emptied of records if need be), as
//! Kafka does: readers then always find a batch that carries them to the next segment,
//! and the producer's sequence state survives.

pub mod cleaner;
pub mod key_map;
pub mod record_scan;
pub mod swap;
pub mod thin;

#[cfg(test)]
mod model_tests;

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Retention deletes old segments (Kafka's default).
    Delete,
    /// The cleaner keeps the latest record per key; retention never deletes.
    Compact,
    /// Both: compacted, and segments past retention are deleted too.
    CompactDelete,
}

impl Cleanup {
    /// Parses Kafka's list syntax (`delete`, `compact`, `compact,delete`).
    pub fn parse(value: &str) -> Option<Cleanup> {
        let mut compact = false;
        let mut delete = false;
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(Cleanup::CompactDelete),
            (true, false) => Some(Cleanup::Compact),
            (false, true) => Some(Cleanup::Delete),
            (false, false) => None,
        }
    }

    pub fn compacts(self) -> bool {
        matches!(self, Cleanup::Compact | Cleanup::CompactDelete)
    }

    pub fn deletes(self) -> bool {
        matches!(self, Cleanup::Delete | Cleanup::CompactDelete)
    }
}

/// The per-topic settings of the cleaner, with Kafka's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionConfig {
    /// `min.cleanable.dirty.ratio`: clean once dirty bytes / all cleanable bytes reach it.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger is not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty records older than this are cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays after its timestamp.
    pub delete_retention_ms: i64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// Broker-wide limits of the cleaner (`[storage]` in tern.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerLimits {
    /// Memory for the key map of one pass (`storage.cleaner_key_map_bytes`).
    pub key_map_bytes: usize,
    /// Bytes read and written per second, at most (`storage.cleaner_io_max_bytes_per_second`;
    /// 0: no limit). Keeps an SD card responsive for the produce path.
    pub io_max_bytes_per_second: u64,
}

impl Default for CleanerLimits {
    fn default() -> Self {
        CleanerLimits {
            key_map_bytes: 4 << 20,
            io_max_bytes_per_second: 32 << 20,
        }
    }
}
