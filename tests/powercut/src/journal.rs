//! What a power cut takes away: every write, truncation and directory change since the
//! last fsync of its file (or of its directory), recorded as undo information while the
//! operations go through to the backing directory. `cut` replays the undo records in
//! reverse, leaving the backing directory as a disk would be after the power came back.
//!
//! Two kinds of cut:
//! - `Clean`: everything unsynced is lost.
//! - `Torn`: a random prefix of each file's unsynced writes survives, the last of them
//!   torn at a random byte; a random prefix of the unsynced directory changes survives.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Undo record of one file operation.
#[derive(Debug, Clone)]
enum FileUndo {
    /// A write of `len` bytes at `offset`; `old` held the bytes it overwrote, `old_len` the
    /// file length before.
    Write {
        offset: u64,
        len: u64,
        old: Vec<u8>,
        old_len: u64,
    },
    /// A truncation (or extension) from `old_len`; `tail` held the bytes cut off.
    SetLen { old_len: u64, tail: Vec<u8> },
}

/// Undo record of one directory change, relative to the backing root.
#[derive(Debug, Clone)]
enum DirUndo {
    Created {
        path: PathBuf,
        ino: u64,
    },
    /// Unlinked (file or empty directory): kept in the trash until its directory is synced.
    Removed {
        path: PathBuf,
        trash: PathBuf,
        ino: u64,
    },
    /// Renamed `from` → `to`; an overwritten `to` was moved to `displaced` in the trash.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        displaced: Option<(PathBuf, u64)>,
    },
}

impl DirUndo {
    /// The directory whose fsync makes this change durable.
    fn dir(&self) -> PathBuf {
        let path = match self {
            DirUndo::Created { path, .. } | DirUndo::Removed { path, .. } => path,
            DirUndo::Renamed { to, .. } => to,
        };
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    Clean,
    Torn { seed: u64 },
}

/// A tiny deterministic generator (xorshift): the torn cut is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 {
            0
        } else {
            self.0 % n
        }
    }
}

pub struct Journal {
    root: PathBuf,
    trash: PathBuf,
    /// Where each known inode lives now, relative to the root (or absolute in the trash).
    paths: HashMap<u64, PathBuf>,
    files: HashMap<u64, Vec<FileUndo>>,
    dirs: Vec<DirUndo>,
    trash_seq: u64,
}

