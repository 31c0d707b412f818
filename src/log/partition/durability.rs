//! How a partition becomes durable: what a sync must cover, applying a sync that
//! succeeded or failed (fencing), and clean shutdown. The fsyncs themselves run outside
//! the partition lock (`log/sync.rs`).

use super::{DurablePoint, Log};
use crate::log::checkpoint;
use crate::log::sync::SyncTarget;
use crate::log::LogError;
use tracing::error;

impl Log {
    /// True when a sync is needed to make offsets below `upto` durable, or to seal
    /// segments and make directory changes durable.
    pub fn needs_sync(&self, upto: i64) -> bool {
        self.durable.offset < upto
            || !self.unsealed.is_empty()
            || self.dir_changes != self.dir_synced
    }

    /// What a sync must cover to make everything appended so far durable.
    pub fn sync_target(&self) -> SyncTarget {
        let active = self.active();
        let mut files = Vec::new();
        let mut sealed = Vec::new();
        for base in &self.unsealed {
            if let Some(segment) = self.segments.get(base) {
                files.extend(segment.all_files());
                sealed.push(*base);
            }
        }
        files.push(active.file());
        let dir_dirty = self.dir_changes != self.dir_synced || !sealed.is_empty();
        SyncTarget {
            files,
            dir: dir_dirty.then(|| self.dir.clone()),
            point: DurablePoint {
                offset: active.next_offset(),
                segment_base: active.base_offset,
                position: active.size(),
            },
            generation: self.generation,
            recovery_point: (!sealed.is_empty()).then_some(active.base_offset),
            sealed,
            dir_changes: self.dir_changes,
        }
    }

    /// Applies a sync that succeeded. Returns false when the log changed generation since
    /// the target was taken (the sync then proves nothing).
    pub fn complete_sync(&mut self, target: &SyncTarget) -> bool {
        if target.generation != self.generation {
            return false;
        }
        self.mark_durable(target.point);
        for base in &target.sealed {
            self.unsealed.remove(base);
        }
        if target.dir.is_some() {
            self.dir_synced = self.dir_synced.max(target.dir_changes);
        }
        true
    }

    /// Applies a sync that failed: the unsynced tail is discarded (the kernel may have
    /// dropped those pages, and a retried fsync would not say so), the generation moves so
    /// that no waiter from before is ever told "durable", and appends are refused until
    /// the partition is reopened from disk.
    pub fn fail_sync(&mut self, why: &str) {
        if let Err(e) = self.discard_unsynced() {
            error!(dir = %self.dir.display(), error = %e, "could not discard the unsynced tail");
        }
        self.fence(format!("an fsync failed: {why}"));
    }

    pub(super) fn fence(&mut self, why: String) {
        self.generation += 1;
        if self.fenced.is_none() {
            error!(dir = %self.dir.display(), reason = %why,
                "partition fenced: appends get KAFKA_STORAGE_ERROR until it is reopened from disk");
            self.fenced = Some(why);
        }
    }

    /// True when offsets below `upto`, appended in `generation`, are durable.
    pub fn is_durable(&self, upto: i64, generation: u64) -> bool {
        generation == self.generation && self.durable.offset >= upto
    }

    /// Moves the high watermark after an fsync covered `point`.
    pub fn mark_durable(&mut self, point: DurablePoint) {
        if point.offset > self.durable.offset
            || (point.offset == self.durable.offset
                && point.segment_base > self.durable.segment_base)
        {
            self.durable = point;
        }
    }

    /// Cuts the log back to its last durable point, so that nothing unacknowledged or
    /// half-written can be served later.
    pub(super) fn discard_unsynced(&mut self) -> Result<(), LogError> {
        let durable = self.durable;
        self.producers.truncate(durable.offset);
        let dir = self.dir.clone();
        let later: Vec<i64> = self
            .segments
            .range(durable.segment_base + 1..)
            .map(|(b, _)| *b)
            .collect();
        for base in later {
            if let Some(segment) = self.segments.remove(&base) {
                self.unsealed.remove(&base);
                segment.delete_files().map_err(|e| LogError::io(&dir, e))?;
            }
        }
        self.unsealed.remove(&durable.segment_base);
        if let Some(segment) = self.segments.get_mut(&durable.segment_base) {
            segment
                .truncate_to(durable.position, durable.offset)
                .map_err(|e| LogError::io(&dir, e))?;
        }
        // Deleted segments must not reappear after a power cut with offsets reused since.
        checkpoint::sync_dir(&dir).map_err(|e| LogError::io(&dir, e))
    }

    /// Clean shutdown: sync everything and record that everything is recovered, the
    /// active segment included (its indexes too), so that the next start need not scan it.
    pub fn close(&mut self) -> Result<(), LogError> {
        let mut target = self.sync_target();
        target.dir = Some(self.dir.clone());
        target.recovery_point = Some(target.point.segment_base);
        match target.run() {
            Ok(()) => {
                if !self.complete_sync(&target) || self.fenced.is_some() {
                    return Ok(());
                }
                let active = self.active();
                let base = active.base_offset;
                for file in active.all_files() {
                    file.sync_data().map_err(|e| LogError::io(&self.dir, e))?;
                }
                checkpoint::write(&self.dir, checkpoint::CLEAN_SHUTDOWN, base)
                    .map_err(|e| LogError::io(&self.dir, e))
            }
            Err(e) => {
                self.fail_sync(&e.to_string());
                Err(LogError::io(&self.dir, e))
            }
        }
    }
}
