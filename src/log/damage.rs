//! Finding and stepping over damaged batches in a segment file: bytes that a bad card,
//! a bug or a stray write changed after they were acknowledged. A damaged batch is never
//! served: readers stop before it, the range is quarantined (skipped from then on, logged,
//! counted), and reading continues at the next batch whose header and CRC are intact.
//! The same walk backs the background scrub and the offline `tern check`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::batch::{self, BatchHeader, HEADER_LEN};

/// A batch that failed its checks at a byte position of its segment.
#[derive(Debug, Clone, thiserror::Error)]
#[error("damaged batch at byte {position}: {reason}")]
pub struct DamagedAt {
    pub position: u64,
    pub reason: String,
}

impl DamagedAt {
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The damage an I/O error from a segment read carries, if it is one.
    pub fn from_io(e: &io::Error) -> Option<DamagedAt> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<DamagedAt>())
            .cloned()
    }
}

/// Checks the batch at `position` (header, length within `end`, CRC). `Ok(Err(reason))`
/// for a damaged batch; `Err` only for I/O errors. Reads exactly the batch: for one
/// position at a time (the scrub, the search for the next intact batch).
pub fn check_batch_at(
    file: &File,
    position: u64,
    end: u64,
) -> io::Result<Result<BatchHeader, String>> {
    SequentialChecker::with_read_ahead(file, end, 0).check_at(position)
}

/// The batch checks for a walk through a segment from front to back, reading ahead in
/// large chunks: recovery scans a whole active segment at every start, and two positioned
/// reads (and a zeroed allocation) per batch made that scan mostly system calls.
pub struct SequentialChecker<'a> {
    file: &'a File,
    end: u64,
    /// Bytes of the file from `start`.
    buf: Vec<u8>,
    start: u64,
    /// How much to read at once (more when one batch is larger).
    read_ahead: usize,
}

/// How much a [`SequentialChecker`] made by `new` reads at once.
const READ_AHEAD: usize = 1 << 20;