impl Journal {
    pub fn new(root: &Path, trash: &Path) -> io::Result<Journal> {
        fs::create_dir_all(trash)?;
        Ok(Journal {
            root: root.to_path_buf(),
            trash: trash.to_path_buf(),
            paths: HashMap::new(),
            files: HashMap::new(),
            dirs: Vec::new(),
            trash_seq: 0,
        })
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            self.root.join(rel)
        }
    }

    pub fn track(&mut self, ino: u64, rel: &Path) {
        self.paths.insert(ino, rel.to_path_buf());
    }

    /// Records what a write of `len` bytes at `offset` to `file` overwrites.
    pub fn before_write(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let old_len = file.metadata()?.len();
        let end = (offset + len).min(old_len);
        let mut old = vec![0u8; end.saturating_sub(offset) as usize];
        if !old.is_empty() {
            file.read_exact_at(&mut old, offset)?;
        }
        self.files.entry(ino).or_default().push(FileUndo::Write {
            offset,
            len,
            old,
            old_len,
        });
        Ok(())
    }

    pub fn before_set_len(&mut self, ino: u64, file: &File, new_len: u64) -> io::Result<()> {
        let old_len = file.metadata()?.len();
        let mut tail = vec![0u8; old_len.saturating_sub(new_len) as usize];
        if !tail.is_empty() {
            file.read_exact_at(&mut tail, new_len)?;
        }
        self.files
            .entry(ino)
            .or_default()
            .push(FileUndo::SetLen { old_len, tail });
        Ok(())
    }

    pub fn file_synced(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    pub fn created(&mut self, ino: u64, rel: &Path) {
        self.track(ino, rel);
        self.dirs.push(DirUndo::Created {
            path: rel.to_path_buf(),
            ino,
        });
    }

    fn trash_slot(&mut self) -> PathBuf {
        self.trash_seq += 1;
        self.trash.join(format!("t{}", self.trash_seq))
    }

    /// Removes `rel` (a file or an empty directory) by moving it to the trash.
    pub fn remove(&mut self, ino: u64, rel: &Path) -> io::Result<()> {
        let slot = self.trash_slot();
        fs::rename(self.abs(rel), &slot)?;
        self.paths.insert(ino, slot.clone());
        self.dirs.push(DirUndo::Removed {
            path: rel.to_path_buf(),
            trash: slot,
            ino,
        });
        Ok(())
    }

    /// Renames `from` to `to`, keeping an overwritten `to` (inode `displaced`) in the trash.
    pub fn rename(
        &mut self,
        ino: u64,
        from: &Path,
        to: &Path,
        displaced: Option<u64>,
    ) -> io::Result<()> {
        let displaced = match displaced {
            Some(d) => {
                let slot = self.trash_slot();
                fs::rename(self.abs(to), &slot)?;
                self.paths.insert(d, slot.clone());
                Some((slot, d))
            }
            None => None,
        };
        fs::rename(self.abs(from), self.abs(to))?;
        self.move_paths(from, to);
        let _ = ino;
        self.dirs.push(DirUndo::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            displaced,
        });
        Ok(())
    }

    /// Updates the tracked paths of `from` and everything below it.
    fn move_paths(&mut self, from: &Path, to: &Path) {
        for path in self.paths.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    /// fsync of a directory: its changes become durable; its removals final.
    pub fn dir_synced(&mut self, rel: &Path) -> io::Result<()> {
        let mut kept = Vec::new();
        for op in std::mem::take(&mut self.dirs) {
            if op.dir() != rel {
                kept.push(op);
                continue;
            }
            match op {
                DirUndo::Removed { trash, .. } => remove_any(&trash)?,
                DirUndo::Renamed {
                    displaced: Some((trash, _)),
                    ..
                } => remove_any(&trash)?,
                _ => {}
            }
        }
        self.dirs = kept;
        Ok(())
    }

    /// A clean shutdown: everything written stays; removals become final.
    pub fn keep_all(&mut self) -> io::Result<()> {
        self.dirs.clear();
        self.files.clear();
        remove_any(&self.trash)
    }

    /// Applies the power cut to the backing directory (once; the journal is then empty).
    pub fn cut(&mut self, mode: CutMode) -> io::Result<CutReport> {
        let mut rng = Rng(match mode {
            CutMode::Clean => 1,
            CutMode::Torn { seed } => seed.max(1),
        });
        let mut report = CutReport::default();
        // Directory changes: a prefix survives (none for a clean cut), the rest is undone
        // newest first.
        let keep = match mode {
            CutMode::Clean => 0,
            CutMode::Torn { .. } => rng.below(self.dirs.len() as u64 + 1) as usize,
        };
        let undone: Vec<DirUndo> = self.dirs.split_off(keep.min(self.dirs.len()));
        self.dirs.clear();
        for op in undone.into_iter().rev() {
            report.dir_changes_lost += 1;
            match op {
                DirUndo::Created { path, ino } => {
                    remove_any(&self.abs(&path))?;
                    self.paths.remove(&ino);
                    self.files.remove(&ino);
                }
                DirUndo::Removed { path, trash, ino } => {
                    fs::rename(&trash, self.abs(&path))?;
                    self.paths.insert(ino, path);
                }
                DirUndo::Renamed {
                    from,
                    to,
                    displaced,
                } => {
                    fs::rename(self.abs(&to), self.abs(&from))?;
                    self.move_paths(&to, &from);
                    if let Some((trash, d)) = displaced {
                        fs::rename(&trash, self.abs(&to))?;
                        self.paths.insert(d, to);
                    }
                }
            }
        }
        // File contents: unsynced writes are undone newest first, except a surviving
        // prefix (torn) whose last write keeps only some of its bytes.
        for (ino, mut ops) in std::mem::take(&mut self.files) {
            let Some(rel) = self.paths.get(&ino).cloned() else {
                continue;
            };
            let path = self.abs(&rel);
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            let keep = match mode {
                CutMode::Clean => 0,
                CutMode::Torn { .. } => rng.below(ops.len() as u64 + 1) as usize,
            };
            let lost = ops.split_off(keep);
            for op in lost.into_iter().rev() {
                report.writes_lost += 1;
                match op {
                    FileUndo::Write {
                        offset,
                        len,
                        old,
                        old_len,
                    } => undo_write_from(&file, offset, len, &old, old_len, 0)?,
                    FileUndo::SetLen { old_len, tail } => {
                        file.set_len(old_len)?;
                        if !tail.is_empty() {
                            file.write_all_at(&tail, old_len - tail.len() as u64)?;
                        }
                    }
                }
            }
            // The last surviving write may be torn: it keeps a prefix of its bytes.
            if let (
                CutMode::Torn { .. },
                Some(FileUndo::Write {
                    offset,
                    len,
                    old,
                    old_len,
                }),
            ) = (mode, ops.last())
            {
                let kept_bytes = rng.below(*len + 1);
                if kept_bytes < *len {
                    report.torn_writes += 1;
                    undo_write_from(&file, *offset, *len, old, *old_len, kept_bytes)?;
                }
            }
        }
        // What was removed for good stays removed.
        remove_any(&self.trash)?;
        Ok(report)
    }
}

