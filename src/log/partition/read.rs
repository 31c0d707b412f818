//! The read path of a partition: locating whole batches under the lock, reading (and
//! checking) them outside it, quarantining damaged batches, and lookups by timestamp.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::error;

use super::{Log, Partition, Segment};
use crate::log::batch::{self, BatchHeader};
use crate::log::damage::DamagedAt;
use crate::log::LogError;

/// Damaged ranges one read may quarantine before it gives up.
const MAX_QUARANTINES_PER_READ: usize = 8;

/// Bytes for a fetch: whole batches, never past the durable end.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub bytes: Vec<u8>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// A read located under the partition lock, to be done without it. The file handle stays
/// valid if retention deletes the segment meanwhile; a concurrent truncation only shortens
/// what is read, and only whole batches are returned.
#[derive(Debug)]
pub struct ReadPlan {
    dir: PathBuf,
    source: Option<Source>,
    max_bytes: usize,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// Where a planned read starts.
#[derive(Debug)]
struct Source {
    segment_base: i64,
    file: Arc<File>,
    /// First batch position, and the durable limit in that file.
    position: u64,
    limit: u64,
}

/// A damaged batch in a file: (byte position, reason).
type DamageInFile = (u64, String);

/// A damaged batch met by a read: (segment base, byte position, reason).
pub type Damage = (i64, u64, String);

impl ReadPlan {
    /// Reads the bytes. Every batch is checked (CRC): the result stops before the first
    /// damaged one, which is reported for quarantine.
    pub fn execute(self) -> Result<(ReadResult, Option<Damage>), LogError> {
        let (bytes, damage) = match &self.source {
            None => (Vec::new(), None),
            Some(source) => {
                let (bytes, damage) =
                    read_whole_batches(&source.file, source.position, source.limit, self.max_bytes)
                        .map_err(|e| LogError::io(&self.dir, e))?;
                (
                    bytes,
                    damage.map(|(at, why)| (source.segment_base, at, why)),
                )
            }
        };
        let result = ReadResult {
            bytes,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
        };
        Ok((result, damage))
    }
}

/// Reads whole batches from `position`, at most `max_bytes` unless the first batch alone is
/// larger (then that batch, as Kafka does since KIP-74), never past `limit`. Each batch's
/// CRC is checked: the bytes end before the first damaged batch, whose position and
/// reason are returned with them.
fn read_whole_batches(
    file: &File,
    position: u64,
    limit: u64,
    max_bytes: usize,
) -> std::io::Result<(Vec<u8>, Option<DamageInFile>)> {
    let available = limit.saturating_sub(position) as usize;
    if available < batch::HEADER_LEN {
        return Ok((Vec::new(), None));
    }
    let mut header = [0u8; batch::HEADER_LEN];
    file.read_exact_at(&mut header, position)?;
    let first = match BatchHeader::parse(&header) {
        Ok(h) => h,
        Err(e) => return Ok((Vec::new(), Some((position, e.to_string())))),
    };
    let want = available.min(max_bytes.max(first.total_len()));
    let mut bytes = vec![0u8; want];
    file.read_exact_at(&mut bytes, position)?;
    let mut end = 0;
    let mut damage = None;
    while end < bytes.len() {
        let header = match BatchHeader::parse(&bytes[end..]) {
            Ok(h) => h,
            Err(_) if bytes.len() - end < batch::HEADER_LEN => break,
            Err(e) => {
                damage = Some((position + end as u64, e.to_string()));
                break;
            }
        };
        let len = header.total_len();
        if end + len > bytes.len() {
            // Cut by max_bytes, or a length field that runs past the durable end.
            if position + (end + len) as u64 > limit {
                damage = Some((
                    position + end as u64,
                    format!("batch of {len} bytes runs past the end of the log"),
                ));
            }
            break;
        }
        if let Err(e) = batch::validate(&bytes[end..end + len]) {
            damage = Some((position + end as u64, e.to_string()));
            break;
        }
        end += len;
    }
    bytes.truncate(end);
    Ok((bytes, damage))
}

impl Log {
    /// A segment read error as a `LogError`, keeping damage apart from plain I/O errors.
    fn segment_error(&self, segment_base: i64, e: std::io::Error) -> LogError {
        match DamagedAt::from_io(&e) {
            Some(d) => LogError::Damaged {
                segment_base,
                position: d.position,
                reason: d.reason,
            },
            None => LogError::io(&self.dir, e),
        }
    }

    /// Reads whole batches starting with the one that contains `offset` (for callers that
    /// hold the lock; [`Partition::read`] reads the bytes outside it).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.plan_read(offset, max_bytes)?
            .execute()
            .map(|(result, _)| result)
    }

