//! Swapping cleaned segments in, so that a crash at any moment leaves either the old
//! segments or the new one — never a mix, never a lost key.
//!
//! The cleaner writes a group's replacement as `<base>.log.cleaned` (with its indexes,
//! `.index.cleaned` and `.timeindex.cleaned`) and fsyncs it. Then, under the partition lock:
//!
//! 1. **commit**: `<base>.log.cleaned` is renamed to `<base>.<end>.swap` and the directory
//!    fsynced — from here on the new segment is the truth for offsets `[base, end)`;
//! 2. the old segments of `[base, end)` are deleted (files and indexes);
//! 3. the staged indexes take their final names, then `<base>.<end>.swap` becomes
//!    `<base>.log`; the directory is fsynced.
//!
//! [`recover`] runs before a partition is opened: staged files (`*.cleaned`) are removed
//! (a swap that never committed is discarded), and every `.swap` finishes its steps 2–3
//! (its indexes are rebuilt by the normal recovery scan).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::log::checkpoint;
use crate::log::segment::{file_stem, Segment, STAGED_SUFFIX};

/// The steps of a swap, for the crash tests (`TERN_TEST_CLEANER_ABORT_AT`) to stop at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The replacement is written and fsynced under its staged names.
    Staged,
    /// The `.swap` rename is durable.
    Committed,
    /// The old segments are deleted.
    OldRemoved,
    /// The new segment has its final names.
    Installed,
}

impl Step {
    pub fn parse(name: &str) -> Option<Step> {
        match name {
            "staged" => Some(Step::Staged),
            "committed" => Some(Step::Committed),
            "old-removed" => Some(Step::OldRemoved),
            "installed" => Some(Step::Installed),
            _ => None,
        }
    }
}

/// The name of the commit marker of a swap of offsets `[base, end)`.
pub fn swap_path(dir: &Path, base: i64, end: i64) -> PathBuf {
    dir.join(format!("{}.{}.swap", file_stem(base), file_stem(end)))
}

fn parse_swap_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".swap")?;
    let (base, end) = stem.split_once('.')?;
    if base.len() != 20 || end.len() != 20 {
        return None;
    }
    Some((base.parse().ok()?, end.parse().ok()?))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes the files of every segment whose base lies in `[base, end)`.
fn remove_segments(dir: &Path, base: i64, end: i64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let Ok(segment) = stem.parse::<i64>() else {
            continue;
        };
        if stem.len() == 20 && (base..end).contains(&segment) {
            let (log, index, time_index) = Segment::paths(dir, segment);
            for path in [index, time_index, log] {
                remove_if_present(&path)?;
            }
        }
    }
    // The replaced base's indexes, even where its log file is already gone.
    let (_, index, time_index) = Segment::paths(dir, base);
    remove_if_present(&index)?;
    remove_if_present(&time_index)
}

/// What [`recover`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Committed swaps finished.
    pub completed: usize,
    /// Staged files of uncommitted cleanings removed.
    pub discarded: usize,
}

/// Finishes committed swaps and discards uncommitted ones (see the module comment).
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut recovered = Recovered::default();
    let mut swaps = Vec::new();
    let mut staged = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(range) = parse_swap_name(&name) {
            swaps.push(range);
        } else if name.ends_with(STAGED_SUFFIX) {
            staged.push(entry.path());
        }
    }
    if swaps.is_empty() && staged.is_empty() {
        return Ok(recovered);
    }
    for path in &staged {
        remove_if_present(path)?;
        recovered.discarded += 1;
    }
    swaps.sort_unstable();
    for (base, end) in swaps {
        remove_segments(dir, base, end)?;
        let (log, _, _) = Segment::paths(dir, base);
        fs::rename(swap_path(dir, base, end), log)?;
        recovered.completed += 1;
    }
    checkpoint::sync_dir(dir)?;
    Ok(recovered)
}

/// Step 1: the commit point.
pub fn commit(dir: &Path, base: i64, end: i64) -> io::Result<()> {
    let (staged_log, _, _) = Segment::staged_paths(dir, base);
    fs::rename(staged_log, swap_path(dir, base, end))?;
    checkpoint::sync_dir(dir)
}

/// Step 3 (after the old segments are deleted): final names for the new segment.
pub fn finish(dir: &Path, base: i64, end: i64) -> io::Result<()> {
    let (log, index, time_index) = Segment::paths(dir, base);
    let (_, staged_index, staged_time_index) = Segment::staged_paths(dir, base);
    fs::rename(staged_index, index)?;
    fs::rename(staged_time_index, time_index)?;
    fs::rename(swap_path(dir, base, end), log)?;
    checkpoint::sync_dir(dir)
}

/// Removes the staged files of a cleaning that will not be committed.
pub fn discard(dir: &Path, base: i64) -> io::Result<()> {
    let (log, index, time_index) = Segment::staged_paths(dir, base);
    for path in [log, index, time_index] {
        remove_if_present(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_round_trip() {
        let dir = Path::new("/d");
        let path = swap_path(dir, 5, 1234);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(parse_swap_name(name), Some((5, 1234)));
        assert_eq!(parse_swap_name("00000000000000000005.swap"), None);
    }
}
