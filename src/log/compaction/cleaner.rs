//! One cleaning pass over a partition (see the module comment of `compaction`): build the
//! key map over the dirty part, rewrite the sealed segments below the map's end group by
//! group, and hand each rewritten group to the caller to swap in.
//!
//! Everything here runs without the partition lock: the sealed segments it reads never
//! change in place (the file handles stay valid even if retention deletes them meanwhile,
//! and the swap checks that every input is still there before it commits).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::key_map::{digest, KeyMap};
use super::swap::{self, Step};
use super::thin::{self, Thinned};
use super::{CleanerLimits, CompactionConfig};
use crate::log::batch::{self, BatchHeader, HEADER_LEN};
use crate::log::segment::Segment;
use crate::log::LogError;

#[derive(Debug, Error)]
pub enum CleanError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("segment {base} of {dir}: {reason} (the partition is not cleaned; `tern check` reports damage)")]
    Unreadable {
        dir: String,
        base: i64,
        reason: String,
    },
    #[error("the cleaner stopped at step {0:?} (test hook)")]
    Stopped(Step),
}

/// A sealed segment as the cleaner reads it.
#[derive(Debug, Clone)]
pub struct SegmentSnapshot {
    pub base: i64,
    pub file: Arc<File>,
    pub size: u64,
    pub next_offset: i64,
}

/// What one pass works on, taken under the partition lock.
#[derive(Debug, Clone)]
pub struct CleaningPlan {
    pub dir: PathBuf,
    /// The sealed, durable segments from the log start up to `cleanable_end`, in order.
    pub segments: Vec<SegmentSnapshot>,
    /// Offsets below this were cleaned by an earlier pass.
    pub first_dirty: i64,
    /// Offsets from here on are not cleaned (the active segment, or too young).
    pub cleanable_end: i64,
    pub segment_bytes: u64,
    pub index_interval_bytes: u64,
    pub compaction: CompactionConfig,
    pub now_ms: i64,
}

/// A group of old segments and the segment that replaces them, ready to swap in.
#[derive(Debug)]
pub struct CleanedGroup {
    /// (base offset, file) of every replaced segment: the swap checks they are unchanged.
    pub inputs: Vec<(i64, Arc<File>)>,
    /// The replaced offsets are `[base, end)`.
    pub end: i64,
    pub segment: Segment,
    pub bytes_before: u64,
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// The new cleaner point: offsets below it are clean.
    pub map_end: i64,
    pub keys: usize,
    pub segments_read: usize,
    pub groups_swapped: usize,
    pub bytes_read: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// When the earliest tombstone the pass kept expires (`delete.retention.ms` after its
    /// batch's timestamp): a pass is due then even if nothing new is dirty.
    pub next_tombstone_expiry: Option<i64>,
}

