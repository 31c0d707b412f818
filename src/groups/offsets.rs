//! Committed consumer offsets: a small store trait, its sled implementation (with a small,
//! explicit cache) and an in-memory one for tests, plus batched durable commits.
//!
//! Keys: `u16 len, group, u16 len, topic, i32 partition` (big-endian), so one group's
//! offsets are a prefix scan. Values: `i64 offset, i32 leader epoch, i64 commit time ms,
//! metadata (UTF-8)`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("offset store: {0}")]
    Sled(#[from] sled::Error),
    #[error("offset store entry is malformed")]
    Malformed,
    #[error("the offset store is shutting down")]
    Closed,
    #[error("offset store flush failed: {0}")]
    Flush(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// One committed position: (topic, partition, what was committed).
pub type Entry = (String, i32, Committed);

pub trait OffsetStore: Send + Sync {
    /// Records offsets; durable only after [`OffsetStore::flush`].
    fn put(&self, group: &str, entries: &[Entry]) -> Result<(), StoreError>;
    /// Makes everything put so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    fn get(&self, group: &str) -> Result<Vec<Entry>, StoreError>;
    fn groups(&self) -> Result<Vec<String>, StoreError>;
    fn delete(&self, group: &str, topic: &str, partition: i32) -> Result<(), StoreError>;
    fn delete_group(&self, group: &str) -> Result<(), StoreError> {
        for (topic, partition, _) in self.get(group)? {
            self.delete(group, &topic, partition)?;
        }
        Ok(())
    }
}

fn group_prefix(group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + group.len());
    key.extend_from_slice(&(group.len() as u16).to_be_bytes());
    key.extend_from_slice(group.as_bytes());
    key
}

fn key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = group_prefix(group);
    key.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    key.extend_from_slice(topic.as_bytes());
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn decode_key(key: &[u8]) -> Option<(String, String, i32)> {
    let take = |at: usize| -> Option<(String, usize)> {
        let len = u16::from_be_bytes([*key.get(at)?, *key.get(at + 1)?]) as usize;
        let text = std::str::from_utf8(key.get(at + 2..at + 2 + len)?).ok()?;
        Some((text.to_string(), at + 2 + len))
    };
    let (group, at) = take(0)?;
    let (topic, at) = take(at)?;
    let p = key.get(at..at + 4)?;
    Some((group, topic, i32::from_be_bytes([p[0], p[1], p[2], p[3]])))
}

fn encode_value(c: &Committed) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + c.metadata.len());
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    v.extend_from_slice(&c.commit_ms.to_be_bytes());
    v.extend_from_slice(c.metadata.as_bytes());
    v
}

fn decode_value(v: &[u8]) -> Option<Committed> {
    let i64_at = |at: usize| {
        v.get(at..at + 8)
            .map(|b| i64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    };
    Some(Committed {
        offset: i64_at(0)?,
        leader_epoch: i32::from_be_bytes(v.get(8..12)?.try_into().ok()?),
        commit_ms: i64_at(12)?,
        metadata: String::from_utf8(v.get(20..)?.to_vec()).ok()?,
    })
}

/// Offsets in sled, under `<data_dir>/meta`.
pub struct SledOffsets {
    db: sled::Db,
}

impl SledOffsets {
    /// sled's cache defaults to 1 GiB; on a Pi it gets `cache_bytes` (a few MiB).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledOffsets, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::LowSpace)
            .flush_every_ms(None)
            .open()?;
        Ok(SledOffsets { db })
    }
}

impl SledOffsets {
    /// The same sled database, for the producer-id generator.
    pub fn db(&self) -> sled::Db {
        self.db.clone()
    }
}

impl OffsetStore for SledOffsets {
    fn put(&self, group: &str, entries: &[Entry]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (topic, partition, committed) in entries {
            batch.insert(key(group, topic, *partition), encode_value(committed));
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn get(&self, group: &str) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(group_prefix(group)) {
            let (k, v) = item?;
            let (g, topic, partition) = decode_key(&k).ok_or(StoreError::Malformed)?;
            if g == group {
                out.push((
                    topic,
                    partition,
                    decode_value(&v).ok_or(StoreError::Malformed)?,
                ));
            }
        }
        Ok(out)
    }

    fn groups(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for item in self.db.iter() {
            let (k, _) = item?;
            let (group, _, _) = decode_key(&k).ok_or(StoreError::Malformed)?;
            if out.last() != Some(&group) {
                out.push(group);
            }
        }
        Ok(out)
    }

    fn delete(&self, group: &str, topic: &str, partition: i32) -> Result<(), StoreError> {
        self.db.remove(key(group, topic, partition))?;
        Ok(())
    }
}

/// Offsets in memory, for tests.
#[derive(Default)]
pub struct MemoryOffsets {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl OffsetStore for MemoryOffsets {
    fn put(&self, group: &str, entries: &[Entry]) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition, committed) in entries {
            map.insert(key(group, topic, *partition), encode_value(committed));
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn get(&self, group: &str) -> Result<Vec<Entry>, StoreError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = group_prefix(group);
        map.range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| {
                let (g, topic, partition) = decode_key(k)?;
                (g == group).then(|| decode_value(v).map(|c| (topic, partition, c)))?
            })
            .map(Ok)
            .collect()
    }
    fn groups(&self) -> Result<Vec<String>, StoreError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = map
            .keys()
            .filter_map(|k| decode_key(k).map(|(g, _, _)| g))
            .collect();
        out.dedup();
        Ok(out)
    }
    fn delete(&self, group: &str, topic: &str, partition: i32) -> Result<(), StoreError> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(group, topic, partition));
        Ok(())
    }
}

