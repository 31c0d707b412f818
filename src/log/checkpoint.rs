//! Small durable files beside a partition's segments (`recovery-point`,
//! `log-start-offset`): one decimal i64, replaced atomically (write, fsync, rename, fsync dir).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub const RECOVERY_POINT: &str = "recovery-point";
pub const LOG_START_OFFSET: &str = "log-start-offset";
/// Offsets below it were compacted by an earlier cleaner pass.
pub const CLEANER_POINT: &str = "cleaner-point";
/// Written by a clean shutdown: the base offset of the active segment, whose bytes and
/// indexes were all synced. Removed (durably) when the log is opened again, before
/// anything new is written.
pub const CLEAN_SHUTDOWN: &str = "clean-shutdown";

/// Reads a checkpoint; a missing or unreadable file yields `None` (the caller then does the
/// safe, slower thing: scan everything, or start at the first segment).
pub fn read(dir: &Path, name: &str) -> Option<i64> {
    let text = fs::read_to_string(dir.join(name)).ok()?;
    text.trim().parse().ok()
}

pub fn write(dir: &Path, name: &str, value: i64) -> io::Result<()> {
    // A unique temporary name: group commit and shutdown may write the same checkpoint.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.tmp{n}"));
    {
        let mut file = File::create(&tmp)?;
        writeln!(file, "{value}")?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Removes a checkpoint, if present; durable once `dir` is synced.
pub fn remove(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes temporaries of the checkpoints `names` left by writes a crash interrupted.
pub fn remove_stale_temporaries(dir: &Path, names: &[&str]) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_temporary = names.iter().any(|c| name.starts_with(&format!("{c}.tmp")));
        if is_temporary {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Creates `dir` and any missing parents, each followed by an fsync of its parent, so that
/// the new directories survive a power cut (a directory entry is durable only once the
/// directory holding it is synced). Returns whether anything was created.
pub fn create_dir_durably(dir: &Path) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(parent)?;
    Ok(true)
}
