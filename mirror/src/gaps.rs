//! The hub's journal of gaps: every range an edge deleted before it was mirrored, one JSON
//! line each, fsynced before the batch after the gap is acknowledged. Read back at start
//! so that `tern mirror status` and the gap metrics survive restarts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub edge: String,
    /// The hub topic (`<edge>.<topic>`).
    pub topic: String,
    pub partition: i32,
    /// The lost offsets, `[from, to)`.
    pub from: i64,
    pub to: i64,
    pub recorded_ms: i64,
}

#[derive(Debug)]
pub struct GapJournal {
    path: PathBuf,
    file: Mutex<File>,
}

impl GapJournal {
    /// Opens (or creates) `<dir>/gaps.jsonl` and returns it with the gaps already in it.
    /// A torn last line (a power cut while writing) is ignored.
    pub fn open(dir: &Path) -> std::io::Result<(GapJournal, Vec<Gap>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("gaps.jsonl");
        let mut gaps = Vec::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                if let Ok(gap) = serde_json::from_str::<Gap>(&line?) {
                    gaps.push(gap);
                }
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn last line must not swallow the next record.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&File::open(&path)?, &mut last, len - 1)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        File::open(dir)?.sync_all()?;
        Ok((
            GapJournal {
                path,
                file: Mutex::new(file),
            },
            gaps,
        ))
    }

    /// Appends one gap durably.
    pub fn record(&self, gap: &Gap) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(gap).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)?;
        file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_survive_a_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gap = Gap {
            edge: "gw-1".into(),
            topic: "gw-1.sensors".into(),
            partition: 0,
            from: 10,
            to: 20,
            recorded_ms: 1,
        };
        {
            let (journal, before) = GapJournal::open(dir.path()).expect("open");
            assert!(before.is_empty());
            journal.record(&gap).expect("record");
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("gaps.jsonl"))
            .and_then(|mut f| f.write_all(b"{\"edge\":\"gw"))
            .expect("torn line");
        let (journal, after) = GapJournal::open(dir.path()).expect("reopen");
        assert_eq!(after, vec![gap.clone()]);
        journal.record(&gap).expect("record after a torn line");
        drop(journal);
        let (_, again) = GapJournal::open(dir.path()).expect("reopen");
        assert_eq!(again.len(), 2, "the record after the torn line is kept");
    }
}