/// Keeps the cleaner's reads and writes under `storage.cleaner_io_max_bytes_per_second`.
struct Throttle {
    rate: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn account(&mut self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// What a visitor of [`batches`] wants next.
enum Next {
    Continue,
    Stop,
}

fn unreadable(
    plan: &CleaningPlan,
    segment: &SegmentSnapshot,
    position: u64,
    why: impl std::fmt::Display,
) -> CleanError {
    CleanError::Unreadable {
        dir: plan.dir.display().to_string(),
        base: segment.base,
        reason: format!("byte {position}: {why}"),
    }
}

/// The header of the batch at `position` of a sealed segment.
fn header_at(
    plan: &CleaningPlan,
    segment: &SegmentSnapshot,
    position: u64,
) -> Result<BatchHeader, CleanError> {
    let mut bytes = [0u8; HEADER_LEN];
    segment
        .file
        .read_exact_at(&mut bytes, position)
        .map_err(|e| unreadable(plan, segment, position, e))?;
    BatchHeader::parse(&bytes).map_err(|e| unreadable(plan, segment, position, e))
}

/// Reads the batches of a sealed segment one by one (CRC checked).
fn batches(
    plan: &CleaningPlan,
    segment: &SegmentSnapshot,
    throttle: &mut Throttle,
    mut visit: impl FnMut(&BatchHeader, &[u8]) -> Result<Next, CleanError>,
) -> Result<(), CleanError> {
    let mut position = 0u64;
    let mut bytes = Vec::new();
    while position < segment.size {
        let header = header_at(plan, segment, position)?;
        bytes.resize(header.total_len(), 0);
        segment
            .file
            .read_exact_at(&mut bytes, position)
            .map_err(|e| unreadable(plan, segment, position, e))?;
        batch::validate(&bytes).map_err(|e| unreadable(plan, segment, position, e))?;
        throttle.account(bytes.len() as u64);
        if let Next::Stop = visit(&header, &bytes)? {
            break;
        }
        position += bytes.len() as u64;
    }
    Ok(())
}

/// The batch headers of a sealed segment (61 bytes read per batch).
fn headers(plan: &CleaningPlan, segment: &SegmentSnapshot) -> Result<Vec<BatchHeader>, CleanError> {
    let mut out = Vec::new();
    let mut position = 0u64;
    while position < segment.size {
        let header = header_at(plan, segment, position)?;
        position += header.total_len() as u64;
        out.push(header);
    }
    Ok(out)
}

/// Builds the key map over `[first_dirty, cleanable_end)`. Returns the map and where it
/// ends: the first offset whose key did not fit (or `cleanable_end`).
fn build_key_map(
    plan: &CleaningPlan,
    limits: &CleanerLimits,
    throttle: &mut Throttle,
    report: &mut PassReport,
) -> Result<(KeyMap, i64), CleanError> {
    let mut map = KeyMap::with_memory(limits.key_map_bytes);
    let mut map_end = plan.cleanable_end;
    for segment in &plan.segments {
        if segment.next_offset <= plan.first_dirty {
            continue;
        }
        let mut full = false;
        batches(plan, segment, throttle, |header, bytes| {
            if header.is_control() || header.next_offset() <= plan.first_dirty {
                return Ok(Next::Continue);
            }
            // Records that cannot be read are kept as they are: they do not enter the map.
            let _ = thin::for_each_record(bytes, header, |offset, record| {
                if full || offset < plan.first_dirty {
                    return;
                }
                let Some(key) = record.key else {
                    return;
                };
                if !map.insert(&digest(key), offset) {
                    full = true;
                    map_end = offset;
                }
            });
            Ok(if full { Next::Stop } else { Next::Continue })
        })?;
        if full {
            break;
        }
    }
    report.keys = map.len();
    Ok((map, map_end))
}

/// Splits the segments below `map_end` into groups whose sizes add up to at most
/// `segment.bytes` (small segments merge) and whose offsets fit a segment's index.
fn groups(plan: &CleaningPlan, map_end: i64) -> Vec<Vec<SegmentSnapshot>> {
    let mut out: Vec<Vec<SegmentSnapshot>> = Vec::new();
    let mut size = 0u64;
    for segment in plan.segments.iter().filter(|s| s.base < map_end) {
        let fits = out.last().is_some_and(|group| {
            let first = group[0].base;
            size + segment.size <= plan.segment_bytes
                && segment.next_offset - first < i32::MAX as i64
        });
        if fits {
            size += segment.size;
            if let Some(group) = out.last_mut() {
                group.push(segment.clone());
            }
        } else {
            size = segment.size;
            out.push(vec![segment.clone()]);
        }
    }
    out
}

/// The decisions of one pass: which records stay.
struct Retention<'a> {
    map: &'a KeyMap,
    map_end: i64,
    config: &'a CompactionConfig,
    now_ms: i64,
    /// The last batch (base offset) of every idempotent producer in the cleaned range.
    producers_last_batch: HashMap<i64, i64>,
}

impl Retention<'_> {
    fn keep(
        &self,
        header: &BatchHeader,
        offset: i64,
        record: &super::record_scan::RecordView<'_>,
    ) -> bool {
        if offset >= self.map_end {
            return true;
        }
        // A compacted log holds keyed records only (Kafka's cleaner drops the others).
        let Some(key) = record.key else {
            return false;
        };
        if self
            .map
            .latest(&digest(key))
            .is_some_and(|latest| offset < latest)
        {
            return false;
        }
        let tombstone_expired =
            self.now_ms.saturating_sub(header.max_timestamp) > self.config.delete_retention_ms;
        !(record.is_tombstone && tombstone_expired)
    }

    /// Whether an emptied batch stays as a bare header (see the module comment).
    fn keeps_empty(&self, header: &BatchHeader, last_of_group: bool) -> bool {
        last_of_group
            || (header.producer_id >= 0
                && self.producers_last_batch.get(&header.producer_id) == Some(&header.base_offset))
    }
}

/// One batch after thinning: the bytes to write (none: dropped) and what was removed.
fn thin_batch(
    retention: &Retention<'_>,
    header: &BatchHeader,
    bytes: &[u8],
    last_of_group: bool,
    report: &mut PassReport,
) -> Result<Option<Vec<u8>>, CleanError> {
    if header.is_control() {
        return Ok(Some(bytes.to_vec()));
    }
    let mut tombstones = 0u64;
    let mut kept_tombstone = false;
    let outcome = thin::thin(bytes, header, |offset, record| {
        let keep = retention.keep(header, offset, record);
        if record.is_tombstone {
            tombstones += u64::from(!keep);
            kept_tombstone |= keep;
        }
        keep
    });
    if kept_tombstone {
        let expiry = header
            .max_timestamp
            .saturating_add(retention.config.delete_retention_ms);
        report.next_tombstone_expiry = Some(
            report
                .next_tombstone_expiry
                .map_or(expiry, |e| e.min(expiry)),
        );
    }
    let outcome = match outcome {
        Ok(o) => o,
        // Unreadable records: kept as stored, never guessed at.
        Err(_) => Thinned::Unchanged,
    };
    let kept = match outcome {
        Thinned::Unchanged => return Ok(Some(bytes.to_vec())),
        Thinned::Rewritten(b) => Some(b),
        Thinned::Emptied => retention
            .keeps_empty(header, last_of_group)
            .then(|| thin::emptied(bytes))
            .transpose()
            .map_err(|e| CleanError::Log(LogError::Corrupt(e)))?,
    };
    let remaining = kept
        .as_deref()
        .and_then(|b| BatchHeader::parse(b).ok())
        .map_or(0, |h| h.record_count);
    report.records_removed += (header.record_count - remaining).max(0) as u64;
    report.tombstones_removed += tombstones;
    Ok(kept)
}

