//! Compaction against a simple model: every record ever appended, in order. Random
//! sequences of keyed records, tombstones, time advances, rolls, restarts and cleanings;
//! after each cleaning the log must hold the latest value of every key at its original
//! offset, nothing superseded below the cleaned point, and no tombstone older than
//! `delete.retention.ms`. The crash tests stop a cleaning at each step of the swap and
//! reopen the directory as a restart after kill -9 would.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use indexmap::IndexMap;
use proptest::prelude::*;

use super::swap::Step;
use super::{CleanerLimits, Cleanup, CompactionConfig};
use crate::client::records::{encode_records, plain_record};
use crate::log::compaction::cleaner::CleanError;
use crate::log::partition::{Log, Partition};
use crate::log::{batch, records, LogConfig};

const START: i64 = 1_767_225_600_000;
const RETENTION_MS: i64 = 1_000;

/// One record as the model knows it: key and value (`None`: a tombstone), and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

#[derive(Debug, Clone)]
enum Op {
    /// A batch of (key, tombstone?) records.
    Append(Vec<(u8, bool)>),
    Advance(i64),
    Roll,
    Clean,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0u8..12, proptest::bool::weighted(0.15)), 1..5)
            .prop_map(Op::Append),
        1 => (1i64..(2 * RETENTION_MS)).prop_map(Op::Advance),
        1 => Just(Op::Roll),
        2 => Just(Op::Clean),
        1 => Just(Op::Reopen),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        cleanup: Cleanup::Compact,
        compaction: CompactionConfig {
            delete_retention_ms: RETENTION_MS,
            ..CompactionConfig::default()
        },
        segment_bytes: 700,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    partition: Partition,
    /// Every record appended: offset → entry.
    model: BTreeMap<i64, Entry>,
    now: i64,
    limits: CleanerLimits,
}

fn open(dir: &Path) -> Partition {
    let (log, _) = Log::open(dir, config(), START).expect("open");
    Partition::new("door-state", 0, log)
}

fn sync(partition: &Partition) {
    let mut log = partition.lock();
    let target = log.sync_target();
    target.run().expect("fsync");
    log.complete_sync(&target);
}

