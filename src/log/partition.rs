//! A partition's log: an ordered set of segments, the offsets that bound it (log start,
//! durable end) and the operations the broker needs (append, read, list offsets, delete
//! records, retention). [`Partition`] wraps a [`Log`] in a mutex and is what the rest of
//! tern holds.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tracing::{error, info, warn};

use super::batch::{self, BatchHeader};
use super::checkpoint::{self, CLEANER_POINT, CLEAN_SHUTDOWN, LOG_START_OFFSET, RECOVERY_POINT};
use super::producer_state::{ProducerStates, SequenceCheck};
use super::segment::Segment;
use super::{LogConfig, LogError};

mod compact;
mod durability;
mod mirrored;
mod prepare;
mod read;
mod watchers;

pub use watchers::Watchers;

pub use compact::{CleanerStats, Trigger};
pub use mirrored::{prepare_mirrored, MirroredAppend};
pub use prepare::prepare;
pub use read::{Damage, ReadPlan, ReadResult};

/// A batch ready to be written: validated, and compressed as the topic asks.
pub type PreparedBatch<'a> = (BatchHeader, Cow<'a, [u8]>);

/// Where the durable (fsynced) part of the log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurablePoint {
    pub offset: i64,
    pub segment_base: i64,
    pub position: u64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    /// Bytes written to the segment (after compression).
    pub stored_bytes: u64,
    /// The log's generation at the append: the write is acknowledged only if a sync in
    /// this same generation covers it (see [`Log::is_durable`]).
    pub generation: u64,
}

/// What opening a partition found and repaired.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub scanned_segments: usize,
    pub truncated_bytes: u64,
    /// Damaged ranges quarantined in sealed segments.
    pub quarantined: u64,
}

/// Result of one retention pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct RetentionReport {
    pub deleted_segments: u64,
    pub deleted_bytes: u64,
}

#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    durable: DurablePoint,
    producers: ProducerStates,
    /// Bumped whenever the unsynced tail is discarded or the log is reopened, so that a
    /// durability wait from before can never be answered by a later sync of reused offsets.
    generation: u64,
    /// Why the log refuses appends: a sync failed. Linux reports a writeback error once,
    /// so nothing written since the last good sync can be trusted until the partition is
    /// reopened from disk ([`Partition::reopen_if_fenced`]).
    fenced: Option<String>,
    /// Segments sealed by a roll whose bytes and indexes the next sync must cover.
    unsealed: BTreeSet<i64>,
    /// Counts segment file creations and deletions; `dir_synced` is the count the last
    /// directory fsync covered.
    dir_changes: u64,
    dir_synced: u64,
    /// Damaged ranges quarantined since the log was opened (for /metrics).
    quarantined: u64,
    /// Compacted topics: offsets below this were cleaned by an earlier pass.
    cleaner_point: i64,
    /// The cleaner's counters since the log was opened.
    cleaner_totals: CleanerStats,
}

