//! Committed offsets, kept where Kafka keeps them: as records of the internal topic
//! `__consumer_offsets` (format in `offset_records.rs`), in tern's own log.
//!
//! A commit is appended in request order and made durable by the same group commit as
//! produce (one fsync round serves both); only then does it become visible to OffsetFetch,
//! and a commit whose fsync fails is never visible (the log cuts it away and fences the
//! partition). An in-memory map, rebuilt from the topic at startup, answers reads. The
//! topic is compacted as Kafka's is (`cleanup.policy=compact`, by the log cleaner): the
//! latest value of every key stays, deletions are tombstones. Committed offsets thereby
//! share every guarantee of the log: CRCs, recovery to a valid prefix, fsync before
//! acknowledgement, crash-safe compaction, power-cut tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::offset_records::{
    self, decode_record, Committed, OffsetKey, RecordError, OFFSETS_TOPIC,
};
use crate::log::{records, GroupCommit, LogError, Partition};
use crate::topics::{TopicError, Topics};

/// Most bytes read per step when the topic is replayed at startup.
const REPLAY_CHUNK: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("offset store: {0}")]
    Log(#[from] LogError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the offset store is shutting down")]
    Closed,
}

/// One committed position: (topic, partition, what was committed).
pub type Entry = (String, i32, Committed);

/// A key's latest applied record: its value (or `None` after a deletion) and where it is
/// in the log, so that commits applied out of order never overwrite a newer one.
#[derive(Debug, Clone)]
struct Slot {
    value: Option<Committed>,
    log_offset: i64,
}

#[derive(Default)]
struct State {
    /// Durable and applied: group → (topic, partition) → slot.
    visible: BTreeMap<String, BTreeMap<(String, i32), Slot>>,
    /// Appended, not durable yet, by the log offset of their first record.
    pending: BTreeMap<i64, Vec<(OffsetKey, Option<Committed>)>>,
}

impl State {
    fn apply(&mut self, key: OffsetKey, value: Option<Committed>, log_offset: i64) {
        let group = self.visible.entry(key.group).or_default();
        let slot = group.entry((key.topic, key.partition));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if o.get().log_offset < log_offset {
                    o.insert(Slot { value, log_offset });
                }
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Slot { value, log_offset });
            }
        }
    }

    /// The newest value of every key, durable or pending, in log order.
    fn latest(&self) -> BTreeMap<OffsetKey, Option<Committed>> {
        let mut out = BTreeMap::new();
        for (group, slots) in &self.visible {
            for ((topic, partition), slot) in slots {
                out.insert(
                    OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    slot.value.clone(),
                );
            }
        }
        for entries in self.pending.values() {
            for (key, value) in entries {
                out.insert(key.clone(), value.clone());
            }
        }
        out
    }
}

pub struct CommittedOffsets {
    partition: Arc<Partition>,
    group_commit: GroupCommit,
    state: Mutex<State>,
    commits: Counter,
}

/// A commit appended to the log, becoming visible once durable. Dropping it does not undo
/// or delay anything: the commit still becomes visible when its fsync succeeds.
pub struct PendingCommit {
    outcome: Option<oneshot::Receiver<Result<(), String>>>,
}

impl PendingCommit {
    /// Resolves once the commit is durable and visible, or failed (then it is never visible).
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.outcome {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(StoreError::Log(LogError::NotDurable(why))),
                Err(_) => Err(StoreError::Closed),
            },
        }
    }
}