impl Harness {
    fn new(key_map_bytes: usize) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(dir.path());
        Harness {
            dir,
            partition,
            model: BTreeMap::new(),
            now: START,
            limits: CleanerLimits {
                key_map_bytes,
                io_max_bytes_per_second: 0,
            },
        }
    }

    fn append(&mut self, records: &[(u8, bool)]) {
        let encoded: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, (key, tombstone))| {
                let value = (!tombstone).then(|| Bytes::from(format!("v{}-{i}", self.model.len())));
                plain_record(
                    i,
                    self.now,
                    Some(Bytes::from(format!("lock-{key}"))),
                    value,
                    IndexMap::new(),
                )
            })
            .collect();
        let bytes = encode_records(&encoded).expect("encode");
        let batches = batch::split_batches(&bytes).expect("split");
        let info = self.partition.append(&batches, self.now).expect("append");
        sync(&self.partition);
        for (i, record) in encoded.iter().enumerate() {
            self.model.insert(
                info.base_offset + i as i64,
                Entry {
                    key: record.key.as_ref().map(|k| k.to_vec()).unwrap_or_default(),
                    value: record.value.as_ref().map(|v| v.to_vec()),
                    timestamp: self.now,
                },
            );
        }
    }

    fn roll(&mut self) {
        let rolled = self.partition.lock().roll(self.now);
        rolled.expect("roll");
        sync(&self.partition);
    }

    fn reopen(&mut self) {
        self.partition = open(self.dir.path());
    }

    /// Cleans until nothing is dirty. Returns the offset below which everything is clean.
    fn clean(&mut self) -> i64 {
        for _ in 0..1000 {
            let pass = self
                .partition
                .clean(&self.limits, self.now, true, None)
                .expect("clean");
            if pass.is_none() {
                break;
            }
        }
        let log = self.partition.lock();
        assert_eq!(
            log.cleaner_stats(self.now).dirty_bytes,
            0,
            "cleaning converges"
        );
        // Everything below the active segment was cleanable.
        log.active_segment_base()
    }

    /// Every record in the log: offset → entry, read through the public read path.
    fn stored(&self) -> BTreeMap<i64, Entry> {
        let log = self.partition.lock();
        let mut out = BTreeMap::new();
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            let read = log.read(offset, 1 << 20).expect("read");
            assert!(
                !read.bytes.is_empty(),
                "a read at {offset} below the high watermark finds a batch"
            );
            for decoded in records::decode_batches(&read.bytes) {
                offset = decoded.header.next_offset();
                for record in decoded.records.expect("valid records") {
                    out.insert(
                        record.offset,
                        Entry {
                            key: record.key.map(|k| k.to_vec()).unwrap_or_default(),
                            value: record.value.map(|v| v.to_vec()),
                            timestamp: record.timestamp,
                        },
                    );
                }
            }
        }
        out
    }

    /// The model's latest entry (and its offset) per key among the offsets below `end`.
    fn latest(&self, end: i64) -> BTreeMap<Vec<u8>, (i64, Entry)> {
        let mut out = BTreeMap::new();
        for (offset, entry) in self.model.range(..end) {
            out.insert(entry.key.clone(), (*offset, entry.clone()));
        }
        out
    }

    /// What must hold at any time, cleaned or not.
    fn check_always(&self) {
        let stored = self.stored();
        for (offset, entry) in &stored {
            assert_eq!(
                self.model.get(offset),
                Some(entry),
                "offset {offset} keeps its record"
            );
        }
        for (key, (offset, entry)) in self.latest(i64::MAX) {
            let expired = entry.value.is_none() && self.now - entry.timestamp > RETENTION_MS;
            if !expired {
                assert!(
                    stored.contains_key(&offset),
                    "the latest record of {} (offset {offset}) is kept",
                    String::from_utf8_lossy(&key)
                );
            }
        }
    }

    /// What must hold right after cleaning everything below `clean_end` (the cleaner sees
    /// only that part: a key's newer record in the active segment supersedes nothing yet).
    fn check_cleaned(&self, clean_end: i64) {
        self.check_always();
        let latest = self.latest(clean_end);
        for (offset, entry) in self.stored().range(..clean_end) {
            let (latest_offset, _) = &latest[&entry.key];
            assert_eq!(
                offset, latest_offset,
                "a superseded record below {clean_end} is gone"
            );
            assert!(
                !(entry.value.is_none() && self.now - entry.timestamp > RETENTION_MS),
                "an expired tombstone at {offset} is gone"
            );
        }
    }
}

fn run_ops(ops: &[Op], key_map_bytes: usize) {
    let mut h = Harness::new(key_map_bytes);
    for op in ops {
        match op {
            Op::Append(records) => h.append(records),
            Op::Advance(ms) => h.now += ms,
            Op::Roll => h.roll(),
            Op::Reopen => h.reopen(),
            Op::Clean => {
                let end = h.clean();
                h.check_cleaned(end);
            }
        }
        h.check_always();
    }
    h.roll();
    let end = h.clean();
    h.check_cleaned(end);
    h.reopen();
    h.check_cleaned(end);
}

proptest! {
    // Failing cases found so far are kept beside this file (model_tests.proptest-regressions)
    // and replayed first.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn compaction_keeps_the_latest_value_of_every_key(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(&ops, 4 << 20);
    }

    #[test]
    fn a_key_map_smaller_than_the_keys_takes_several_passes(ops in proptest::collection::vec(op(), 1..60)) {
        // Room for 3 keys: logs with 12 keys need several passes.
        run_ops(&ops, 120);
    }
}

/// A log with every key written several times, then rolled so that all is cleanable.
fn dirty_log() -> Harness {
    let mut h = Harness::new(4 << 20);
    for round in 0..6u8 {
        for key in 0..10u8 {
            h.append(&[(key, round == 5 && key == 3)]);
        }
    }
    h.roll();
    h
}

