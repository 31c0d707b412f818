//! What one fsync of a partition must cover, taken under the partition lock and run
//! outside it (on a blocking thread), so that no request waits on a disk flush while
//! holding the lock that reads and appends need.
//!
//! Every path that makes a partition durable goes through here: group commit, segment
//! roll (a rolled segment is sealed by the next sync, not under the lock), the retention
//! task's time-based roll, and shutdown. A failed sync is answered by
//! [`super::Log::fail_sync`], which discards the unsynced tail and fences the partition.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::checkpoint::{self, RECOVERY_POINT};
use super::partition::DurablePoint;

/// A snapshot of what is unsynced in one partition.
#[derive(Debug)]
pub struct SyncTarget {
    /// Log files (and, for sealed segments, their indexes) with unsynced writes.
    pub files: Vec<Arc<File>>,
    /// The partition directory, when segment files were created or deleted since its
    /// last fsync (a new file's entry is not durable until its directory is synced).
    pub dir: Option<PathBuf>,
    /// Where the log ends once `files` are synced.
    pub point: DurablePoint,
    /// The log's generation when the target was taken: if the tail was discarded or the
    /// log reopened since, this sync proves nothing about the current bytes.
    pub generation: u64,
    /// The new recovery point once sealed segments are synced (the active segment's base).
    pub recovery_point: Option<i64>,
    /// Bases of the sealed segments this sync seals.
    pub sealed: Vec<i64>,
    /// The directory-change counter covered by syncing `dir`.
    pub dir_changes: u64,
}

impl SyncTarget {
    /// fdatasync every file, then the directory, then record the recovery point. Runs
    /// without the partition lock: files stay valid even if the log is truncated meanwhile
    /// (the generation check then rejects the result).
    pub fn run(&self) -> std::io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            checkpoint::sync_dir(dir)?;
            if let Some(base) = self.recovery_point {
                checkpoint::write(dir, RECOVERY_POINT, base)?;
            }
        }
        Ok(())
    }
}