/// Undoes a write from its `kept`-th byte on: the old bytes come back, and the file
/// shrinks to what it was before the write (or to the torn end, if that is further).
fn undo_write_from(
    file: &File,
    offset: u64,
    len: u64,
    old: &[u8],
    old_len: u64,
    kept: u64,
) -> io::Result<()> {
    if (kept as usize) < old.len() {
        file.write_all_at(&old[kept as usize..], offset + kept)?;
    }
    let end = old_len.max(offset + kept);
    if end < offset + len && file.metadata()?.len() > end {
        file.set_len(end)?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Default)]
pub struct CutReport {
    pub writes_lost: u64,
    pub torn_writes: u64,
    pub dir_changes_lost: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(j: &mut Journal, ino: u64, path: &Path, offset: u64, data: &[u8]) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open");
        j.before_write(ino, &f, offset, data.len() as u64)
            .expect("journal");
        f.write_all_at(data, offset).expect("write");
    }

    #[test]
    fn a_clean_cut_keeps_exactly_what_was_synced() {
        let root = tempfile::tempdir().expect("root");
        let trash = tempfile::tempdir().expect("trash");
        let mut j = Journal::new(root.path(), trash.path()).expect("journal");
        let path = root.path().join("f");
        File::create(&path).expect("create");
        j.created(2, Path::new("f"));
        write(&mut j, 2, &path, 0, b"hello ");
        j.file_synced(2);
        j.dir_synced(Path::new("")).expect("dir sync");
        write(&mut j, 2, &path, 6, b"world");
        write(&mut j, 2, &path, 0, b"HELLO");
        File::create(root.path().join("g")).expect("create g");
        j.created(3, Path::new("g"));
        let report = j.cut(CutMode::Clean).expect("cut");
        assert_eq!(fs::read(&path).expect("read"), b"hello ");
        assert!(
            !root.path().join("g").exists(),
            "an unsynced create is lost"
        );
        assert_eq!((report.writes_lost, report.dir_changes_lost), (2, 1));
    }

    #[test]
    fn unsynced_renames_and_unlinks_are_undone() {
        let root = tempfile::tempdir().expect("root");
        let trash = tempfile::tempdir().expect("trash");
        let mut j = Journal::new(root.path(), trash.path()).expect("journal");
        fs::write(root.path().join("old"), b"v1").expect("old");
        fs::write(root.path().join("tmp"), b"v2").expect("tmp");
        j.track(2, Path::new("old"));
        j.track(3, Path::new("tmp"));
        // write tmp, rename over old (the checkpoint pattern), no directory fsync.
        j.rename(3, Path::new("tmp"), Path::new("old"), Some(2))
            .expect("rename");
        assert_eq!(fs::read(root.path().join("old")).expect("read"), b"v2");
        j.cut(CutMode::Clean).expect("cut");
        assert_eq!(fs::read(root.path().join("old")).expect("read"), b"v1");
        assert_eq!(fs::read(root.path().join("tmp")).expect("read"), b"v2");
    }

    #[test]
    fn a_torn_cut_keeps_a_prefix_of_the_writes_torn_at_a_byte() {
        for seed in 1..200 {
            let root = tempfile::tempdir().expect("root");
            let trash = tempfile::tempdir().expect("trash");
            let mut j = Journal::new(root.path(), trash.path()).expect("journal");
            let path = root.path().join("f");
            File::create(&path).expect("create");
            j.track(2, Path::new("f"));
            let chunks: [&[u8]; 3] = [b"aaaa", b"bbbb", b"cccc"];
            for (i, c) in chunks.iter().enumerate() {
                write(&mut j, 2, &path, i as u64 * 4, c);
            }
            j.cut(CutMode::Torn { seed }).expect("cut");
            let after = fs::read(&path).expect("read");
            let all = b"aaaabbbbcccc";
            assert!(after.len() <= all.len());
            assert_eq!(
                &after[..],
                &all[..after.len()],
                "seed {seed}: a prefix survives"
            );
        }
    }
}