fn segment_bases(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

impl Log {
    /// Opens (or creates) the partition directory and recovers it: segments up to the
    /// recovery point are trusted, later ones are scanned batch by batch and cut at the
    /// first torn or corrupt batch. Damage in a sealed segment is quarantined (copied aside)
    /// and reported.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Log, RecoveryReport), LogError> {
        // The new directory's own entry must be durable before anything in it is.
        checkpoint::create_dir_durably(dir).map_err(|e| LogError::io(dir, e))?;
        checkpoint::remove_stale_temporaries(
            dir,
            &[
                RECOVERY_POINT,
                LOG_START_OFFSET,
                CLEANER_POINT,
                CLEAN_SHUTDOWN,
            ],
        )
        .map_err(|e| LogError::io(dir, e))?;
        // A clean shutdown vouches for its active segment once: the marker goes now (made
        // durable by the directory sync below, before anything new is written).
        let clean_active = checkpoint::read(dir, CLEAN_SHUTDOWN);
        if clean_active.is_some() {
            checkpoint::remove(dir, CLEAN_SHUTDOWN).map_err(|e| LogError::io(dir, e))?;
        }
        // A cleaning a crash interrupted: finished if it had committed, discarded if not.
        let swaps = super::compaction::swap::recover(dir).map_err(|e| LogError::io(dir, e))?;
        if swaps != Default::default() {
            info!(dir = %dir.display(), completed = swaps.completed, discarded = swaps.discarded,
                "recovery finished the compaction swaps a crash interrupted");
        }
        let bases = segment_bases(dir).map_err(|e| LogError::io(dir, e))?;
        let recovery_point = checkpoint::read(dir, RECOVERY_POINT).unwrap_or(i64::MIN);
        let start_checkpoint = checkpoint::read(dir, LOG_START_OFFSET).unwrap_or(0);
        let mut report = RecoveryReport::default();
        let mut segments = BTreeMap::new();
        let mut scanned_sealed = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let is_last = next_base.is_none();
            // A segment is trusted when the whole of it lies below the recovery point, or
            // when it is the active segment a clean shutdown synced.
            let trusted = next_base.is_some_and(|next| next <= recovery_point)
                || (is_last && clean_active == Some(base));
            let mut opened = None;
            if trusted {
                opened =
                    Segment::open_sealed(dir, base, now_ms).map_err(|e| LogError::io(dir, e))?;
            }
            let segment = match opened {
                Some(segment) => segment,
                None => {
                    report.scanned_segments += 1;
                    if !is_last {
                        scanned_sealed.push(base);
                    }
                    let (segment, scan) =
                        Segment::recover(dir, base, config.index_interval_bytes, now_ms, !is_last)
                            .map_err(|e| LogError::io(dir, e))?;
                    if scan.truncated_bytes > 0 {
                        report.truncated_bytes += scan.truncated_bytes;
                        let why = scan.stopped_by.unwrap_or_default();
                        warn!(dir = %dir.display(), base, bytes = scan.truncated_bytes, %why,
                            "recovery truncated the torn tail of the active segment");
                    }
                    for (from, to, why) in &scan.damaged {
                        error!(dir = %dir.display(), segment = base, from_byte = from, to_byte = to, %why,
                            "damaged batch in a sealed segment quarantined: never served, the batches after it are kept");
                    }
                    report.quarantined += scan.damaged.len() as u64;
                    segment
                }
            };
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let base = start_checkpoint.max(0);
            let segment = Segment::create(dir, base, now_ms).map_err(|e| LogError::io(dir, e))?;
            segments.insert(base, segment);
        }
        report.segments = segments.len();
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: first_base,
            durable: DurablePoint {
                offset: 0,
                segment_base: 0,
                position: 0,
            },
            producers: ProducerStates::default(),
            generation: 0,
            fenced: None,
            unsealed: BTreeSet::new(),
            dir_changes: 0,
            dir_synced: 0,
            quarantined: report.quarantined,
            cleaner_point: 0,
            // Which tombstones expire when is not kept on disk: one pass after a start
            // finds out (and removes those already due).
            cleaner_totals: CleanerStats {
                next_tombstone_expiry: Some(i64::MIN),
                ..CleanerStats::default()
            },
        };
        let end = log.log_end_offset();
        log.rebuild_producer_states();
        log.log_start_offset = start_checkpoint.clamp(first_base, end);
        log.cleaner_point = checkpoint::read(dir, CLEANER_POINT)
            .unwrap_or(0)
            .clamp(log.log_start_offset, end);
        // What recovery kept may sit in the page cache only (the process died, not the
        // machine): make it durable before serving it, then record that it is recovered.
        for base in &scanned_sealed {
            if let Some(segment) = log.segments.get(base) {
                segment.sync_all().map_err(|e| LogError::io(dir, e))?;
            }
        }
        let active = log.active();
        active.sync_all().map_err(|e| LogError::io(dir, e))?;
        let active_base = active.base_offset;
        log.durable = DurablePoint {
            offset: end,
            segment_base: active_base,
            position: active.size(),
        };
        checkpoint::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
        if !scanned_sealed.is_empty() {
            checkpoint::write(dir, RECOVERY_POINT, active_base)
                .map_err(|e| LogError::io(dir, e))?;
        }
        Ok((log, report))
    }

    /// Idempotent-producer state from the batch headers of the newest segments: enough
    /// to recognise any retry still in flight, without reading the whole log at startup.
    /// Unreadable headers end the scan of their segment (they are reported by the scrub).
    fn rebuild_producer_states(&mut self) {
        const SEGMENTS_SCANNED: usize = 2;
        let mut states = ProducerStates::default();
        let newest: Vec<&Segment> = self
            .segments
            .values()
            .rev()
            .take(SEGMENTS_SCANNED)
            .collect();
        for segment in newest.into_iter().rev() {
            match segment.headers_from(0, segment.size()) {
                Ok(headers) => {
                    for (_, header) in headers {
                        states.record(&header);
                    }
                }
                Err(e) => {
                    warn!(dir = %self.dir.display(), base = segment.base_offset, error = %e,
                        "cannot read every batch header of a segment; idempotent-producer state from it is partial");
                }
            }
        }
        self.producers = states;
    }

    pub(super) fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// The offset the next appended record gets (Kafka's log end offset).
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// End of the fsynced log: consumers see records below it, never beyond.
    pub fn high_watermark(&self) -> i64 {
        self.durable.offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Base offset of the active segment (the one appends go to; never compacted).
    pub fn active_segment_base(&self) -> i64 {
        self.active().base_offset
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// A sealed, synced segment whose batches were not all verified since the log was
    /// opened: (base offset, file, size), for the background scrub.
    pub fn next_unscrubbed(&self) -> Option<(i64, std::sync::Arc<std::fs::File>, u64)> {
        let active = self.active().base_offset;
        self.segments
            .values()
            .find(|s| {
                !s.scrubbed && s.base_offset != active && !self.unsealed.contains(&s.base_offset)
            })
            .map(|s| (s.base_offset, s.file(), s.size()))
    }

    pub fn mark_scrubbed(&mut self, base: i64) {
        if let Some(segment) = self.segments.get_mut(&base) {
            segment.scrubbed = true;
        }
    }

    /// Damaged ranges quarantined since the log was opened.
    pub fn quarantined(&self) -> u64 {
        self.quarantined
    }

    /// The largest idempotent producer id with state in this log.
    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.max_producer_id()
    }

    /// Why appends are refused, if a sync failed since the log was opened.
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Compresses (per policy) and writes the batches of one produce request. Convenience
    /// for callers that already hold the lock; [`Partition::append`] compresses outside it.
    pub fn append(
        &mut self,
        batches: &[(BatchHeader, &[u8])],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let prepared = prepare(batches, &self.config, now_ms)?;
        self.append_prepared(&prepared, now_ms)
    }

    /// Stamps offsets and writes prepared batches with a single write. All or nothing: a
    /// failed write is cut back. Retries of idempotent batches already in the log are
    /// answered with their original offsets and not written again.
    pub fn append_prepared(
        &mut self,
        batches: &[PreparedBatch<'_>],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if let Some(why) = &self.fenced {
            return Err(LogError::Fenced(why.clone()));
        }
        let mut next_offset = self.log_end_offset();
        let mut base_offset = next_offset;
        let mut buffer = Vec::new();
        let mut stamped = Vec::with_capacity(batches.len());
        let mut records = 0u64;
        let mut duplicate_end = None;
        // Producers with a batch earlier in this request: (epoch, its last sequence). The
        // next batch must follow that one, not the log's last batch.
        let mut in_request: Vec<(i64, i16, i32)> = Vec::new();
        for (i, (header, bytes)) in batches.iter().enumerate() {
            if header.is_idempotent() {
                if let Some(&(_, epoch, last)) = in_request
                    .iter()
                    .find(|(id, _, _)| *id == header.producer_id)
                {
                    let expected = if last == i32::MAX { 0 } else { last + 1 };
                    if header.producer_epoch != epoch || header.base_sequence != expected {
                        return Err(LogError::Sequence(
                            super::producer_state::SequenceError::OutOfOrder {
                                producer_id: header.producer_id,
                                got: header.base_sequence,
                                expected,
                            },
                        ));
                    }
                } else if let SequenceCheck::Duplicate {
                    base_offset: dup_base,
                    last_offset: dup_last,
                } = self.producers.check(header)?
                {
                    // A retry of a batch already in the log: answer with its offsets.
                    if i == 0 {
                        base_offset = dup_base;
                    }
                    duplicate_end = Some(dup_last);
                    continue;
                }
            }
            if header.is_idempotent() {
                in_request.retain(|(id, _, _)| *id != header.producer_id);
                in_request.push((
                    header.producer_id,
                    header.producer_epoch,
                    header.last_sequence(),
                ));
            }
            let start = buffer.len();
            buffer.extend_from_slice(bytes);
            batch::set_base_offset(&mut buffer[start..], next_offset);
            let mut stamped_header = BatchHeader::parse(&buffer[start..])?;
            stamped_header.base_offset = next_offset;
            stamped.push((start, stamped_header));
            next_offset = stamped_header.next_offset();
            records += header.record_count.max(0) as u64;
        }
        if buffer.is_empty() {
            let last_offset = duplicate_end.unwrap_or(next_offset - 1);
            return Ok(AppendInfo {
                base_offset,
                last_offset,
                records: 0,
                stored_bytes: 0,
                generation: self.generation,
            });
        }
        self.write_stamped(&buffer, &stamped, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            records,
            stored_bytes: buffer.len() as u64,
            generation: self.generation,
        })
    }

    /// Writes batches whose offsets are already stamped (contiguous from the log end) with
    /// one write, indexes them and records their producers. All or nothing: a failed write
    /// is cut back.
    fn write_stamped(
        &mut self,
        buffer: &[u8],
        stamped: &[(usize, BatchHeader)],
        now_ms: i64,
    ) -> Result<(), LogError> {
        self.maybe_roll(buffer.len() as u64, now_ms)?;
        let index_interval = self.config.index_interval_bytes;
        let active = self.active_mut();
        let position = active.size();
        let prior_next = active.next_offset();
        let write = (|| {
            active.append_bytes(buffer)?;
            for (start, header) in stamped {
                active.index_appended(header, position + *start as u64, index_interval)?;
            }
            Ok::<(), std::io::Error>(())
        })()
        // Nothing partial stays: cut the file and its indexes back to where we started.
        .map_err(|e| (e, active.truncate_to(position, prior_next).err()));
        if let Err((e, cut)) = write {
            if let Some(cut) = cut {
                error!(dir = %self.dir.display(), error = %cut, "could not cut back a failed append");
                self.fence(format!("a failed append could not be cut back: {cut}"));
            }
            return Err(LogError::io(&self.dir, e));
        }
        for (_, header) in stamped {
            self.producers.record(header);
        }
        Ok(())
    }

    /// Starts a new segment when the active one would pass `segment.bytes` or is older than
    /// `segment.ms`.
    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<(), LogError> {
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let full = active.size() + incoming > self.config.segment_bytes;
        let old = now_ms.saturating_sub(active.created_ms) > self.config.segment_ms;
        if full || old {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// `segment.ms` for a partition nobody writes to: seals an active segment older than
    /// that (so that compaction and retention can reach its records). Returns whether it did.
    pub fn roll_if_idle(&mut self, now_ms: i64) -> Result<bool, LogError> {
        let active = self.active();
        let old = now_ms.saturating_sub(active.created_ms) > self.config.segment_ms;
        if active.is_empty() || !old || self.fenced.is_some() {
            return Ok(false);
        }
        self.roll(now_ms)?;
        Ok(true)
    }

    /// Seals the active segment and starts a new one. Nothing is fsynced here (this runs
    /// under the partition lock): the next sync seals the old segment, syncs the directory
    /// entry of the new one and moves the recovery point.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        if let Some(why) = &self.fenced {
            return Err(LogError::Fenced(why.clone()));
        }
        let dir = self.dir.clone();
        let active = self.active();
        if active.is_empty() {
            // Nothing to seal (a new segment would reuse the same base offset).
            return Ok(());
        }
        let (sealed_base, base) = (active.base_offset, active.next_offset());
        let segment = Segment::create(&dir, base, now_ms).map_err(|e| LogError::io(&dir, e))?;
        self.dir_changes += 1;
        self.unsealed.insert(sealed_base);
        self.segments.insert(base, segment);
        Ok(())
    }

    /// DeleteRecords: moves the log start offset to `offset` (at most the high watermark)
    /// and deletes the segments wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let hw = self.durable.offset;
        // Only -1 means "up to the high watermark" (Kafka's HIGH_WATERMARK sentinel); any
        // other negative offset is out of range and deletes nothing.
        let offset = if offset == -1 { hw } else { offset };
        if !(0..=hw).contains(&offset) {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: hw,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            checkpoint::write(&self.dir, LOG_START_OFFSET, offset)
                .map_err(|e| LogError::io(&self.dir, e))?;
            self.delete_segments_below_start()?;
        }
        Ok(self.log_start_offset)
    }

    fn delete_segments_below_start(&mut self) -> Result<RetentionReport, LogError> {
        let mut report = RetentionReport::default();
        loop {
            let mut bases = self.segments.keys();
            let (Some(&first), Some(&second)) = (bases.next(), bases.next()) else {
                break;
            };
            if second > self.log_start_offset {
                break;
            }
            self.remove_segment(first, &mut report)?;
        }
        Ok(report)
    }

    fn remove_segment(&mut self, base: i64, report: &mut RetentionReport) -> Result<(), LogError> {
        if let Some(segment) = self.segments.remove(&base) {
            self.dir_changes += 1;
            self.unsealed.remove(&base);
            report.deleted_segments += 1;
            report.deleted_bytes += segment.size();
            segment
                .delete_files()
                .map_err(|e| LogError::io(&self.dir, e))?;
        }
        Ok(())
    }

    /// Deletes the oldest sealed segment; the log start moves to the next one. Used by
    /// retention and by the global disk budget.
    pub fn delete_oldest_segment(&mut self) -> Result<Option<RetentionReport>, LogError> {
        if self.segments.len() < 2 {
            return Ok(None);
        }
        let Some(&first) = self.segments.keys().next() else {
            return Ok(None);
        };
        let mut report = RetentionReport::default();
        self.remove_segment(first, &mut report)?;
        let next_base = self.segments.keys().next().copied().unwrap_or(first);
        if next_base > self.log_start_offset {
            self.log_start_offset = next_base;
            checkpoint::write(&self.dir, LOG_START_OFFSET, next_base)
                .map_err(|e| LogError::io(&self.dir, e))?;
        }
        Ok(Some(report))
    }

    /// Base offset and max timestamp of the oldest sealed segment, for retention decisions.
    pub fn oldest_sealed(&self) -> Option<(i64, Option<i64>, u64)> {
        if self.segments.len() < 2 {
            return None;
        }
        self.segments
            .values()
            .next()
            .map(|s| (s.base_offset, s.max_timestamp(), s.size()))
    }

    /// Where the oldest sealed segment ends (the next segment's base offset).
    pub fn oldest_sealed_end(&self) -> Option<i64> {
        if self.segments.len() < 2 {
            return None;
        }
        self.segments.keys().nth(1).copied()
    }

    /// Applies `retention.ms` and `retention.bytes` (sealed segments only, oldest first).
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let mut total = RetentionReport::default();
        if !self.config.cleanup.deletes() {
            // cleanup.policy=compact: the cleaner bounds the log, retention never deletes.
            return Ok(total);
        }
        while let Some((_, max_ts, _)) = self.oldest_sealed() {
            let expired = self.config.retention_ms >= 0
                && super::clock_is_plausible(now_ms)
                && max_ts.is_some_and(|ts| now_ms.saturating_sub(ts) > self.config.retention_ms);
            let oversize = self.config.retention_bytes >= 0
                && self.size_bytes() > self.config.retention_bytes as u64;
            if !(expired || oversize) {
                break;
            }
            match self.delete_oldest_segment()? {
                Some(r) => {
                    total.deleted_segments += r.deleted_segments;
                    total.deleted_bytes += r.deleted_bytes;
                }
                None => break,
            }
        }
        if total.deleted_segments > 0 {
            info!(dir = %self.dir.display(), segments = total.deleted_segments,
                bytes = total.deleted_bytes, log_start = self.log_start_offset, "retention deleted segments");
        }
        Ok(total)
    }
}

