//! Sparse indexes beside each segment: fixed-size big-endian entries in a file, searched
//! with positioned reads so that sealed segments cost no memory (the page cache holds
//! the hot ones). Indexes are derived data: recovery rebuilds them from the log.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An append-only file of fixed-size entries.
#[derive(Debug)]
struct EntryFile {
    file: Arc<File>,
    entry_len: u64,
    /// Entries, written and pending.
    entries: u64,
    /// While recovery rebuilds an index: entries not yet written (one write at the end
    /// instead of one per entry). Empty and unused otherwise.
    pending: Vec<u8>,
    buffering: bool,
}

impl EntryFile {
    fn open(path: &Path, entry_len: u64, truncate: bool) -> io::Result<EntryFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(path)?;
        let len = file.metadata()?.len();
        // A torn last entry (crash mid-write) is dropped; the scan that follows re-adds it.
        let entries = len / entry_len;
        if entries * entry_len != len {
            file.set_len(entries * entry_len)?;
        }
        Ok(EntryFile {
            file: Arc::new(file),
            entry_len,
            entries,
            pending: Vec::new(),
            buffering: false,
        })
    }

    fn append(&mut self, entry: &[u8]) -> io::Result<()> {
        if self.buffering {
            self.pending.extend_from_slice(entry);
        } else {
            self.file
                .write_all_at(entry, self.entries * self.entry_len)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Entries already in the file.
    fn written(&self) -> u64 {
        self.entries - self.pending.len() as u64 / self.entry_len
    }

    /// Writes the pending entries and goes back to writing each entry as it comes.
    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file
                .write_all_at(&self.pending, self.written() * self.entry_len)?;
            self.pending.clear();
        }
        self.buffering = false;
        Ok(())
    }

    fn read(&self, i: u64, out: &mut [u8]) -> io::Result<()> {
        let written = self.written();
        if i < written {
            return self.file.read_exact_at(out, i * self.entry_len);
        }
        let at = ((i - written) * self.entry_len) as usize;
        match self.pending.get(at..at + out.len()) {
            Some(entry) => {
                out.copy_from_slice(entry);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "index entry past the end",
            )),
        }
    }

    fn truncate(&mut self, entries: u64) -> io::Result<()> {
        self.flush()?;
        self.entries = self.entries.min(entries);
        self.file.set_len(self.entries * self.entry_len)
    }

    /// Index of the last entry whose key is <= `target`, by binary search.
    fn floor<K: Ord>(&self, target: K, key: impl Fn(&[u8]) -> K) -> io::Result<Option<u64>> {
        let mut buf = vec![0u8; self.entry_len as usize];
        let (mut lo, mut hi) = (0u64, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.read(mid, &mut buf)?;
            if key(&buf) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.checked_sub(1))
    }
}

/// Offset index: (offset relative to the segment base: u32, byte position: u32).
#[derive(Debug)]
pub struct OffsetIndex {
    entries: EntryFile,
}

impl OffsetIndex {
    const ENTRY_LEN: u64 = 8;

    pub fn open(path: &Path, truncate: bool) -> io::Result<OffsetIndex> {
        Ok(OffsetIndex {
            entries: EntryFile::open(path, Self::ENTRY_LEN, truncate)?,
        })
    }

    pub fn append(&mut self, relative_offset: u32, position: u32) -> io::Result<()> {
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&relative_offset.to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.entries.append(&e)
    }

    /// Byte position of the last indexed batch starting at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> io::Result<u64> {
        let key = |e: &[u8]| u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
        match self.entries.floor(relative_offset, key)? {
            None => Ok(0),
            Some(i) => {
                let mut e = [0u8; 8];
                self.entries.read(i, &mut e)?;
                Ok(u32::from_be_bytes([e[4], e[5], e[6], e[7]]) as u64)
            }
        }
    }

    /// Drops entries pointing at or past `position` (after the log was truncated there).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let key = |e: &[u8]| u32::from_be_bytes([e[4], e[5], e[6], e[7]]) as u64;
        let keep = match self.entries.floor(position, key)? {
            None => 0,
            Some(i) => {
                let mut e = [0u8; 8];
                self.entries.read(i, &mut e)?;
                if key(&e) == position {
                    i
                } else {
                    i + 1
                }
            }
        };
        self.entries.truncate(keep)
    }

    pub fn len(&self) -> u64 {
        self.entries.entries
    }

    /// Keeps new entries in memory until [`OffsetIndex::flush`] (recovery's rebuild).
    pub fn buffer_writes(&mut self) {
        self.entries.buffering = true;
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.entries.flush()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sync(&self) -> io::Result<()> {
        self.entries.file.sync_data()
    }

    /// The file, for an fsync done outside the partition lock.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.entries.file)
    }
}

/// Time index: (max timestamp so far: i64, relative offset of the batch reaching it: u32).
/// Entries only grow in timestamp, so a binary search finds where a timestamp starts.
#[derive(Debug)]
pub struct TimeIndex {
    entries: EntryFile,
    last_timestamp: i64,
}

