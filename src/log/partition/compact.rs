//! The partition's side of log compaction: what the cleaner may work on (taken under the
//! lock), swapping a cleaned group in (under the lock, metadata operations only), and the
//! figures `/metrics` and `tern topics describe` show.

use std::sync::Arc;

use tracing::{error, info};

use super::{Log, Partition, Segment};
use crate::log::checkpoint::{self, CLEANER_POINT};
use crate::log::compaction::cleaner::{
    self, CleanError, CleanedGroup, CleaningPlan, PassReport, SegmentSnapshot,
};
use crate::log::compaction::swap::{self, Step};
use crate::log::compaction::CleanerLimits;
use crate::log::LogError;

/// What the cleaner knows of one partition (also what `/v1/topics/{topic}` shows).
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CleanerStats {
    /// Dirty bytes / cleanable bytes (0 when nothing is cleanable).
    pub dirty_ratio: f64,
    pub dirty_bytes: u64,
    pub clean_bytes: u64,
    /// Wall-clock milliseconds of the last pass that changed the log.
    pub last_clean_ms: Option<i64>,
    pub bytes_reclaimed: u64,
    pub passes: u64,
    /// When a tombstone the last pass kept expires (unknown after a restart until a pass).
    #[serde(skip)]
    pub next_tombstone_expiry: Option<i64>,
}

/// Why a pass is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `min.cleanable.dirty.ratio` reached.
    DirtyRatio,
    /// Dirty records older than `max.compaction.lag.ms`.
    MaxLag,
    /// Tombstones kept by an earlier pass are past `delete.retention.ms`.
    TombstonesExpired,
    /// Asked for (tests, `tern topics compact`).
    Forced,
}

impl Log {
    /// The sealed segments the cleaner may read: durable, undamaged, not the active one.
    fn cleanable_segments(&self, now_ms: i64) -> (Vec<SegmentSnapshot>, i64) {
        let active = self.active().base_offset;
        let lag = self.config.compaction.min_compaction_lag_ms;
        let mut out = Vec::new();
        let mut end = active;
        for segment in self.segments.values() {
            let young = lag > 0
                && segment
                    .max_timestamp()
                    .is_some_and(|ts| now_ms.saturating_sub(ts) < lag);
            let unsettled = segment.base_offset >= self.durable.segment_base
                || self.unsealed.contains(&segment.base_offset)
                || !segment.damaged().is_empty();
            if segment.base_offset == active || young || unsettled {
                end = segment.base_offset;
                break;
            }
            out.push(SegmentSnapshot {
                base: segment.base_offset,
                file: segment.file(),
                size: segment.size(),
                next_offset: segment.next_offset(),
            });
        }
        (out, end)
    }

    /// Dirty and clean bytes and the ratio the cleaner decides on.
    pub fn cleaner_stats(&self, now_ms: i64) -> CleanerStats {
        let mut stats = self.cleaner_totals;
        if !self.config.cleanup.compacts() {
            return stats;
        }
        let (segments, _) = self.cleanable_segments(now_ms);
        for segment in &segments {
            if segment.next_offset <= self.cleaner_point {
                stats.clean_bytes += segment.size;
            } else {
                stats.dirty_bytes += segment.size;
            }
        }
        let total = stats.clean_bytes + stats.dirty_bytes;
        stats.dirty_ratio = if total == 0 {
            0.0
        } else {
            stats.dirty_bytes as f64 / total as f64
        };
        stats
    }

    /// The work of the next pass, if one is due.
    pub fn cleaning_plan(&self, now_ms: i64, force: bool) -> Option<(CleaningPlan, Trigger)> {
        if !self.config.cleanup.compacts() || self.fenced.is_some() {
            return None;
        }
        let stats = self.cleaner_stats(now_ms);
        let tombstones_due = self
            .cleaner_totals
            .next_tombstone_expiry
            .is_some_and(|at| now_ms > at);
        if stats.dirty_bytes == 0 && !tombstones_due {
            return None;
        }
        let (segments, cleanable_end) = self.cleanable_segments(now_ms);
        let config = &self.config.compaction;
        let oldest_dirty = segments
            .iter()
            .find(|s| s.next_offset > self.cleaner_point)
            .and_then(|s| self.segments.get(&s.base))
            .and_then(Segment::max_timestamp);
        let overdue = config.max_compaction_lag_ms < i64::MAX
            && oldest_dirty
                .is_some_and(|ts| now_ms.saturating_sub(ts) > config.max_compaction_lag_ms);
        let trigger = if force {
            Trigger::Forced
        } else if stats.dirty_ratio >= config.min_cleanable_dirty_ratio {
            Trigger::DirtyRatio
        } else if overdue {
            Trigger::MaxLag
        } else if tombstones_due {
            Trigger::TombstonesExpired
        } else {
            return None;
        };
        let plan = CleaningPlan {
            dir: self.dir.clone(),
            segments,
            first_dirty: self.cleaner_point,
            cleanable_end,
            segment_bytes: self.config.segment_bytes,
            index_interval_bytes: self.config.index_interval_bytes,
            compaction: *config,
            now_ms,
        };
        Some((plan, trigger))
    }

