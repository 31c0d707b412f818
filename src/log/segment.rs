//! One segment: `<base offset>.log` (batches back to back) with its `.index` and
//! `.timeindex`. A segment knows nothing of topics, retention or durability waits.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{BatchError, BatchHeader, HEADER_LEN};
use super::damage::DamagedAt;
use super::index::{OffsetIndex, TimeIndex};

/// File name stem of a segment: its base offset, zero-padded to 20 digits as Kafka does.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// What scanning a segment found.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub batches: u64,
    pub valid_bytes: u64,
    /// Bytes after the last valid batch that recovery cut off.
    pub truncated_bytes: u64,
    /// Why the scan stopped early, if it did.
    pub stopped_by: Option<String>,
    /// Damaged ranges quarantined in a sealed segment: (from byte, to byte, why).
    pub damaged: Vec<(u64, u64, String)>,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    dir: PathBuf,
    log: Arc<File>,
    size: u64,
    index: OffsetIndex,
    time_index: TimeIndex,
    next_offset: i64,
    bytes_since_index_entry: u64,
    /// Wall-clock milliseconds of the first append, for `segment.ms` rolling.
    pub created_ms: i64,
    /// Byte ranges found damaged (quarantined): never served, skipped by every walk.
    damaged: Vec<(u64, u64)>,
    /// Every batch of this (sealed) segment was verified since it was opened.
    pub scrubbed: bool,
}

/// Suffix of the files of a segment the cleaner is still writing (see `compaction::swap`).
pub const STAGED_SUFFIX: &str = ".cleaned";