/// Batches commits so that one flush (fsync) serves every commit waiting when it starts;
/// a commit is answered only after its flush.
#[derive(Clone)]
pub struct DurableCommits {
    requests: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    store: Arc<dyn OffsetStore>,
}

/// Counters the flusher bumps: commits made durable and store flushes (fsyncs) done.
#[derive(Clone, Default)]
pub struct CommitCounters {
    pub commits: Counter,
    pub flushes: Counter,
}

impl DurableCommits {
    /// Starts the flusher. Commits that arrive within `linger` of the previous flush wait
    /// for the window to end and share one flush: at most one fsync per `linger`.
    pub fn start(
        store: Arc<dyn OffsetStore>,
        linger: Duration,
        counters: CommitCounters,
    ) -> DurableCommits {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(4096);
        let flusher = Arc::clone(&store);
        tokio::spawn(async move {
            let mut last_flush: Option<Instant> = None;
            while let Some(first) = rx.recv().await {
                if let Some(last) = last_flush {
                    tokio::time::sleep_until((last + linger).into()).await;
                }
                let mut waiting = vec![first];
                while let Ok(more) = rx.try_recv() {
                    waiting.push(more);
                }
                last_flush = Some(Instant::now());
                let store = Arc::clone(&flusher);
                let result =
                    tokio::task::spawn_blocking(move || store.flush().map_err(|e| e.to_string()))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                counters.flushes.inc();
                counters.commits.inc_by(waiting.len() as u64);
                for w in waiting {
                    let _ = w.send(result.clone());
                }
            }
        });
        DurableCommits {
            requests: tx,
            store,
        }
    }

    pub fn store(&self) -> &Arc<dyn OffsetStore> {
        &self.store
    }

    /// Stores the entries and returns once they are durable.
    pub async fn commit(&self, group: &str, entries: &[Entry]) -> Result<(), StoreError> {
        self.store.put(group, entries)?;
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Flush)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64, metadata: &str) -> Committed {
        Committed {
            offset,
            leader_epoch: -1,
            metadata: metadata.to_string(),
            commit_ms: 1,
        }
    }

    fn exercise(store: &dyn OffsetStore) {
        store
            .put(
                "g1",
                &[
                    ("t".into(), 0, committed(5, "meta")),
                    ("t".into(), 1, committed(7, "")),
                ],
            )
            .expect("put");
        store
            .put("g2", &[("u".into(), 0, committed(1, "x"))])
            .expect("put");
        // A group whose name is a prefix of another's stays separate.
        store
            .put("g", &[("t".into(), 0, committed(9, ""))])
            .expect("put");
        store.flush().expect("flush");
        let g1 = store.get("g1").expect("get");
        assert_eq!(g1.len(), 2);
        assert_eq!(
            g1[0],
            ("t".to_string(), 0, committed(5, "meta")),
            "metadata round-trips"
        );
        assert_eq!(store.get("g").expect("get").len(), 1);
        assert_eq!(
            store.groups().expect("groups"),
            vec!["g".to_string(), "g1".into(), "g2".into()]
        );
        store.delete("g1", "t", 0).expect("delete");
        assert_eq!(store.get("g1").expect("get").len(), 1);
        store.delete_group("g2").expect("delete group");
        assert!(store.get("g2").expect("get").is_empty());
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryOffsets::default());
    }

    #[test]
    fn sled_store_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledOffsets::open(dir.path(), 1 << 20).expect("open");
            exercise(&store);
        }
        // sled's background flusher can hold the database (and its file lock) for a moment
        // after the last handle is dropped; a restarted tern is a new process and never
        // sees this, a reopen in the same process may have to wait.
        let mut reopened = SledOffsets::open(dir.path(), 1 << 20);
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            reopened = SledOffsets::open(dir.path(), 1 << 20);
        }
        let store = reopened.expect("reopen");
        assert_eq!(
            store.get("g1").expect("get"),
            vec![("t".to_string(), 1, committed(7, ""))]
        );
    }
}