#[test]
fn a_cleaning_stopped_at_any_step_leaves_a_valid_log_after_restart() {
    for step in [
        Step::Staged,
        Step::Committed,
        Step::OldRemoved,
        Step::Installed,
    ] {
        let mut h = dirty_log();
        let before = h.stored().len();
        let stopped = h.partition.clean(&h.limits, h.now, true, Some(step));
        assert!(
            matches!(stopped, Err(CleanError::Stopped(s)) if s == step),
            "{step:?}: {stopped:?}"
        );
        // kill -9: nothing more happens; the directory is opened again.
        h.reopen();
        h.check_always();
        let after = h.stored().len();
        if step == Step::Staged {
            assert_eq!(after, before, "an uncommitted cleaning changes nothing");
        } else {
            assert!(
                after < before,
                "{step:?}: a committed cleaning is finished by recovery"
            );
        }
        let leftovers: Vec<String> = std::fs::read_dir(h.dir.path())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".swap") || n.ends_with(".cleaned"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{step:?}: recovery leaves no staged files: {leftovers:?}"
        );
        let end = h.clean();
        h.check_cleaned(end);
    }
}

#[test]
fn small_segments_merge_and_the_log_shrinks_to_its_keys() {
    let mut h = Harness::new(4 << 20);
    for round in 0..50 {
        for key in 0..10u8 {
            h.append(&[(key, false)]);
        }
        if round % 5 == 4 {
            h.roll();
        }
    }
    h.roll();
    let before = h.partition.lock().size_bytes();
    let end = h.clean();
    h.check_cleaned(end);
    let (size, segments) = {
        let log = h.partition.lock();
        (log.size_bytes(), log.segment_count())
    };
    // 10 records and, per rewritten segment, its last batch kept as a bare header.
    assert!(size * 5 < before, "{size} of {before} bytes left");
    assert_eq!(h.stored().len(), 10, "one record per key");
    // The next pass merges the small cleaned segments up to segment.bytes.
    h.append(&[(0, false)]);
    h.roll();
    let end = h.clean();
    h.check_cleaned(end);
    let merged = h.partition.lock().segment_count();
    assert!(
        merged * 2 < segments,
        "{segments} segments merged into {merged}"
    );
}

#[test]
fn keyless_records_are_refused_by_a_compacted_topic() {
    let h = Harness::new(4 << 20);
    let record = plain_record(0, START, None, Some(Bytes::from("v")), IndexMap::new());
    let bytes = encode_records(&[record]).expect("encode");
    let batches = batch::split_batches(&bytes).expect("split");
    let err = h.partition.append(&batches, START).expect_err("refused");
    assert!(err.to_string().contains("without a key"), "{err}");
}

#[test]
fn an_idempotent_producers_last_batch_survives_compaction_and_restart() {
    let mut h = Harness::new(4 << 20);
    // Producer 7 writes key lock-1 three times (sequences 0, 1, 2), then others overwrite it.
    let idempotent = |seq: i32, value: &str| {
        let mut record = plain_record(
            0,
            START,
            Some(Bytes::from("lock-1")),
            Some(Bytes::from(value.to_string())),
            IndexMap::new(),
        );
        record.producer_id = 7;
        record.producer_epoch = 0;
        record.sequence = seq;
        encode_records(&[record]).expect("encode")
    };
    let sent: Vec<Bytes> = (0..3).map(|s| idempotent(s, &format!("v{s}"))).collect();
    for bytes in &sent {
        let batches = batch::split_batches(bytes).expect("split");
        h.partition.append(&batches, h.now).expect("append");
        sync(&h.partition);
    }
    h.append(&[(1, false)]); // key lock-1 again, from a plain producer: supersedes all three
    h.roll();
    let end = h.clean();
    assert!(end > 3);
    // Producer 7's last batch stays as a bare header, so its sequence state survives a
    // restart: a retry of sequence 2 is still recognised and answered with its offset.
    h.reopen();
    let batches = batch::split_batches(&sent[2]).expect("split");
    let retry = h
        .partition
        .append(&batches, h.now)
        .expect("a retry is a duplicate");
    assert_eq!(
        (retry.base_offset, retry.records),
        (2, 0),
        "answered with the original offset, not written"
    );
    // And the next sequence is taken.
    let next = idempotent(3, "v3");
    let batches = batch::split_batches(&next).expect("split");
    h.partition
        .append(&batches, h.now)
        .expect("the next sequence");
}