/// A topic partition as the broker holds it.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Mutex<Log>,
    /// Long polls waiting for the high watermark to move.
    pub watchers: Watchers,
}

impl Partition {
    pub fn new(topic: &str, index: i32, log: Log) -> Partition {
        Partition {
            topic: topic.to_string(),
            index,
            log: Mutex::new(log),
            watchers: Watchers::default(),
        }
    }

    /// Locks the log. A poisoned lock (a panic while appending) is taken over: the log's
    /// own invariants are restored by the cut-back on failed appends.
    pub fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (log start, high watermark): what the bridges, the mirror and the sink may read.
    pub fn bounds(&self) -> (i64, i64) {
        let log = self.lock();
        (log.log_start_offset(), log.high_watermark())
    }

    /// Appends one request's batches: limits and compression are applied before the lock
    /// is taken, the positioned write happens under it.
    pub fn append(
        &self,
        batches: &[(BatchHeader, &[u8])],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let config = self.lock().config().clone();
        let prepared = prepare(batches, &config, now_ms)?;
        self.lock().append_prepared(&prepared, now_ms)
    }

    /// Appends mirrored batches at the offsets they carry (checked outside the lock).
    pub fn append_mirrored(
        &self,
        batches: &[(BatchHeader, &[u8])],
        now_ms: i64,
    ) -> Result<MirroredAppend, LogError> {
        let config = self.lock().config().clone();
        let prepared = prepare_mirrored(batches, &config)?;
        self.lock().append_mirrored(&prepared, now_ms)
    }

    /// Reopens a fenced log from disk (recovery scan included). Returns true when it did.
    /// Runs on a blocking thread (the retention task): it reads and fsyncs under the lock,
    /// which is acceptable only because a fenced partition serves no appends anyway.
    pub fn reopen_if_fenced(&self, now_ms: i64) -> Result<bool, LogError> {
        let mut log = self.lock();
        if log.fenced.is_none() {
            return Ok(false);
        }
        let (mut fresh, report) = Log::open(&log.dir, log.config.clone(), now_ms)?;
        fresh.generation = log.generation + 1;
        info!(topic = %self.topic, partition = self.index, log_end = fresh.log_end_offset(),
            truncated = report.truncated_bytes, "fenced partition reopened from disk; appends resume");
        *log = fresh;
        Ok(true)
    }
}