impl TimeIndex {
    const ENTRY_LEN: u64 = 12;

    pub fn open(path: &Path, truncate: bool) -> io::Result<TimeIndex> {
        let entries = EntryFile::open(path, Self::ENTRY_LEN, truncate)?;
        let mut index = TimeIndex {
            entries,
            last_timestamp: i64::MIN,
        };
        if let Some(last) = index.entries.entries.checked_sub(1) {
            index.last_timestamp = index.entry(last)?.0;
        }
        Ok(index)
    }

    /// Keeps new entries in memory until [`TimeIndex::flush`] (recovery's rebuild).
    pub fn buffer_writes(&mut self) {
        self.entries.buffering = true;
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.entries.flush()
    }

    fn entry(&self, i: u64) -> io::Result<(i64, u32)> {
        let mut e = [0u8; 12];
        self.entries.read(i, &mut e)?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&e[..8]);
        Ok((
            i64::from_be_bytes(ts),
            u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
        ))
    }

    /// Records `timestamp` if it is a new maximum for the segment.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) -> io::Result<()> {
        if timestamp <= self.last_timestamp {
            return Ok(());
        }
        let mut e = [0u8; 12];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&relative_offset.to_be_bytes());
        self.entries.append(&e)?;
        self.last_timestamp = timestamp;
        Ok(())
    }

    /// Relative offset of the last entry whose timestamp is below `timestamp`: records at or
    /// after `timestamp` cannot start before it.
    pub fn lookup(&self, timestamp: i64) -> io::Result<u32> {
        let key = |e: &[u8]| {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&e[..8]);
            i64::from_be_bytes(ts)
        };
        match self.entries.floor(timestamp.saturating_sub(1), key)? {
            None => Ok(0),
            Some(i) => Ok(self.entry(i)?.1),
        }
    }

    /// Largest timestamp indexed in this segment, if any.
    pub fn max_timestamp(&self) -> Option<i64> {
        (self.last_timestamp != i64::MIN).then_some(self.last_timestamp)
    }

    pub fn clear(&mut self) -> io::Result<()> {
        self.last_timestamp = i64::MIN;
        self.entries.truncate(0)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.entries.file.sync_data()
    }

    /// The file, for an fsync done outside the partition lock.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.entries.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_floor_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = OffsetIndex::open(&dir.path().join("i"), true).expect("open");
        assert_eq!(index.lookup(5).expect("lookup"), 0);
        index.append(10, 4096).expect("append");
        index.append(20, 8192).expect("append");
        assert_eq!(index.lookup(9).expect("lookup"), 0);
        assert_eq!(index.lookup(10).expect("lookup"), 4096);
        assert_eq!(index.lookup(19).expect("lookup"), 4096);
        assert_eq!(index.lookup(1000).expect("lookup"), 8192);
        index.truncate_to_position(8192).expect("truncate");
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn buffered_entries_read_back_and_flush_to_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut direct = OffsetIndex::open(&dir.path().join("d"), true).expect("open");
        let mut buffered = OffsetIndex::open(&dir.path().join("b"), true).expect("open");
        direct.append(0, 0).expect("append");
        buffered.append(0, 0).expect("append");
        buffered.buffer_writes();
        for i in 1..100u32 {
            direct.append(i * 10, i * 4096).expect("append");
            buffered.append(i * 10, i * 4096).expect("append");
        }
        // Pending entries are found before they are written.
        assert_eq!(buffered.len(), 100);
        assert_eq!(buffered.lookup(555).expect("lookup"), 55 * 4096);
        assert_eq!(buffered.lookup(5).expect("lookup"), 0);
        buffered.flush().expect("flush");
        buffered.append(1000, 500_000).expect("append after flush");
        direct.append(1000, 500_000).expect("append");
        let read = |name: &str| std::fs::read(dir.path().join(name)).expect("read");
        assert_eq!(read("b"), read("d"));
        // Truncating while buffering writes what is pending first.
        buffered.buffer_writes();
        buffered.append(1010, 600_000).expect("append");
        buffered.truncate_to_position(500_000).expect("truncate");
        assert_eq!(buffered.len(), 100);
        assert_eq!(
            std::fs::metadata(dir.path().join("b")).expect("stat").len(),
            800
        );
    }

    #[test]
    fn time_index_keeps_only_new_maxima() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = TimeIndex::open(&dir.path().join("t"), true).expect("open");
        index.maybe_append(100, 0).expect("append");
        index.maybe_append(90, 5).expect("ignored");
        index.maybe_append(200, 10).expect("append");
        assert_eq!(index.lookup(50).expect("lookup"), 0);
        assert_eq!(index.lookup(150).expect("lookup"), 0);
        assert_eq!(index.lookup(201).expect("lookup"), 10);
        assert_eq!(index.max_timestamp(), Some(200));
        let reopened = TimeIndex::open(&dir.path().join("t"), false).expect("reopen");
        assert_eq!(reopened.max_timestamp(), Some(200));
    }
}
