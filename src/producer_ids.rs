//! Producer ids for idempotent producers (InitProducerId), unique across restarts and
//! power cuts.
//!
//! Ids are handed out from blocks: before the first id of a block is given to a client, the
//! block's end is written to `<data_dir>/producer-ids` (write, fsync, rename, fsync the
//! directory). After a restart allocation resumes at that end, above every id ever handed
//! out, and above every producer id that still has state in a log.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::log::checkpoint;

const FILE: &str = "producer-ids";
/// Ids per durable block: one small fsynced write per this many InitProducerId calls.
const BLOCK: i64 = 1000;

pub struct ProducerIds {
    dir: PathBuf,
    /// (next id to hand out, end of the durable block).
    next: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Resumes after the last durable block and above `max_seen` (ids found in the logs).
    pub fn open(data_dir: &Path, max_seen: Option<i64>) -> std::io::Result<ProducerIds> {
        checkpoint::remove_stale_temporaries(data_dir, &[FILE])?;
        let stored = checkpoint::read(data_dir, FILE).unwrap_or(0).max(0);
        let start = stored.max(max_seen.map_or(0, |m| m.saturating_add(1)));
        Ok(ProducerIds {
            dir: data_dir.to_path_buf(),
            next: Mutex::new((start, start)),
        })
    }

    /// A producer id never handed out before.
    pub fn allocate(&self) -> std::io::Result<i64> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let (id, end) = *next;
        if id >= end {
            let new_end = id.saturating_add(BLOCK);
            checkpoint::write(&self.dir, FILE, new_end)?;
            next.1 = new_end;
        }
        next.0 = id + 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts_and_stay_above_ids_in_the_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::open(dir.path(), None).expect("open");
        let first: Vec<i64> = (0..3).map(|_| ids.allocate().expect("id")).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(ids);
        let ids = ProducerIds::open(dir.path(), None).expect("reopen");
        assert!(ids.allocate().expect("id") > 2);
        let ids = ProducerIds::open(dir.path(), Some(5_000)).expect("reopen");
        assert_eq!(ids.allocate().expect("id"), 5_001);
    }
}