impl CommittedOffsets {
    /// Opens (creating if needed) `__consumer_offsets` and rebuilds the map from it.
    pub fn open(
        topics: &Topics,
        group_commit: GroupCommit,
        commits: Counter,
    ) -> Result<Arc<CommittedOffsets>, TopicError> {
        let topic = match topics.get(OFFSETS_TOPIC) {
            Some(t) => {
                topics.upgrade_internal(OFFSETS_TOPIC)?;
                t
            }
            None => topics.create_internal(OFFSETS_TOPIC)?,
        };
        let partition = topic
            .partition(0)
            .ok_or_else(|| TopicError::Unknown(format!("{OFFSETS_TOPIC}-0")))?;
        let offsets = CommittedOffsets {
            partition,
            group_commit,
            state: Mutex::new(State::default()),
            commits,
        };
        offsets.replay()?;
        Ok(Arc::new(offsets))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the map from every durable record of the topic.
    fn replay(&self) -> Result<(), TopicError> {
        let (mut offset, end) = {
            let log = self.partition.lock();
            (log.log_start_offset(), log.high_watermark())
        };
        let mut state = self.state();
        let (mut applied, mut skipped) = (0u64, 0u64);
        while offset < end {
            let read = self.partition.read(offset, REPLAY_CHUNK)?;
            if read.bytes.is_empty() {
                break;
            }
            for batch in records::decode_batches(&read.bytes) {
                offset = offset.max(batch.header.next_offset());
                let Ok(batch_records) = batch.records else {
                    skipped += 1;
                    continue;
                };
                for record in batch_records {
                    match decode_record(&record) {
                        Ok(Some((key, value))) => {
                            state.apply(key, value, record.offset);
                            applied += 1;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            skipped += 1;
                            warn!(offset = record.offset, error = %e, "unreadable record in {OFFSETS_TOPIC}; skipped");
                        }
                    }
                }
            }
        }
        if skipped > 0 {
            warn!(skipped, "{OFFSETS_TOPIC} had unreadable records or batches");
        }
        info!(
            records = applied,
            groups = state.visible.len(),
            "committed offsets loaded from {OFFSETS_TOPIC}"
        );
        Ok(())
    }

    /// Appends commits (`None`: a deletion) now, in the caller's order; they become
    /// visible once durable. Call from the request's ordered part.
    pub fn append(
        self: &Arc<Self>,
        entries: Vec<(OffsetKey, Option<Committed>)>,
    ) -> Result<PendingCommit, StoreError> {
        if entries.is_empty() {
            return Ok(PendingCommit { outcome: None });
        }
        let bytes = offset_records::encode_batch(&entries, crate::log::now_ms())?;
        let batches = crate::log::batch::split_batches(&bytes)
            .map_err(|e| StoreError::Log(LogError::Corrupt(e)))?;
        // The state lock orders appends with a concurrent rewrite (see `rewrite`).
        let mut state = self.state();
        let info = self.partition.append(&batches, crate::log::now_ms())?;
        state.pending.insert(info.base_offset, entries);
        drop(state);
        let (tx, rx) = oneshot::channel();
        let partition = Arc::clone(&self.partition);
        let group_commit = self.group_commit.clone();
        let this = Arc::clone(self);
        // A task of its own, so that the commit settles even if the requester goes away.
        tokio::spawn(async move {
            let result = group_commit
                .wait_durable(partition, info.last_offset + 1, info.generation)
                .await;
            this.settle_at(info.base_offset, result.is_ok());
            let _ = tx.send(result.map_err(|e| e.to_string()));
        });
        Ok(PendingCommit { outcome: Some(rx) })
    }

    /// Commits offsets of `group` and waits until they are durable.
    pub async fn commit(
        self: &Arc<Self>,
        group: &str,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        let entries = entries
            .iter()
            .map(|(topic, partition, c)| {
                (
                    OffsetKey {
                        group: group.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    Some(c.clone()),
                )
            })
            .collect();
        self.append(entries)?.durable().await
    }

    /// Appends deletions of the given partitions' offsets of `group`.
    pub fn delete(
        self: &Arc<Self>,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<PendingCommit, StoreError> {
        let entries = partitions
            .iter()
            .map(|(topic, partition)| {
                (
                    OffsetKey {
                        group: group.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    None,
                )
            })
            .collect();
        self.append(entries)
    }

    /// Appends the deletion of every offset of `group` (durable or still pending).
    pub fn delete_group(self: &Arc<Self>, group: &str) -> Result<PendingCommit, StoreError> {
        let keys: Vec<(String, i32)> = {
            let state = self.state();
            state
                .latest()
                .into_iter()
                .filter(|(k, v)| k.group == group && v.is_some())
                .map(|(k, _)| (k.topic, k.partition))
                .collect()
        };
        self.delete(group, &keys)
    }

    /// The durable committed offsets of `group`, by topic and partition.
    pub fn get(&self, group: &str) -> Vec<Entry> {
        let state = self.state();
        state
            .visible
            .get(group)
            .map(|slots| {
                slots
                    .iter()
                    .filter_map(|((t, p), s)| s.value.clone().map(|c| (t.clone(), *p, c)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups with at least one durable committed offset.
    pub fn groups(&self) -> Vec<String> {
        let state = self.state();
        state
            .visible
            .iter()
            .filter(|(_, slots)| slots.values().any(|s| s.value.is_some()))
            .map(|(g, _)| g.clone())
            .collect()
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        let state = self.state();
        state
            .visible
            .get(group)
            .is_some_and(|slots| slots.values().any(|s| s.value.is_some()))
    }

    /// Derived state is never ahead of the log: committed offsets past a partition's
    /// recovered end (the log lost an unsynced tail) are moved back to that end. Runs at
    /// startup, before anything is served; returns how many were clamped.
    pub fn clamp_to_logs(&self, topics: &Topics) -> Result<usize, StoreError> {
        let mut clamped = Vec::new();
        {
            let state = self.state();
            for (group, slots) in &state.visible {
                for ((topic, partition), slot) in slots {
                    let Some(value) = &slot.value else { continue };
                    let Some(end) = topics
                        .get(topic)
                        .and_then(|t| t.partition(*partition))
                        .map(|p| p.lock().high_watermark())
                    else {
                        continue;
                    };
                    if value.offset > end {
                        warn!(%group, %topic, partition, committed = value.offset, log_end = end,
                            "committed offset is past the recovered log end; clamped");
                        let mut value = value.clone();
                        value.offset = end;
                        clamped.push((
                            OffsetKey {
                                group: group.clone(),
                                topic: topic.clone(),
                                partition: *partition,
                            },
                            Some(value),
                        ));
                    }
                }
            }
        }
        let count = clamped.len();
        if count > 0 {
            self.append_and_sync(clamped)?;
        }
        Ok(count)
    }

    /// Imports entries from the old store (startup only).
    pub fn import(&self, entries: Vec<(OffsetKey, Option<Committed>)>) -> Result<(), StoreError> {
        for chunk in entries.chunks(2000) {
            self.append_and_sync(chunk.to_vec())?;
        }
        Ok(())
    }

    /// Appends and syncs directly, without group commit (startup and maintenance, on a
    /// blocking thread), applying the entries once durable.
    fn append_and_sync(
        &self,
        entries: Vec<(OffsetKey, Option<Committed>)>,
    ) -> Result<(), StoreError> {
        let bytes = offset_records::encode_batch(&entries, crate::log::now_ms())?;
        let batches = crate::log::batch::split_batches(&bytes)
            .map_err(|e| StoreError::Log(LogError::Corrupt(e)))?;
        let mut state = self.state();
        let info = self.partition.append(&batches, crate::log::now_ms())?;
        drop(state);
        self.sync(info.last_offset + 1, info.generation)?;
        state = self.state();
        for (i, (key, value)) in entries.into_iter().enumerate() {
            state.apply(key, value, info.base_offset + i as i64);
        }
        Ok(())
    }

    /// Makes the offsets topic durable up to `upto` with a sync of its own.
    fn sync(&self, upto: i64, generation: u64) -> Result<(), StoreError> {
        let target = self.partition.lock().sync_target();
        let result = target.run();
        let mut log = self.partition.lock();
        match result {
            Ok(()) => {
                log.complete_sync(&target);
            }
            Err(e) => {
                log.fail_sync(&e.to_string());
                return Err(StoreError::Log(LogError::NotDurable(e.to_string())));
            }
        }
        if log.is_durable(upto, generation) {
            Ok(())
        } else {
            Err(StoreError::Log(LogError::NotDurable(
                "the offsets log was cut back".to_string(),
            )))
        }
    }

    /// Housekeeping, on a blocking thread: expires the offsets of groups without members
    /// whose newest commit is older than `retention_ms` (Kafka's `offsets.retention.minutes`;
    /// groups for which `keep` says yes are never expired). The log cleaner keeps the
    /// topic itself small.
    pub fn maintain(
        &self,
        now_ms: i64,
        retention_ms: i64,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        if retention_ms >= 0 && crate::log::clock_is_plausible(now_ms) {
            let expired: Vec<(OffsetKey, Option<Committed>)> = {
                let state = self.state();
                let mut out = Vec::new();
                for (group, slots) in &state.visible {
                    let newest = slots
                        .values()
                        .filter_map(|s| s.value.as_ref().map(|c| c.commit_ms))
                        .max();
                    let Some(newest) = newest else { continue };
                    if now_ms.saturating_sub(newest) <= retention_ms || keep(group) {
                        continue;
                    }
                    info!(%group, "committed offsets expired (no members, no commit within offsets retention)");
                    for ((topic, partition), slot) in slots {
                        if slot.value.is_some() {
                            out.push((
                                OffsetKey {
                                    group: group.clone(),
                                    topic: topic.clone(),
                                    partition: *partition,
                                },
                                None,
                            ));
                        }
                    }
                }
                out
            };
            if !expired.is_empty() {
                self.append_and_sync(expired)?;
            }
        }
        self.forget_deleted_groups();
        Ok(())
    }

    /// A deleted key's slot only guards against an older commit of it still settling;
    /// once no pending commit is older, it needs no memory (and groups with no slot left
    /// are gone).
    fn forget_deleted_groups(&self) {
        let mut state = self.state();
        let oldest_pending = state.pending.keys().next().copied().unwrap_or(i64::MAX);
        state.visible.retain(|_, slots| {
            slots.retain(|_, s| s.value.is_some() || s.log_offset >= oldest_pending);
            !slots.is_empty()
        });
    }

    /// Applies a settled commit: visible if durable, forgotten otherwise.
    fn settle_at(&self, base_offset: i64, durable: bool) {
        let mut state = self.state();
        if let Some(entries) = state.pending.remove(&base_offset) {
            if durable {
                self.commits.inc();
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    state.apply(key, value, base_offset + i as i64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::topics::Defaults;
    use std::time::Duration;

    fn open(dir: &std::path::Path) -> (Arc<CommittedOffsets>, Topics) {
        let topics = Topics::open(dir, Defaults::default()).expect("topics");
        let (group_commit, _task) = GroupCommit::start(Duration::ZERO, Arc::new(Metrics::new()));
        let offsets =
            CommittedOffsets::open(&topics, group_commit, Counter::default()).expect("offsets");
        (offsets, topics)
    }

    fn at(offset: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_ms: crate::log::now_ms(),
        }
    }

    fn key(group: &str, partition: i32) -> OffsetKey {
        OffsetKey {
            group: group.into(),
            topic: "t".into(),
            partition,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_apply_in_append_order_whatever_order_they_settle_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (offsets, _topics) = open(dir.path());
        let first = offsets
            .append(vec![(key("g", 0), Some(at(10)))])
            .expect("append");
        let second = offsets
            .append(vec![(key("g", 0), Some(at(20)))])
            .expect("append");
        // Wait for the second first: the first must not overwrite it when it settles.
        second.durable().await.expect("durable");
        first.durable().await.expect("durable");
        assert_eq!(offsets.get("g")[0].2.offset, 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_is_invisible_until_durable_and_forgotten_if_it_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (offsets, _topics) = open(dir.path());
        // Appended, not durable: the settle step is what makes it visible.
        let bytes = offset_records::encode_batch(&[(key("g", 0), Some(at(5)))], 1).expect("enc");
        let batches = crate::log::batch::split_batches(&bytes).expect("batch");
        let info = offsets.partition.append(&batches, 1).expect("append");
        offsets
            .state()
            .pending
            .insert(info.base_offset, vec![(key("g", 0), Some(at(5)))]);
        assert!(
            offsets.get("g").is_empty(),
            "not visible before it is durable"
        );
        offsets.settle_at(info.base_offset, false);
        assert!(
            offsets.get("g").is_empty(),
            "a failed commit never becomes visible"
        );
        assert!(offsets.state().pending.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_survive_a_restart_and_compaction_keeps_only_the_latest_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (offsets, _topics) = open(dir.path());
            for i in 0..200 {
                offsets
                    .commit("g", &[("t".into(), i % 4, at(i as i64))])
                    .await
                    .expect("commit");
            }
            offsets
                .commit("gone", &[("t".into(), 0, at(1))])
                .await
                .expect("commit");
            offsets
                .delete_group("gone")
                .expect("delete")
                .durable()
                .await
                .expect("durable");
            offsets.forget_deleted_groups();
            assert!(!offsets.has_offsets("gone"));
            // Seal everything and compact: one record per live key stays.
            {
                let mut log = offsets.partition.lock();
                assert!(
                    log.config().cleanup.compacts(),
                    "{OFFSETS_TOPIC} is compacted"
                );
                log.roll(crate::log::now_ms()).expect("roll");
                let target = log.sync_target();
                target.run().expect("fsync");
                log.complete_sync(&target);
            }
            let limits = crate::log::compaction::CleanerLimits::default();
            offsets
                .partition
                .clean(&limits, crate::log::now_ms(), true, None)
                .expect("clean")
                .expect("a pass ran");
            let read = offsets.partition.read(0, 1 << 20).expect("read");
            let records: usize = records::decode_batches(&read.bytes)
                .into_iter()
                .map(|b| b.records.map(|r| r.len()).unwrap_or(0))
                .sum();
            // 4 live keys and the deletion's tombstone (kept delete.retention.ms).
            assert_eq!(records, 5, "one record per key");
        }
        let (offsets, _topics) = open(dir.path());
        let mut got: Vec<(i32, i64)> = offsets
            .get("g")
            .into_iter()
            .map(|(_, p, c)| (p, c.offset))
            .collect();
        got.sort();
        assert_eq!(got, vec![(0, 196), (1, 197), (2, 198), (3, 199)]);
        assert!(!offsets.has_offsets("gone"));
        assert_eq!(offsets.groups(), vec!["g".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_of_groups_without_members_expire_unless_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (offsets, _topics) = open(dir.path());
        let mut old = at(1);
        old.commit_ms = crate::log::now_ms() - 10_000;
        for group in ["idle", "tern-mqtt-gw", "active"] {
            offsets
                .commit(group, &[("t".into(), 0, old.clone())])
                .await
                .expect("commit");
        }
        let keep = |g: &str| g.starts_with("tern-") || g == "active";
        let now = crate::log::now_ms();
        offsets.maintain(now, 60_000, &keep).expect("maintain");
        assert!(offsets.has_offsets("idle"), "within retention");
        offsets.maintain(now, 5_000, &keep).expect("maintain");
        assert!(!offsets.has_offsets("idle"), "expired");
        assert!(offsets.has_offsets("tern-mqtt-gw") && offsets.has_offsets("active"));
    }
}
