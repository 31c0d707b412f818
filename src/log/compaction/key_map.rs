//! The cleaner's map of key → latest offset, in a fixed amount of memory.
//!
//! Keys are stored as 16-byte digests (Kafka's cleaner stores MD5 digests the same way):
//! whatever the keys' sizes, an entry costs the same, so the number of keys one pass can
//! handle is known before it starts. Two keys sharing a 128-bit digest prefix would be
//! treated as one; with SHA-256 that is not a practical concern.

use std::collections::HashMap;

/// Bytes one entry is budgeted at: digest, offset and the hash table's own overhead.
const BYTES_PER_ENTRY: usize = 40;

pub type Digest = [u8; 16];

/// The digest a key is stored under.
pub fn digest(key: &[u8]) -> Digest {
    let full = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full.as_ref()[..16]);
    out
}

#[derive(Debug)]
pub struct KeyMap {
    entries: HashMap<Digest, i64>,
    capacity: usize,
}

impl KeyMap {
    /// A map that holds at most as many keys as `memory_bytes` allows (at least one).
    pub fn with_memory(memory_bytes: usize) -> KeyMap {
        let capacity = (memory_bytes / BYTES_PER_ENTRY).max(1);
        KeyMap {
            entries: HashMap::new(),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records `offset` as the latest of `key`. Returns false, changing nothing, when the
    /// key is new and the map is full.
    pub fn insert(&mut self, key: &Digest, offset: i64) -> bool {
        if let Some(latest) = self.entries.get_mut(key) {
            *latest = (*latest).max(offset);
            return true;
        }
        if self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(*key, offset);
        true
    }

    /// The latest offset recorded for `key`.
    pub fn latest(&self, key: &Digest) -> Option<i64> {
        self.entries.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_and_refuses_new_keys_when_full() {
        let mut map = KeyMap::with_memory(2 * BYTES_PER_ENTRY);
        assert_eq!(map.capacity(), 2);
        assert!(map.insert(&digest(b"a"), 5));
        assert!(map.insert(&digest(b"a"), 3), "a known key always fits");
        assert!(map.insert(&digest(b"b"), 7));
        assert!(!map.insert(&digest(b"c"), 8), "full");
        assert!(map.insert(&digest(b"b"), 9));
        assert_eq!(map.latest(&digest(b"a")), Some(5));
        assert_eq!(map.latest(&digest(b"b")), Some(9));
        assert_eq!(map.latest(&digest(b"c")), None);
        assert_eq!(map.len(), 2);
    }
}