    /// Finds where a read of whole batches starting with the one that contains `offset`
    /// begins and how far it may go. Reading the bytes is left to [`ReadPlan::execute`].
    pub fn plan_read(&self, offset: i64, max_bytes: usize) -> Result<ReadPlan, LogError> {
        let hw = self.durable.offset;
        if offset < self.log_start_offset || offset > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: hw,
            });
        }
        let mut plan = ReadPlan {
            dir: self.dir.clone(),
            source: None,
            max_bytes,
            high_watermark: hw,
            log_start_offset: self.log_start_offset,
        };
        if offset == hw {
            return Ok(plan);
        }
        let first = self.segments.range(..=offset).next_back().map(|(b, _)| *b);
        let from = first.unwrap_or(i64::MIN);
        for (base, segment) in self.segments.range(from..) {
            let limit = self.durable_limit(segment);
            let position = segment
                .find_position(offset, limit)
                .map_err(|e| self.segment_error(*base, e))?;
            if let Some(position) = position {
                plan.source = Some(Source {
                    segment_base: *base,
                    file: segment.file(),
                    position,
                    limit,
                });
                break;
            }
        }
        Ok(plan)
    }

    /// Stored bytes of the durable batches from the one holding `offset` to the high
    /// watermark: how much a reader (a mirror) starting at `offset` still has to read.
    pub fn durable_bytes_from(&self, offset: i64) -> Result<u64, LogError> {
        let offset = offset.max(self.log_start_offset);
        if offset >= self.durable.offset {
            return Ok(0);
        }
        let first = self.segments.range(..=offset).next_back().map(|(b, _)| *b);
        let mut total = 0;
        let mut found = false;
        for (base, segment) in self.segments.range(first.unwrap_or(i64::MIN)..) {
            let limit = self.durable_limit(segment);
            if found {
                total += limit;
                continue;
            }
            if let Some(position) = segment
                .find_position(offset, limit)
                .map_err(|e| self.segment_error(*base, e))?
            {
                total += limit.saturating_sub(position);
                found = true;
            }
        }
        Ok(total)
    }

    /// How far into `segment` readers may go.
    fn durable_limit(&self, segment: &Segment) -> u64 {
        use std::cmp::Ordering;
        match segment.base_offset.cmp(&self.durable.segment_base) {
            Ordering::Less => segment.size(),
            Ordering::Equal => self.durable.position.min(segment.size()),
            Ordering::Greater => 0,
        }
    }

    /// The first batch holding a record stamped at or after `timestamp` (located through
    /// the time index), for [`Partition::offset_for_timestamp`] to decode outside the lock.
    fn batch_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(Arc<File>, u64, BatchHeader)>, LogError> {
        for segment in self.segments.values() {
            if segment.max_timestamp().is_none_or(|max| max < timestamp) {
                continue;
            }
            let limit = self.durable_limit(segment);
            let base = segment.base_offset;
            let from = segment
                .time_lookup_offset(timestamp)
                .map_err(|e| LogError::io(&self.dir, e))?;
            let Some(position) = segment
                .find_position(from, limit)
                .map_err(|e| self.segment_error(base, e))?
            else {
                continue;
            };
            let headers = segment
                .headers_from(position, limit)
                .map_err(|e| self.segment_error(base, e))?;
            for (position, header) in headers {
                if header.max_timestamp < timestamp || header.last_offset() < self.log_start_offset
                {
                    continue;
                }
                return Ok(Some((segment.file(), position, header)));
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let mut best: Option<(i64, i64)> = None;
        for segment in self.segments.values() {
            let limit = self.durable_limit(segment);
            for (_, header) in segment
                .headers_from(0, limit)
                .map_err(|e| self.segment_error(segment.base_offset, e))?
            {
                if best.is_none_or(|(_, ts)| header.max_timestamp > ts) {
                    best = Some((header.last_offset(), header.max_timestamp));
                }
            }
        }
        Ok(best)
    }
}

impl Partition {
    /// Reads whole batches from `offset`: located under the lock, read without it. Batches
    /// are checked (CRC) as they are read; a damaged one is quarantined and never served,
    /// and the read goes on after it.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        // Each round quarantines one damaged range; a few rounds cover any read.
        for _ in 0..MAX_QUARANTINES_PER_READ {
            let planned = self.lock().plan_read(offset, max_bytes);
            let plan = match planned {
                Err(LogError::Damaged {
                    segment_base,
                    position,
                    reason,
                }) => {
                    self.quarantine(segment_base, position, &reason)?;
                    continue;
                }
                other => other?,
            };
            let (result, damage) = plan.execute()?;
            match damage {
                Some((segment_base, position, reason)) => {
                    self.quarantine(segment_base, position, &reason)?;
                    if !result.bytes.is_empty() {
                        return Ok(result);
                    }
                }
                None => return Ok(result),
            }
        }
        Err(LogError::Damaged {
            segment_base: -1,
            position: 0,
            reason: "too much damage around this offset".to_string(),
        })
    }

    /// Quarantines the damaged range starting at `position` of a segment: logged, counted
    /// and skipped by every later read.
    pub fn quarantine(
        &self,
        segment_base: i64,
        position: u64,
        reason: &str,
    ) -> Result<(), LogError> {
        let mut log = self.lock();
        let dir = log.dir.clone();
        let Some(segment) = log.segments.get_mut(&segment_base) else {
            return Ok(());
        };
        let known = segment
            .damaged()
            .iter()
            .any(|(s, e)| (*s..*e).contains(&position));
        let (start, end) = segment
            .quarantine(position)
            .map_err(|e| LogError::io(&dir, e))?;
        if !known {
            log.quarantined += 1;
            error!(topic = %self.topic, partition = self.index, segment = segment_base,
                from_byte = start, to_byte = end, %reason,
                "damaged batch quarantined: it is never served; reads continue after it (run `tern check` on the data directory for a full report)");
        }
        Ok(())
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is >= `timestamp`,
    /// with that timestamp; `None` when every record is older. The batch is located under
    /// the lock and decoded (with bounded decompression) outside it.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let (found, log_start, dir) = {
            let log = self.lock();
            (
                log.batch_for_timestamp(timestamp)?,
                log.log_start_offset(),
                log.dir.clone(),
            )
        };
        let Some((file, position, header)) = found else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; header.total_len()];
        file.read_exact_at(&mut bytes, position)
            .map_err(|e| LogError::io(&dir, e))?;
        let found = crate::log::records::first_at_or_after(&bytes, timestamp)
            .unwrap_or((header.base_offset, header.max_timestamp));
        Ok(Some((found.0.max(log_start), found.1)))
    }
}