impl<'a> SequentialChecker<'a> {
    pub fn new(file: &'a File, end: u64) -> SequentialChecker<'a> {
        Self::with_read_ahead(file, end, READ_AHEAD)
    }

    fn with_read_ahead(file: &'a File, end: u64, read_ahead: usize) -> SequentialChecker<'a> {
        SequentialChecker {
            file,
            end,
            buf: Vec::new(),
            start: 0,
            read_ahead,
        }
    }

    /// The file's bytes `position..position + len` (`len` bytes exist before `end`).
    fn bytes(&mut self, position: u64, len: usize) -> io::Result<&[u8]> {
        let buffered_end = self.start + self.buf.len() as u64;
        if position < self.start || position + len as u64 > buffered_end {
            let want = len
                .max(self.read_ahead)
                .min((self.end - position) as usize)
                .max(len);
            self.buf.clear();
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, position)?;
            self.start = position;
        }
        let from = (position - self.start) as usize;
        Ok(&self.buf[from..from + len])
    }

    /// The batch at `position`: header, length within the end, CRC.
    pub fn check_at(&mut self, position: u64) -> io::Result<Result<BatchHeader, String>> {
        let left = self.end.saturating_sub(position);
        if left < HEADER_LEN as u64 {
            return Ok(Err(format!(
                "{left} bytes left, a batch header needs {HEADER_LEN}"
            )));
        }
        let parsed = match BatchHeader::parse(self.bytes(position, HEADER_LEN)?) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let len = parsed.total_len() as u64;
        if position + len > self.end {
            return Ok(Err(format!(
                "batch of {len} bytes runs past the segment end"
            )));
        }
        let bytes = self.bytes(position, len as usize)?;
        Ok(batch::validate(bytes).map_err(|e| e.to_string()))
    }
}

/// Position of the first intact batch after damage found at `from`: a header that parses,
/// an offset after `after_offset`, a length within `end` and a matching CRC. `end` when
/// none follows.
pub fn next_intact_batch(file: &File, from: u64, end: u64, after_offset: i64) -> io::Result<u64> {
    const CHUNK: usize = 1 << 20;
    let mut base = from + 1;
    let mut chunk = vec![0u8; CHUNK];
    while base + HEADER_LEN as u64 <= end {
        let n = ((end - base) as usize).min(CHUNK);
        file.read_exact_at(&mut chunk[..n], base)?;
        // Byte 16 of a batch is its magic: only those positions are candidates.
        for i in 0..n.saturating_sub(16) {
            if chunk[i + 16] != batch::MAGIC_V2 {
                continue;
            }
            let candidate = base + i as u64;
            if let Ok(header) = check_batch_at(file, candidate, end)? {
                if header.base_offset >= after_offset {
                    return Ok(candidate);
                }
            }
        }
        base += n.saturating_sub(16).max(1) as u64;
    }
    Ok(end)
}

/// Walks the batches between `from` and `end`, calling `damaged(at, resume, reason)` for
/// each damaged range (the walk resumes at the next intact batch) and `pace(bytes)` after
/// each batch (the scrub uses it to limit its I/O rate). Returns the intact batch count.
pub fn verify(
    file: &File,
    from: u64,
    end: u64,
    mut damaged: impl FnMut(u64, u64, &str),
    mut pace: impl FnMut(u64),
) -> io::Result<u64> {
    let mut position = from;
    let mut intact = 0u64;
    let mut next_offset = i64::MIN;
    while position < end {
        match check_batch_at(file, position, end)? {
            Ok(header) if header.base_offset >= next_offset => {
                intact += 1;
                next_offset = header.next_offset();
                position += header.total_len() as u64;
                pace(header.total_len() as u64);
            }
            Ok(header) => {
                let reason = format!("offset {} goes backwards", header.base_offset);
                let resume = next_intact_batch(file, position, end, next_offset)?;
                damaged(position, resume, &reason);
                position = resume;
            }
            Err(reason) => {
                let resume = next_intact_batch(file, position, end, next_offset)?;
                damaged(position, resume, &reason);
                position = resume;
            }
        }
    }
    Ok(intact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use std::io::Write;

    /// Batches of `records` records each, one per payload, back to back with consecutive
    /// offsets; and where each starts.
    fn batches(records: usize, payloads: impl Iterator<Item = Vec<u8>>) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for (i, payload) in payloads.enumerate() {
            let mut b = make_batch(records, &payload);
            batch::set_base_offset(&mut b, (i * records) as i64);
            starts.push(bytes.len() as u64);
            bytes.extend_from_slice(&b);
        }
        (bytes, starts)
    }

    #[test]
    fn a_flipped_byte_is_found_and_the_walk_resumes_at_the_next_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let (mut bytes, starts) = batches(3, (0..5).map(|_| b"value".to_vec()));
        let end = bytes.len() as u64;
        bytes[starts[2] as usize + 70] ^= 0xff; // inside batch 2's records
        bytes[starts[3] as usize + 9] ^= 0x7f; // batch 3's length
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .expect("write");
        let file = File::open(&path).expect("open");
        let mut found = Vec::new();
        let intact = verify(
            &file,
            0,
            end,
            |at, resume, _| found.push((at, resume)),
            |_| {},
        )
        .expect("verify");
        assert_eq!(intact, 3);
        assert_eq!(
            found,
            vec![(starts[2], starts[4])],
            "batches 2 and 3 form one range"
        );
    }

    #[test]
    /// Reading ahead across batch boundaries gives the answers of reading each batch alone.
    fn the_sequential_checker_answers_as_check_batch_at() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        // Small batches across read-ahead boundaries, and batches larger than one read.
        let (mut bytes, starts) = batches(
            2,
            (0..400usize).map(|i| {
                if i % 97 == 5 {
                    vec![b'x'; READ_AHEAD + 3000]
                } else {
                    vec![b'v'; 3000 + (i * 37) % 5000]
                }
            }),
        );
        let damaged = [starts[10] as usize + 70, starts[200] as usize + 9];
        for at in damaged {
            bytes[at] ^= 0x5a;
        }
        // A torn tail: the last batch cut short.
        let end = bytes.len() as u64 - 100;
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .expect("write");
        let file = File::open(&path).expect("open");
        let mut checker = SequentialChecker::new(&file, end);
        let mut bad = 0;
        for &at in starts.iter().chain([end - 10, end, 5].iter()) {
            let expected = check_batch_at(&file, at, end).expect("read");
            let got = checker.check_at(at).expect("read");
            bad += usize::from(expected.is_err());
            assert_eq!(
                got.map(|h| (h.base_offset, h.total_len())),
                expected.map(|h| (h.base_offset, h.total_len())),
                "at byte {at}"
            );
        }
        // Two damaged batches, the torn last one, and three positions that are no batch.
        assert_eq!(bad, 6);
    }
}