impl Segment {
    /// The segment's log, offset index and time index files.
    pub fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = file_stem(base_offset);
        (
            dir.join(format!("{stem}.log")),
            dir.join(format!("{stem}.index")),
            dir.join(format!("{stem}.timeindex")),
        )
    }

    /// Where the cleaner writes a segment before swapping it in: the final names plus
    /// [`STAGED_SUFFIX`], so that nothing reads them as a segment until the swap.
    pub fn staged_paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        let (log, index, time_index) = Self::paths(dir, base_offset);
        let staged = |p: PathBuf| {
            let mut name = p.into_os_string();
            name.push(STAGED_SUFFIX);
            PathBuf::from(name)
        };
        (staged(log), staged(index), staged(time_index))
    }

    /// Creates an empty segment (the file must not hold data yet).
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        Self::create_at(dir, base_offset, now_ms, Self::paths(dir, base_offset))
    }

    /// Creates an empty segment under its staged names (the cleaner's output).
    pub fn create_staged(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        Self::create_at(
            dir,
            base_offset,
            now_ms,
            Self::staged_paths(dir, base_offset),
        )
    }

    fn create_at(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        (log, index, time_index): (PathBuf, PathBuf, PathBuf),
    ) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log)?;
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log: Arc::new(file),
            size: 0,
            index: OffsetIndex::open(&index, true)?,
            time_index: TimeIndex::open(&time_index, true)?,
            next_offset: base_offset,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
            damaged: Vec::new(),
            scrubbed: false,
        })
    }

    /// Opens an existing segment and rebuilds its indexes by scanning every batch,
    /// truncating at the first torn or corrupt one. Used for the segments after the
    /// recovery point, where a crash may have left a partial write.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        now_ms: i64,
        quarantine_damage: bool,
    ) -> io::Result<(Segment, ScanReport)> {
        let (log, index, time_index) = Self::paths(dir, base_offset);
        let file = OpenOptions::new().read(true).write(true).open(&log)?;
        let file_len = file.metadata()?.len();
        let mut segment = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log: Arc::new(file),
            size: 0,
            index: OffsetIndex::open(&index, true)?,
            time_index: TimeIndex::open(&time_index, true)?,
            next_offset: base_offset,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
            damaged: Vec::new(),
            scrubbed: false,
        };
        let mut report = ScanReport::default();
        let mut position = 0u64;
        // The indexes are rebuilt in memory and written once at the end.
        segment.index.buffer_writes();
        segment.time_index.buffer_writes();
        let log = Arc::clone(&segment.log);
        let mut checker = super::damage::SequentialChecker::new(&log, file_len);
        while position < file_len {
            let checked = match checker.check_at(position)? {
                Ok(header) if header.base_offset < segment.next_offset => Err(format!(
                    "offset {} goes backwards (expected >= {})",
                    header.base_offset, segment.next_offset
                )),
                other => other,
            };
            match checked {
                Ok(header) => {
                    let len = header.total_len() as u64;
                    segment.index_batch(&header, position, len, index_interval)?;
                    segment.next_offset = header.next_offset();
                    position += len;
                    report.batches += 1;
                }
                Err(why) if quarantine_damage => {
                    // A sealed segment: its bytes were acknowledged and synced. Damage is
                    // quarantined in place; the intact batches after it stay served.
                    let resume = super::damage::next_intact_batch(
                        &segment.log,
                        position,
                        file_len,
                        segment.next_offset,
                    )?;
                    segment.damaged.push((position, resume));
                    report
                        .damaged
                        .push((position, resume, format!("byte {position}: {why}")));
                    position = resume;
                }
                Err(why) => {
                    // The active segment: a crash tore its tail; everything from the
                    // first bad batch on was never acknowledged.
                    report.stopped_by = Some(format!("byte {position}: {why}"));
                    break;
                }
            }
        }
        segment.index.flush()?;
        segment.time_index.flush()?;
        if position < file_len {
            segment.log.set_len(position)?;
            segment.log.sync_all()?;
            report.truncated_bytes = file_len - position;
        }
        segment.size = position;
        report.valid_bytes = position;
        Ok((segment, report))
    }

    /// Opens a sealed segment below the recovery point: its bytes were fsynced when it was
    /// sealed, so only the tail after the last index entry is walked to find its end.
    /// Returns `None` when the indexes or the walk disagree with the log; the caller then
    /// falls back to a full [`Segment::recover`].
    pub fn open_sealed(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Option<Segment>> {
        let (log, index, time_index) = Self::paths(dir, base_offset);
        if !index.exists() || !time_index.exists() {
            return Ok(None);
        }
        let file = OpenOptions::new().read(true).write(true).open(&log)?;
        let size = file.metadata()?.len();
        let mut segment = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log: Arc::new(file),
            size,
            index: OffsetIndex::open(&index, false)?,
            time_index: TimeIndex::open(&time_index, false)?,
            next_offset: base_offset,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
            damaged: Vec::new(),
            scrubbed: false,
        };
        if size == 0 {
            return Ok(Some(segment));
        }
        if segment.index.is_empty() {
            return Ok(None);
        }
        let start = segment.index.lookup(u32::MAX)?;
        let mut position = start;
        let mut buf = [0u8; HEADER_LEN];
        while position < size {
            if size - position < HEADER_LEN as u64 {
                return Ok(None);
            }
            segment.log.read_exact_at(&mut buf, position)?;
            let Ok(header) = BatchHeader::parse(&buf) else {
                return Ok(None);
            };
            position += header.total_len() as u64;
            segment.next_offset = header.next_offset();
        }
        if position != size {
            return Ok(None);
        }
        segment.bytes_since_index_entry = size - start;
        Ok(Some(segment))
    }

    /// Records index entries for a batch written at `position`: an offset-index entry at the
    /// segment start and then every `index_interval` bytes; a time-index entry per new maximum.
    fn index_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        len: u64,
        index_interval: u64,
    ) -> io::Result<()> {
        let relative = (header.base_offset - self.base_offset) as u32;
        if position == 0 || self.bytes_since_index_entry >= index_interval {
            self.index.append(relative, position as u32)?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += len;
        self.time_index.maybe_append(header.max_timestamp, relative)
    }

    /// Appends already-stamped batches with one positioned write. On a failed write the
    /// file is cut back so that nothing partial stays behind. Call
    /// [`Segment::index_appended`] for each batch afterwards.
    pub fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let position = self.size;
        if let Err(e) = self.log.write_all_at(bytes, position) {
            let _ = self.log.set_len(position);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Indexes one batch written by [`Segment::append_bytes`] at `position`.
    pub fn index_appended(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval: u64,
    ) -> io::Result<()> {
        self.index_batch(header, position, header.total_len() as u64, index_interval)?;
        self.next_offset = header.next_offset();
        Ok(())
    }

    /// Where a walk that reached `position` continues: past any quarantined range.
    fn skip_damaged(&self, position: u64) -> u64 {
        self.damaged
            .iter()
            .find(|(start, end)| (*start..*end).contains(&position))
            .map_or(position, |(_, end)| *end)
    }

    /// Byte position of the batch containing `offset` (or the first batch after it), if
    /// that batch starts before `limit`. A header that does not parse is an error carrying
    /// [`DamagedAt`], for the caller to quarantine.
    pub fn find_position(&self, offset: i64, limit: u64) -> io::Result<Option<u64>> {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let mut position = self.index.lookup(relative)?;
        let mut buf = [0u8; HEADER_LEN];
        loop {
            position = self.skip_damaged(position);
            if position >= limit {
                return Ok(None);
            }
            self.log.read_exact_at(&mut buf, position)?;
            let header = BatchHeader::parse(&buf).map_err(|e| damaged_at(position, e))?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_len() as u64;
        }
    }

    /// Headers of the batches from `position` up to `limit`, with their positions.
    pub fn headers_from(
        &self,
        mut position: u64,
        limit: u64,
    ) -> io::Result<Vec<(u64, BatchHeader)>> {
        // Small batches: their headers are read a chunk at a time (the producer-state
        // rebuild at every start walks a whole active segment of them). Large ones: each
        // header alone, not the records between them.
        const CHUNK: u64 = 256 * 1024;
        const SMALL_BATCH: u64 = 16 * 1024;
        let mut out = Vec::new();
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_start = 0u64;
        let mut last_len = 0u64;
        loop {
            position = self.skip_damaged(position);
            if position >= limit {
                return Ok(out);
            }
            let buffered = position >= chunk_start
                && position + HEADER_LEN as u64 <= chunk_start + chunk.len() as u64;
            if !buffered {
                let len = if last_len < SMALL_BATCH {
                    (limit - position).clamp(HEADER_LEN as u64, CHUNK)
                } else {
                    HEADER_LEN as u64
                };
                chunk.resize(len as usize, 0);
                self.log.read_exact_at(&mut chunk, position)?;
                chunk_start = position;
            }
            let at = (position - chunk_start) as usize;
            let header = BatchHeader::parse(&chunk[at..at + HEADER_LEN])
                .map_err(|e| damaged_at(position, e))?;
            out.push((position, header));
            last_len = header.total_len() as u64;
            position += last_len;
        }
    }

    /// Quarantines the damaged bytes at `position`: up to the next intact batch (or the
    /// segment end). Returns the range. Reads never serve it again.
    pub fn quarantine(&mut self, position: u64) -> io::Result<(u64, u64)> {
        if let Some(range) = self
            .damaged
            .iter()
            .find(|(start, end)| (*start..*end).contains(&position))
        {
            return Ok(*range);
        }
        let after = self
            .headers_before(position)
            .map_or(self.base_offset, |h| h.next_offset());
        let end = super::damage::next_intact_batch(&self.log, position, self.size, after)?;
        self.damaged.push((position, end));
        self.damaged.sort_unstable();
        Ok((position, end))
    }

    /// The header of the last intact batch before `position`, if any (best effort).
    fn headers_before(&self, position: u64) -> Option<BatchHeader> {
        let mut at = 0u64;
        let mut last = None;
        let mut buf = [0u8; HEADER_LEN];
        while at < position {
            at = self.skip_damaged(at);
            if at >= position || self.log.read_exact_at(&mut buf, at).is_err() {
                break;
            }
            let header = BatchHeader::parse(&buf).ok()?;
            last = Some(header);
            at += header.total_len() as u64;
        }
        last
    }

    /// Quarantined ranges of this segment.
    pub fn damaged(&self) -> &[(u64, u64)] {
        &self.damaged
    }

    /// Starting point for a search by timestamp.
    pub fn time_lookup_offset(&self, timestamp: i64) -> io::Result<i64> {
        Ok(self.base_offset + self.time_index.lookup(timestamp)? as i64)
    }

    /// Truncates the segment so that it ends at `position` (a batch boundary).
    pub fn truncate_to(&mut self, position: u64, next_offset: i64) -> io::Result<()> {
        self.log.set_len(position)?;
        self.damaged.retain(|(start, _)| *start < position);
        self.index.truncate_to_position(position)?;
        // Cheap to rebuild and rarely needed: the max timestamps are recomputed.
        self.time_index.clear()?;
        for (_, header) in self.headers_from(0, position)? {
            self.time_index.maybe_append(
                header.max_timestamp,
                (header.base_offset - self.base_offset) as u32,
            )?;
        }
        self.size = position;
        self.next_offset = next_offset;
        self.bytes_since_index_entry = 0;
        Ok(())
    }

    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.log)
    }

    /// The log and both indexes: what an fsync must cover to seal this segment.
    pub fn all_files(&self) -> [Arc<File>; 3] {
        [self.file(), self.index.file(), self.time_index.file()]
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.time_index.max_timestamp()
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Flushes the log and its indexes (done when a segment is sealed).
    pub fn sync_all(&self) -> io::Result<()> {
        self.log.sync_data()?;
        self.index.sync()?;
        self.time_index.sync()
    }

    /// Deletes the segment's files (retention, topic deletion).
    pub fn delete_files(&self) -> io::Result<()> {
        let (log, index, time_index) = Self::paths(&self.dir, self.base_offset);
        for path in [log, index, time_index] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn damaged_at(position: u64, e: BatchError) -> io::Error {
    DamagedAt {
        position,
        reason: e.to_string(),
    }
    .into_io()
}