    /// Swaps a cleaned group in (see `compaction::swap`). Returns false, changing nothing,
    /// when one of the group's segments changed since the plan (retention, DeleteRecords).
    /// A failure after the commit point fences the log: reopening it finishes the swap.
    pub fn install_cleaned(
        &mut self,
        group: CleanedGroup,
        stop_at: Option<Step>,
    ) -> Result<bool, CleanError> {
        let active = self.active().base_offset;
        let unchanged = group.inputs.iter().all(|(base, file)| {
            *base != active
                && self
                    .segments
                    .get(base)
                    .is_some_and(|s| Arc::ptr_eq(&s.file(), file))
        });
        if !unchanged || self.fenced.is_some() {
            return Ok(false);
        }
        let dir = self.dir.clone();
        let base = group.segment.base_offset;
        swap::commit(&dir, base, group.end).map_err(|e| LogError::io(&dir, e))?;
        if stop_at == Some(Step::Committed) {
            return Err(CleanError::Stopped(Step::Committed));
        }
        let result = self.replace_segments(group, stop_at);
        if let Err(CleanError::Log(e)) = &result {
            error!(dir = %dir.display(), error = %e, "swapping a cleaned segment in failed after its commit; the partition is reopened from disk to finish it");
            self.fence(format!("an interrupted compaction swap: {e}"));
        }
        result.map(|()| true)
    }

    /// Steps 2 and 3 of a swap.
    fn replace_segments(
        &mut self,
        group: CleanedGroup,
        stop_at: Option<Step>,
    ) -> Result<(), CleanError> {
        let dir = self.dir.clone();
        let io = |e: std::io::Error| CleanError::Log(LogError::io(&dir, e));
        for (old, _) in &group.inputs {
            if let Some(segment) = self.segments.remove(old) {
                self.dir_changes += 1;
                segment.delete_files().map_err(io)?;
            }
        }
        if stop_at == Some(Step::OldRemoved) {
            return Err(CleanError::Stopped(Step::OldRemoved));
        }
        let base = group.segment.base_offset;
        swap::finish(&dir, base, group.end).map_err(io)?;
        if stop_at == Some(Step::Installed) {
            return Err(CleanError::Stopped(Step::Installed));
        }
        self.segments.insert(base, group.segment);
        Ok(())
    }

    /// Records a finished pass.
    fn note_pass(&mut self, report: &PassReport, now_ms: i64) {
        self.cleaner_point = self.cleaner_point.max(report.map_end);
        self.cleaner_totals.passes += 1;
        self.cleaner_totals.next_tombstone_expiry = report.next_tombstone_expiry;
        if report.groups_swapped > 0 {
            self.cleaner_totals.last_clean_ms = Some(now_ms);
            self.cleaner_totals.bytes_reclaimed +=
                report.bytes_before.saturating_sub(report.bytes_after);
        }
    }
}

impl Partition {
    /// Runs one cleaning pass if one is due (or `force`). The lock is held only to plan and
    /// for each swap; reading and writing segments happen without it.
    pub fn clean(
        &self,
        limits: &CleanerLimits,
        now_ms: i64,
        force: bool,
        stop_at: Option<Step>,
    ) -> Result<Option<PassReport>, CleanError> {
        let Some((plan, trigger)) = self.lock().cleaning_plan(now_ms, force) else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let report = cleaner::run(&plan, limits, stop_at, |group| {
            self.lock().install_cleaned(group, stop_at)
        })?;
        // Durable before it is believed: a lost cleaner point only means cleaning again.
        checkpoint::write(&plan.dir, CLEANER_POINT, report.map_end)
            .map_err(|e| LogError::io(&plan.dir, e))?;
        self.lock().note_pass(&report, now_ms);
        info!(topic = %self.topic, partition = self.index, ?trigger,
            keys = report.keys, segments = report.segments_read, swapped = report.groups_swapped,
            removed = report.records_removed, tombstones = report.tombstones_removed,
            bytes_before = report.bytes_before, bytes_after = report.bytes_after,
            clean_up_to = report.map_end, elapsed_ms = started.elapsed().as_millis() as u64,
            "log cleaned");
        Ok(Some(report))
    }
}
