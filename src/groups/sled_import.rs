//! One-time import of committed offsets from the sled store that tern used before
//! offsets moved into `__consumer_offsets` (`<data_dir>/meta`).
//!
//! The old keys stored lengths as `u16`, so a hostile group id could alias another group's
//! keys; entries that do not decode cleanly are skipped. The import is best effort by
//! design: a torn sled database must never stop tern from starting. Afterwards the old
//! directory is renamed to `meta.imported` (or `meta.unreadable`) and never read again.

use std::path::Path;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::offset_records::{Committed, OffsetKey};
use super::offsets::CommittedOffsets;

fn decode_old_key(key: &[u8]) -> Option<OffsetKey> {
    let take = |at: usize| -> Option<(String, usize)> {
        let len = u16::from_be_bytes([*key.get(at)?, *key.get(at + 1)?]) as usize;
        let text = std::str::from_utf8(key.get(at + 2..at + 2 + len)?).ok()?;
        Some((text.to_string(), at + 2 + len))
    };
    let (group, at) = take(0)?;
    let (topic, at) = take(at)?;
    let p = key.get(at..at + 4)?;
    if key.len() != at + 4 {
        return None;
    }
    Some(OffsetKey {
        group,
        topic,
        partition: i32::from_be_bytes([p[0], p[1], p[2], p[3]]),
    })
}

fn decode_old_value(v: &[u8]) -> Option<Committed> {
    let i64_at = |at: usize| Some(i64::from_be_bytes(v.get(at..at + 8)?.try_into().ok()?));
    Some(Committed {
        offset: i64_at(0)?,
        leader_epoch: i32::from_be_bytes(v.get(8..12)?.try_into().ok()?),
        commit_ms: i64_at(12)?,
        metadata: String::from_utf8(v.get(20..)?.to_vec()).ok()?,
    })
}

/// Imports `<data_dir>/meta` if it exists (before anything is served).
pub fn import(data_dir: &Path, offsets: &Arc<CommittedOffsets>, cache_bytes: u64) {
    let dir = data_dir.join("meta");
    if !dir.join("conf").exists() {
        return;
    }
    let opened = sled::Config::new()
        .path(&dir)
        .cache_capacity(cache_bytes)
        .open();
    let (entries, skipped, outcome) = match opened {
        Ok(db) => {
            let mut entries = Vec::new();
            let mut skipped = 0usize;
            for item in db.iter() {
                match item {
                    Ok((k, v)) => match (decode_old_key(&k), decode_old_value(&v)) {
                        (Some(key), Some(value)) if !offsets.has_offsets(&key.group) => {
                            entries.push((key, Some(value)))
                        }
                        (Some(_), Some(_)) => {}
                        _ => skipped += 1,
                    },
                    Err(_) => skipped += 1,
                }
            }
            (entries, skipped, "meta.imported")
        }
        Err(e) => {
            error!(dir = %dir.display(), error = %e,
                "the old offset store (sled) cannot be opened; committed offsets from before the upgrade are lost, consumers restart from auto.offset.reset");
            (Vec::new(), 0, "meta.unreadable")
        }
    };
    let count = entries.len();
    if count > 0 {
        if let Err(e) = offsets.import(entries) {
            error!(error = %e, "importing committed offsets from the old store failed; will retry at the next start");
            return;
        }
    }
    if skipped > 0 {
        warn!(
            skipped,
            "entries of the old offset store were malformed and not imported"
        );
    }
    let target = data_dir.join(outcome);
    match std::fs::rename(&dir, &target) {
        Ok(()) => info!(imported = count, moved_to = %target.display(),
            "committed offsets imported from the old sled store into __consumer_offsets"),
        Err(e) => warn!(error = %e, "cannot move the old offset store aside"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliased_keys_from_the_old_format_do_not_decode() {
        // A group id of 65,543 bytes was stored with length 7: the key no longer parses
        // as exactly (group, topic, partition).
        let mut key = 7u16.to_be_bytes().to_vec();
        key.extend_from_slice(&[b'x'; 65_543]);
        key.extend_from_slice(&1u16.to_be_bytes());
        key.extend_from_slice(b"t");
        key.extend_from_slice(&0i32.to_be_bytes());
        assert!(decode_old_key(&key).is_none());
        let mut good = 3u16.to_be_bytes().to_vec();
        good.extend_from_slice(b"grp");
        good.extend_from_slice(&1u16.to_be_bytes());
        good.extend_from_slice(b"t");
        good.extend_from_slice(&2i32.to_be_bytes());
        assert_eq!(
            decode_old_key(&good),
            Some(OffsetKey {
                group: "grp".into(),
                topic: "t".into(),
                partition: 2
            })
        );
    }
}