/// Runs one pass. `install` swaps a rewritten group in (under the partition lock) and
/// returns whether it did (false: the log changed meanwhile and the group was dropped).
pub fn run(
    plan: &CleaningPlan,
    limits: &CleanerLimits,
    stop_at: Option<Step>,
    mut install: impl FnMut(CleanedGroup) -> Result<bool, CleanError>,
) -> Result<PassReport, CleanError> {
    let mut throttle = Throttle::new(limits.io_max_bytes_per_second);
    let mut report = PassReport::default();
    let (map, map_end) = build_key_map(plan, limits, &mut throttle, &mut report)?;
    report.map_end = map_end;
    let groups = groups(plan, map_end);
    // The last batch of each idempotent producer among the segments to rewrite.
    let mut producers_last_batch = HashMap::new();
    for segment in groups.iter().flatten() {
        for header in headers(plan, segment)? {
            if header.producer_id >= 0 {
                producers_last_batch.insert(header.producer_id, header.base_offset);
            }
        }
    }
    let retention = Retention {
        map: &map,
        map_end,
        config: &plan.compaction,
        now_ms: plan.now_ms,
        producers_last_batch,
    };
    for group in groups {
        report.segments_read += group.len();
        if let Some(cleaned) = rewrite_group(plan, &retention, &group, &mut throttle, &mut report)?
        {
            if stop_at == Some(Step::Staged) {
                return Err(CleanError::Stopped(Step::Staged));
            }
            let base = cleaned.segment.base_offset;
            let (before, after) = (cleaned.bytes_before, cleaned.segment.size());
            match install(cleaned) {
                Ok(true) => {
                    report.groups_swapped += 1;
                    report.bytes_before += before;
                    report.bytes_after += after;
                }
                Ok(false) => {
                    swap::discard(&plan.dir, base).map_err(|e| LogError::io(&plan.dir, e))?;
                }
                Err(e) => {
                    if !matches!(e, CleanError::Stopped(_)) {
                        let _ = swap::discard(&plan.dir, base);
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(report)
}

/// Writes the replacement of one group, or returns `None` when nothing in it changes
/// (a lone segment is then left as it is: no write wears the card for nothing).
fn rewrite_group(
    plan: &CleaningPlan,
    retention: &Retention<'_>,
    group: &[SegmentSnapshot],
    throttle: &mut Throttle,
    report: &mut PassReport,
) -> Result<Option<CleanedGroup>, CleanError> {
    let Some(last_segment) = group.last() else {
        return Ok(None);
    };
    // Where the group's data ends (its last batch reaches it), and the end of the offsets
    // it replaces (an empty last segment still counts).
    let group_end = last_segment.next_offset;
    let swap_end = group_end.max(last_segment.base + 1);
    let bytes_before: u64 = group.iter().map(|s| s.size).sum();
    if group.len() == 1 {
        let mut changes = false;
        let mut scratch = PassReport::default();
        batches(plan, &group[0], throttle, |header, bytes| {
            let last = header.next_offset() >= group_end;
            let kept = thin_batch(retention, header, bytes, last, &mut scratch)?;
            changes = kept.as_deref() != Some(bytes);
            Ok(if changes { Next::Stop } else { Next::Continue })
        })?;
        if !changes {
            // Left as it is, but its tombstones still decide when a pass is due.
            if let Some(expiry) = scratch.next_tombstone_expiry {
                report.next_tombstone_expiry = Some(
                    report
                        .next_tombstone_expiry
                        .map_or(expiry, |e| e.min(expiry)),
                );
            }
            return Ok(None);
        }
    }
    let base = group[0].base;
    let dir = &plan.dir;
    let io = |e: std::io::Error| CleanError::Log(LogError::io(dir, e));
    swap::discard(dir, base).map_err(io)?;
    let mut segment = Segment::create_staged(dir, base, plan.now_ms).map_err(io)?;
    let mut written = 0u64;
    for input in group {
        batches(plan, input, throttle, |header, bytes| {
            let last = header.next_offset() >= group_end;
            if let Some(kept) = thin_batch(retention, header, bytes, last, report)? {
                let position = segment.size();
                let stored = BatchHeader::parse(&kept).map_err(|e| CleanError::Log(e.into()))?;
                segment.append_bytes(&kept).map_err(io)?;
                segment
                    .index_appended(&stored, position, plan.index_interval_bytes)
                    .map_err(io)?;
                written += kept.len() as u64;
            }
            Ok(Next::Continue)
        })?;
    }
    throttle.account(written);
    segment.sync_all().map_err(io)?;
    Ok(Some(CleanedGroup {
        inputs: group
            .iter()
            .map(|s| (s.base, Arc::clone(&s.file)))
            .collect(),
        end: swap_end,
        segment,
        bytes_before,
    }))
}
