//! Appends that keep the offsets a batch already carries: the hub's side of mirroring.
//! A batch is written only at the log end. One wholly below the end is a duplicate (a
//! resend after a lost acknowledgement) and is skipped; one above it means the source
//! deleted records before they were mirrored, and the log jumps over the gap (a new
//! segment starts at the batch's offset, as after compaction the offsets in between
//! simply do not exist).

use std::borrow::Cow;

use super::{Log, PreparedBatch, Segment};
use crate::log::batch::{self, BatchHeader};
use crate::log::checkpoint::{self, LOG_START_OFFSET};
use crate::log::{LogConfig, LogError};

/// What one mirrored append did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirroredAppend {
    /// Batches written, and the records in them.
    pub batches: u64,
    pub records: u64,
    pub stored_bytes: u64,
    /// Batches skipped because the log already held them.
    pub duplicates: u64,
    /// Offset ranges `[from, to)` jumped over because the source no longer had them.
    pub gaps: Vec<(i64, i64)>,
    /// The log end after the append, and the generation a durability wait must match.
    pub log_end: i64,
    pub generation: u64,
}

/// Checks mirrored batches before the partition lock: CRC, structure and records (with
/// bounded decompression). Batches are stored exactly as they came, never recompressed;
/// a batch larger than the hub's `max.message.bytes` is still taken (refusing it would
/// stall the mirror for ever), with its records checked against its own size.
pub fn prepare_mirrored<'a>(
    batches: &[(BatchHeader, &'a [u8])],
    config: &LogConfig,
) -> Result<Vec<PreparedBatch<'a>>, LogError> {
    let mut out = Vec::with_capacity(batches.len());
    for (header, bytes) in batches {
        let limit = batch::uncompressed_limit(header, config.max_message_bytes.max(bytes.len()));
        // Batches from a compacted source may have gaps between their records' offsets.
        let rules = crate::log::record_check::Rules::stored(header.last_offset_delta);
        batch::validate_records(bytes, header, limit, rules)
            .map_err(|e| LogError::InvalidRecords(e.to_string()))?;
        out.push((*header, Cow::Borrowed(*bytes)));
    }
    Ok(out)
}

impl Log {
    /// Writes mirrored batches at the offsets they carry (see the module comment).
    pub fn append_mirrored(
        &mut self,
        batches: &[PreparedBatch<'_>],
        now_ms: i64,
    ) -> Result<MirroredAppend, LogError> {
        if let Some(why) = &self.fenced {
            return Err(LogError::Fenced(why.clone()));
        }
        let mut outcome = MirroredAppend::default();
        let mut end = self.log_end_offset();
        let mut run: Vec<u8> = Vec::new();
        let mut stamped: Vec<(usize, BatchHeader)> = Vec::new();
        for (header, bytes) in batches {
            if header.next_offset() <= end {
                outcome.duplicates += 1;
                continue;
            }
            if header.base_offset < end {
                return Err(LogError::MirrorOverlap {
                    base: header.base_offset,
                    last: header.last_offset(),
                    end,
                });
            }
            if header.base_offset > end {
                if !run.is_empty() {
                    self.write_stamped(&run, &stamped, now_ms)?;
                    run.clear();
                    stamped.clear();
                }
                self.jump_to(header.base_offset, now_ms)?;
                outcome.gaps.push((end, header.base_offset));
            }
            stamped.push((run.len(), *header));
            run.extend_from_slice(bytes);
            end = header.next_offset();
            outcome.batches += 1;
            outcome.records += header.record_count.max(0) as u64;
            outcome.stored_bytes += bytes.len() as u64;
        }
        if !run.is_empty() {
            self.write_stamped(&run, &stamped, now_ms)?;
        }
        outcome.log_end = self.log_end_offset();
        outcome.generation = self.generation;
        Ok(outcome)
    }

    /// Moves the log end forward to `offset` over offsets that will never exist here: the
    /// active segment is sealed (even when empty: a failed sync must always find the
    /// segment it rolls back to) and a new one starts at `offset`. When the log held
    /// nothing readable, its start moves too.
    fn jump_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let old_base = self.active().base_offset;
        let nothing_stored = self.log_start_offset >= self.log_end_offset();
        let segment = Segment::create(&dir, offset, now_ms).map_err(|e| LogError::io(&dir, e))?;
        self.dir_changes += 1;
        self.unsealed.insert(old_base);
        self.segments.insert(offset, segment);
        if nothing_stored {
            self.log_start_offset = offset;
            checkpoint::write(&dir, LOG_START_OFFSET, offset).map_err(|e| LogError::io(&dir, e))?;
        }
        Ok(())
    }
}
