//! Tests of the partition log against a trivially correct model: the list of batches
//! that were appended, with crash points (torn and zero-filled tails) in between.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use proptest::prelude::*;

use super::batch::{self, tests::make_batch, BatchHeader};
use super::partition::Log;
use super::{CompressionPolicy, LogConfig};

const NOW: i64 = 1_767_225_600_000;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

/// Appends one client batch and makes it durable, as an acknowledged produce would be.
fn append_durable(log: &mut Log, records: usize, payload: &[u8]) -> (i64, i64) {
    let bytes = make_batch(records, payload);
    let batches = batch::split_batches(&bytes).expect("valid batch");
    let info = log.append(&batches, NOW).expect("append");
    let target = log.sync_target();
    target.run().expect("fsync");
    assert!(log.complete_sync(&target));
    (info.base_offset, info.last_offset)
}

/// Every stored batch, read through the public read path from the log start.
fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let read = log.read(offset, 1 << 20).expect("read");
        assert!(
            !read.bytes.is_empty(),
            "no data at {offset} below the high watermark"
        );
        let mut rest = &read.bytes[..];
        while !rest.is_empty() {
            let header =
                batch::validate(&rest[..BatchHeader::parse(rest).expect("header").total_len()])
                    .expect("served batches are valid");
            out.push(rest[..header.total_len()].to_vec());
            offset = header.next_offset();
            rest = &rest[header.total_len()..];
        }
    }
    out
}

fn active_segment(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

#[test]
fn append_read_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    assert_eq!(append_durable(&mut log, 3, b"a"), (0, 2));
    assert_eq!(append_durable(&mut log, 2, b"b"), (3, 4));
    let before = read_all(&log);
    // A fetch in the middle of a batch returns the whole batch.
    let mid = log.read(1, 1 << 20).expect("read");
    assert_eq!(
        BatchHeader::parse(&mid.bytes).expect("header").base_offset,
        0
    );
    drop(log);
    let (log, report) = Log::open(dir.path(), config(1 << 20), NOW).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(read_all(&log), before);
}

#[test]
fn uncompressed_batches_are_stored_lz4_and_producer_policy_keeps_them() {
    let payload = br#"{"device":"sensor-1","temp_c":21.5,"humidity":40}"#;
    for (policy, expect_lz4) in [
        (CompressionPolicy::Lz4, true),
        (CompressionPolicy::Producer, false),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            compression: policy,
            ..config(1 << 20)
        };
        let (mut log, _) = Log::open(dir.path(), cfg, NOW).expect("open");
        append_durable(&mut log, 100, payload);
        let stored = read_all(&log);
        let header = BatchHeader::parse(&stored[0]).expect("header");
        assert_eq!(header.codec() == batch::Codec::Lz4, expect_lz4);
        let records = super::records::decode(&stored[0]).expect("decodes");
        assert_eq!(records.len(), 100);
        assert_eq!(records[99].value.as_deref(), Some(&payload[..]));
        assert_eq!(records[99].offset, 99);
    }
}

#[test]
fn segments_roll_and_retention_by_bytes_moves_the_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        retention_bytes: 8 * 1024,
        compression: CompressionPolicy::Producer,
        ..config(4 * 1024)
    };
    let (mut log, _) = Log::open(dir.path(), cfg, NOW).expect("open");
    for _ in 0..40 {
        append_durable(&mut log, 4, &[7u8; 200]);
    }
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    let report = log.apply_retention(NOW).expect("retention");
    assert!(report.deleted_segments > 0);
    assert!(log.size_bytes() <= 8 * 1024 + 4 * 1024);
    assert!(log.log_start_offset() > 0);
    assert_eq!(log.log_end_offset(), 160);
    // Reading below the log start is out of range; reading from it works.
    assert!(log.read(0, 1024).is_err());
    assert!(!read_all(&log).is_empty());
    let start = log.log_start_offset();
    drop(log);
    let (log, _) = Log::open(dir.path(), config(4 * 1024), NOW).expect("reopen");
    assert_eq!(
        log.log_start_offset(),
        start,
        "log start survives a restart"
    );
}

#[test]
fn retention_by_time_spares_recent_data_and_ignores_an_implausible_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        retention_ms: 1000,
        ..config(2 * 1024)
    };
    let (mut log, _) = Log::open(dir.path(), cfg, NOW).expect("open");
    for _ in 0..20 {
        append_durable(&mut log, 4, &[1u8; 300]);
    }
    let segments = log.segment_count();
    // A Pi that booted in 1970: nothing may be deleted.
    assert_eq!(
        log.apply_retention(5_000)
            .expect("retention")
            .deleted_segments,
        0
    );
    // Records are stamped 2026-01-01 (+i ms): one second later they are still young.
    assert_eq!(
        log.apply_retention(NOW + 500)
            .expect("retention")
            .deleted_segments,
        0
    );
    // A day later every sealed segment has expired; the active one stays.
    let report = log.apply_retention(NOW + 86_400_000).expect("retention");
    assert_eq!(report.deleted_segments as usize, segments - 1);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn delete_records_moves_the_start_and_never_past_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    append_durable(&mut log, 10, b"x");
    // Only -1 means "to the high watermark": -1001 deleted everything before (issue #17).
    assert!(matches!(
        log.delete_records_before(-1001),
        Err(super::LogError::OffsetOutOfRange { offset: -1001, .. })
    ));
    assert_eq!(log.log_start_offset(), 0, "nothing deleted");
    assert_eq!(log.delete_records_before(4).expect("delete"), 4);
    assert!(log.delete_records_before(11).is_err());
    assert_eq!(log.delete_records_before(-1).expect("to hw"), 10);
}

#[test]
fn damage_in_a_sealed_segment_is_quarantined_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        compression: CompressionPolicy::Producer,
        ..config(2 * 1024)
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone(), NOW).expect("open");
    for _ in 0..12 {
        append_durable(&mut log, 2, &[3u8; 300]);
    }
    assert!(log.segment_count() >= 3);
    let end = log.log_end_offset();
    drop(log);
    // Remove the recovery point so that every segment is scanned, then damage the first.
    std::fs::remove_file(dir.path().join("recovery-point")).expect("remove checkpoint");
    let first = dir.path().join(format!("{:020}.log", 0));
    let file = OpenOptions::new()
        .write(true)
        .open(&first)
        .expect("open segment");
    file.write_all_at(&[0xff; 8], 700).expect("damage");
    let (log, report) = Log::open(dir.path(), cfg, NOW).expect("reopen");
    assert_eq!(report.quarantined, 1, "{report:?}");
    assert_eq!(report.truncated_bytes, 0, "a sealed segment is never cut");
    assert_eq!(log.log_end_offset(), end, "later segments are kept");
    assert_eq!(
        read_all(&log).len(),
        12 - 1,
        "only the damaged batch is missing"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Truncating or zero-filling the active segment anywhere leaves exactly the batches
    /// that lie wholly before the damage, and appends continue right after them.
    #[test]
    fn recovery_keeps_the_longest_valid_prefix(
        sizes in prop::collection::vec((1usize..6, 1usize..400), 1..25),
        cut in 0.0f64..1.0,
        zero_fill in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig { compression: CompressionPolicy::Producer, ..config(1 << 20) };
        let (mut log, _) = Log::open(dir.path(), cfg.clone(), NOW).expect("open");
        for (records, payload) in &sizes {
            append_durable(&mut log, *records, &vec![b'p'; *payload]);
        }
        let batches = read_all(&log);
        drop(log);

        let path = active_segment(dir.path());
        let len = std::fs::metadata(&path).expect("stat").len();
        let at = ((len as f64) * cut) as u64;
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        if zero_fill {
            file.write_all_at(&vec![0u8; (len - at) as usize], at).expect("zero fill");
        } else {
            file.set_len(at).expect("truncate");
        }
        drop(file);
        // A crash never wrote a recovery point past the active segment.
        let _ = std::fs::remove_file(dir.path().join("recovery-point"));

        let mut kept = Vec::new();
        let mut position = 0u64;
        for b in &batches {
            if position + b.len() as u64 <= at {
                kept.push(b.clone());
            }
            position += b.len() as u64;
        }
        let expected_end = kept
            .last()
            .map(|b| BatchHeader::parse(b).expect("header").next_offset())
            .unwrap_or(0);

        let (mut log, _) = Log::open(dir.path(), cfg, NOW).expect("reopen");
        prop_assert_eq!(log.log_end_offset(), expected_end);
        prop_assert_eq!(log.high_watermark(), expected_end);
        prop_assert_eq!(read_all(&log), kept);
        let (base, _) = append_durable(&mut log, 1, b"after");
        prop_assert_eq!(base, expected_end, "appends continue after the valid prefix");
    }
}

/// A client batch as an idempotent producer would send it.
fn idempotent_batch(records: usize, producer_id: i64, epoch: i16, first_seq: i32) -> Vec<u8> {
    let mut bytes = make_batch(records, b"idem");
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
    bytes[53..57].copy_from_slice(&first_seq.to_be_bytes());
    let crc = batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn append_raw(log: &mut Log, bytes: &[u8]) -> Result<super::AppendInfo, super::LogError> {
    let batches = batch::split_batches(bytes).expect("valid batch");
    let info = log.append(&batches, NOW)?;
    let target = log.sync_target();
    target.run().expect("fsync");
    assert!(log.complete_sync(&target));
    Ok(info)
}

#[test]
fn idempotent_producer_retries_are_deduplicated_even_after_a_restart() {
    use super::producer_state::SequenceError;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    let a = idempotent_batch(3, 7, 0, 0);
    let first = append_raw(&mut log, &a).expect("append");
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    let retry = append_raw(&mut log, &a).expect("a retry succeeds");
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.stored_bytes),
        (0, 2, 0)
    );
    assert_eq!(log.log_end_offset(), 3, "nothing written twice");
    let b = idempotent_batch(2, 7, 0, 3);
    assert_eq!(append_raw(&mut log, &b).expect("next").base_offset, 3);
    let gap = append_raw(&mut log, &idempotent_batch(1, 7, 0, 10));
    assert!(matches!(
        gap,
        Err(super::LogError::Sequence(SequenceError::OutOfOrder {
            expected: 5,
            ..
        }))
    ));
    // Another producer is independent; an unknown producer may start anywhere.
    assert_eq!(
        append_raw(&mut log, &idempotent_batch(1, 8, 0, 42))
            .expect("other")
            .base_offset,
        5
    );

    drop(log);
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("reopen");
    let retry = append_raw(&mut log, &b).expect("retry after restart");
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (3, 4),
        "state rebuilt from the log"
    );
    assert_eq!(log.log_end_offset(), 6);
    // A new epoch starts over; the old epoch is fenced.
    assert_eq!(
        append_raw(&mut log, &idempotent_batch(1, 7, 1, 0))
            .expect("epoch 1")
            .base_offset,
        6
    );
    let old = append_raw(&mut log, &idempotent_batch(1, 7, 0, 5));
    assert!(matches!(
        old,
        Err(super::LogError::Sequence(SequenceError::Fenced { .. }))
    ));
}

#[test]
fn a_failed_sync_fences_the_log_and_no_earlier_waiter_is_ever_told_durable() {
    use super::partition::Partition;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    append_durable(&mut log, 3, b"acked");
    let lost = make_batch(5, b"lost");
    let a = log
        .append(&batch::split_batches(&lost).expect("batch"), NOW)
        .expect("append");
    let stale = log.sync_target();
    log.fail_sync("EIO (injected)");
    assert_eq!(log.log_end_offset(), 3, "the unsynced tail is cut back");
    assert!(!log.is_durable(a.last_offset + 1, a.generation));
    assert!(
        !log.complete_sync(&stale),
        "a sync from before the failure proves nothing"
    );
    let refused = log.append(&batch::split_batches(&lost).expect("batch"), NOW);
    assert!(
        matches!(refused, Err(super::LogError::Fenced(_))),
        "{refused:?}"
    );

    let partition = Partition::new("t", 0, log);
    assert!(partition.reopen_if_fenced(NOW).expect("reopen"));
    let other = make_batch(5, b"other");
    let b = partition
        .append(&batch::split_batches(&other).expect("batch"), NOW)
        .expect("appends resume after the reopen");
    assert_eq!(
        b.base_offset, a.base_offset,
        "the same offsets are written again"
    );
    let mut log = partition.lock();
    let target = log.sync_target();
    target.run().expect("fsync");
    assert!(log.complete_sync(&target));
    assert!(log.is_durable(b.last_offset + 1, b.generation));
    assert!(
        !log.is_durable(a.last_offset + 1, a.generation),
        "offsets reused by another write never acknowledge the lost one"
    );
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn a_roll_seals_the_old_segment_at_the_next_sync_and_moves_the_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    append_durable(&mut log, 3, b"a");
    log.roll(NOW).expect("roll");
    assert!(
        log.needs_sync(0),
        "the sealed segment and the new file await a sync"
    );
    let target = log.sync_target();
    assert!(target.dir.is_some() && target.recovery_point == Some(3));
    target.run().expect("sync");
    assert!(log.complete_sync(&target));
    assert!(!log.needs_sync(3));
    assert_eq!(
        super::checkpoint::read(dir.path(), "recovery-point"),
        Some(3)
    );
}

/// A batch whose records section is `section`, compressed with `codec`, with a valid CRC.
fn batch_with_section(codec: batch::Codec, section: &[u8], records: i32) -> Vec<u8> {
    let mut bytes = make_batch(1, b"x")[..batch::HEADER_LEN].to_vec();
    bytes.extend_from_slice(section);
    let length = (bytes.len() - batch::LOG_OVERHEAD) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    bytes[21..23].copy_from_slice(&codec.attribute_bits().to_be_bytes());
    bytes[23..27].copy_from_slice(&(records - 1).to_be_bytes());
    bytes[57..61].copy_from_slice(&records.to_be_bytes());
    let crc = batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn decompression_bombs_are_refused_at_produce_without_allocating() {
    use super::codec;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    // 89-byte-class snappy batch announcing 4 GiB.
    let snappy = batch_with_section(batch::Codec::Snappy, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0], 1);
    // gzip of 64 MiB of zeros: ~65 KB on the wire.
    let zeros = vec![0u8; 64 << 20];
    let gzip = batch_with_section(
        batch::Codec::Gzip,
        &codec::compress(batch::Codec::Gzip, &zeros).expect("gzip"),
        1_000_000,
    );
    for bomb in [snappy, gzip] {
        let batches = batch::split_batches(&bomb).expect("header and CRC are fine");
        let err = log.append(&batches, NOW).expect_err("a bomb is refused");
        assert!(matches!(err, super::LogError::InvalidRecords(_)), "{err}");
    }
    assert_eq!(log.log_end_offset(), 0, "nothing stored");
}

#[test]
fn every_kafka_codec_is_a_compression_type_and_batches_are_recompressed() {
    for codec in [
        batch::Codec::None,
        batch::Codec::Gzip,
        batch::Codec::Snappy,
        batch::Codec::Lz4,
        batch::Codec::Zstd,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            compression: CompressionPolicy::Exactly(codec),
            ..config(1 << 20)
        };
        let (mut log, _) = Log::open(dir.path(), cfg, NOW).expect("open");
        // One batch arrives uncompressed, one gzip-compressed by its producer.
        append_durable(&mut log, 20, b"plain payload plain payload");
        let gz = batch::recompress(&make_batch(20, b"gz"), batch::Codec::Gzip, 1 << 20)
            .expect("gzip batch");
        append_raw(&mut log, &gz).expect("append gzip");
        for stored in read_all(&log) {
            let header = BatchHeader::parse(&stored).expect("header");
            assert_eq!(header.codec(), codec, "stored in the topic's codec");
            let records = super::records::decode(&stored).expect("decodes");
            assert_eq!(records.len(), 20);
        }
    }
}

/// Positions of the batches in a segment file.
fn batch_positions(path: &Path) -> Vec<(u64, BatchHeader)> {
    let bytes = std::fs::read(path).expect("segment");
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let header = BatchHeader::parse(&bytes[at..]).expect("header");
        out.push((at as u64, header));
        at += header.total_len();
    }
    out
}

#[test]
fn damage_in_sealed_segments_is_never_served_and_never_stops_the_log() {
    use super::partition::Partition;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        compression: CompressionPolicy::Producer,
        ..config(2 * 1024)
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone(), NOW).expect("open");
    for i in 0..12u8 {
        append_durable(&mut log, 2, &[b'a' + i; 300]);
    }
    log.close().expect("close");
    let segments = log.segment_count();
    assert!(segments >= 4, "{segments} segments");
    drop(log);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    // 1. One flipped byte in a record value of the first (sealed, trusted) segment.
    let first = batch_positions(&files[0]);
    let victim = first[1].0 + 100;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&files[0])
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, victim).expect("read");
    f.write_all_at(&[b[0] ^ 0x20], victim).expect("flip");
    // 2. A corrupted batch length in the second-newest segment.
    let second_newest = &files[files.len() - 2];
    let positions = batch_positions(second_newest);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(second_newest)
        .expect("open");
    f.write_all_at(&[0, 0, 0, 7], positions[0].0 + 8)
        .expect("length");
    drop(f);

    let (log, _) = Log::open(dir.path(), cfg, NOW).expect("the log always opens");
    let end = log.log_end_offset();
    let partition = Partition::new("t", 0, log);
    let mut served = Vec::new();
    let mut offset = 0;
    while offset < end {
        let read = partition
            .read(offset, 1 << 20)
            .expect("reads go on past damage");
        if read.bytes.is_empty() {
            break;
        }
        let mut rest = &read.bytes[..];
        while !rest.is_empty() {
            let header = batch::validate(&rest[..BatchHeader::parse(rest).expect("h").total_len()])
                .expect("every served batch passes its CRC");
            served.push(header.base_offset);
            offset = header.next_offset();
            rest = &rest[header.total_len()..];
        }
    }
    assert_eq!(
        partition.lock().quarantined(),
        2,
        "two damaged ranges quarantined"
    );
    assert!(
        !served.contains(&first[1].1.base_offset),
        "the flipped batch is never served"
    );
    assert_eq!(offset, end, "everything after the damage is still served");
    assert_eq!(served.len(), 12 - 2);
}

/// Re-stamps a client batch at `base` (and its CRC), as the source log stored it.
fn batch_at(base: i64, records: usize, payload: &[u8]) -> Vec<u8> {
    let mut bytes = make_batch(records, payload);
    batch::set_base_offset(&mut bytes, base);
    bytes
}

fn mirror(log: &mut Log, bytes: &[u8]) -> super::partition::MirroredAppend {
    let batches = batch::split_batches(bytes).expect("valid batches");
    let prepared = super::partition::prepare_mirrored(&batches, log.config()).expect("prepare");
    let outcome = log
        .append_mirrored(&prepared, NOW)
        .expect("mirrored append");
    let target = log.sync_target();
    target.run().expect("fsync");
    assert!(log.complete_sync(&target));
    outcome
}

#[test]
fn mirrored_batches_keep_their_offsets_skip_duplicates_and_jump_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    let first = [batch_at(0, 3, b"a"), batch_at(3, 2, b"b")].concat();
    let outcome = mirror(&mut log, &first);
    assert_eq!(
        (outcome.batches, outcome.records, outcome.log_end),
        (2, 5, 5)
    );
    // A resend of what is stored, plus one new batch: the stored ones are skipped.
    let resend = [batch_at(3, 2, b"b"), batch_at(5, 1, b"c")].concat();
    let outcome = mirror(&mut log, &resend);
    assert_eq!(
        (outcome.duplicates, outcome.batches, outcome.log_end),
        (1, 1, 6)
    );
    assert!(outcome.gaps.is_empty());
    // The source lost 6..10: the log jumps, keeps what it had, and serves across the gap.
    let outcome = mirror(&mut log, &batch_at(10, 2, b"d"));
    assert_eq!(outcome.gaps, vec![(6, 10)]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 12));
    let stored = read_all(&log);
    assert_eq!(stored.len(), 4);
    assert_eq!(
        stored[3],
        batch_at(10, 2, b"d"),
        "bytes are stored as they came"
    );
    let in_gap = log.read(7, 1 << 20).expect("read inside the gap");
    assert_eq!(
        BatchHeader::parse(&in_gap.bytes)
            .expect("header")
            .base_offset,
        10
    );
    // A batch that straddles the end means the logs disagree: refused, nothing written.
    let straddling = batch_at(11, 3, b"e");
    let batches = batch::split_batches(&straddling).expect("valid");
    let prepared = super::partition::prepare_mirrored(&batches, log.config()).expect("prepare");
    assert!(matches!(
        log.append_mirrored(&prepared, NOW),
        Err(super::LogError::MirrorOverlap { end: 12, .. })
    ));
    // All of it survives a reopen.
    drop(log);
    let (log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 12));
    assert_eq!(read_all(&log), stored);
}

#[test]
fn a_mirror_into_an_empty_log_starts_where_the_source_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    let outcome = mirror(&mut log, &batch_at(500, 4, b"x"));
    assert_eq!(outcome.gaps, vec![(0, 500)]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 504));
    drop(log);
    let (log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 504));
    assert_eq!(read_all(&log), vec![batch_at(500, 4, b"x")]);
}

#[test]
fn durable_bytes_from_counts_what_a_reader_still_has_to_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(300), NOW).expect("open");
    let mut sizes = Vec::new();
    for i in 0..6 {
        let before = log.size_bytes();
        append_durable(&mut log, 2, &[b'a' + i as u8; 40]);
        sizes.push(log.size_bytes() - before);
    }
    assert!(log.segment_count() > 1, "the test needs several segments");
    let total: u64 = sizes.iter().sum();
    assert_eq!(log.durable_bytes_from(0).expect("from 0"), total);
    // From the middle of the third batch: that batch and everything after it.
    assert_eq!(
        log.durable_bytes_from(5).expect("from 5"),
        total - sizes[0] - sizes[1]
    );
    assert_eq!(log.durable_bytes_from(12).expect("at the end"), 0);
}

#[test]
fn several_batches_of_one_idempotent_producer_in_one_request_are_in_order() {
    // A producer (the Kafka sink) sends two batches of one partition in one request:
    // the second follows the first, not the log's last batch.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(1 << 20), NOW).expect("open");
    append_raw(&mut log, &idempotent_batch(2, 9, 0, 0)).expect("first request");
    let mut request = idempotent_batch(3, 9, 0, 2);
    request.extend(idempotent_batch(4, 9, 0, 5));
    let info = append_raw(&mut log, &request).expect("two batches in order");
    assert_eq!((info.base_offset, info.last_offset), (2, 8));
    // Its retry is a duplicate as a whole, answered with the same offsets.
    let retry = append_raw(&mut log, &request).expect("the retry");
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.records),
        (2, 8, 0)
    );
    assert_eq!(log.log_end_offset(), 9);
    // Within one request, a gap is still refused.
    let mut gap = idempotent_batch(1, 9, 0, 9);
    gap.extend(idempotent_batch(1, 9, 0, 11));
    assert!(append_raw(&mut log, &gap).is_err());
    assert_eq!(
        log.log_end_offset(),
        9,
        "nothing of a refused request is written"
    );
}

/// The batch-header walk (producer state at start, timestamp lookups) reads small batches'
/// headers a chunk at a time and large ones' alone: it finds every batch either way.
#[test]
fn the_header_walk_finds_every_batch_of_mixed_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(64 << 20), NOW).expect("open");
    let mut expected = Vec::new();
    for i in 0..300usize {
        let payload = vec![
            b'p';
            if i % 50 < 3 {
                40_000
            } else {
                50 + i * 13 % 700
            }
        ];
        expected.push(append_durable(&mut log, 1 + i % 4, &payload).0);
    }
    let active = log.active();
    let found: Vec<i64> = active
        .headers_from(0, active.size())
        .expect("walk")
        .into_iter()
        .map(|(_, h)| h.base_offset)
        .collect();
    assert_eq!(found, expected);
    // From the middle, up to a limit inside the segment.
    let headers = active.headers_from(0, active.size()).expect("walk");
    let (from, _) = headers[100];
    let (limit, _) = headers[200];
    let part = active.headers_from(from, limit).expect("walk");
    assert_eq!(part.len(), 100);
    assert_eq!(part[0].1.base_offset, expected[100]);
}

/// After a clean shutdown the next start trusts the synced active segment (no scan), once:
/// the marker is gone after that start, so a crash later is recovered by a scan again.
#[test]
fn a_clean_shutdown_spares_the_next_start_the_active_segment_scan_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || config(64 << 20);
    let (mut log, _) = Log::open(dir.path(), cfg(), NOW).expect("open");
    for i in 0..50 {
        append_durable(&mut log, 3, format!("value-{i}").as_bytes());
    }
    let before = read_all(&log);
    log.close().expect("close");
    drop(log);
    assert!(dir.path().join("clean-shutdown").exists());

    let (mut log, report) = Log::open(dir.path(), cfg(), NOW).expect("reopen");
    assert_eq!(report.scanned_segments, 0, "{report:?}");
    assert!(!dir.path().join("clean-shutdown").exists());
    assert_eq!(read_all(&log), before);
    let read = log.read(77, 1 << 20).expect("read");
    assert_eq!(read.bytes[..before[25].len()], before[25][..]);
    // Appends continue where the log ended, and are indexed.
    assert_eq!(append_durable(&mut log, 2, b"after"), (150, 151));
    drop(log); // a crash: no close

    let (log, report) = Log::open(dir.path(), cfg(), NOW).expect("reopen after crash");
    assert_eq!(report.scanned_segments, 1, "{report:?}");
    assert_eq!(log.log_end_offset(), 152);
    assert_eq!(read_all(&log)[..50], before[..]);
}

/// A marker does not make a damaged tail trusted: bytes appended after the clean shutdown
/// that do not form whole batches send the start back to a full scan, which cuts them.
#[test]
fn a_clean_shutdown_marker_with_a_torn_tail_falls_back_to_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), config(64 << 20), NOW).expect("open");
    for _ in 0..10 {
        append_durable(&mut log, 2, b"kept");
    }
    log.close().expect("close");
    drop(log);
    let segment = active_segment(dir.path());
    let file = OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment");
    let len = file.metadata().expect("stat").len();
    file.write_all_at(&[0xab; 40], len).expect("garbage");
    let (log, report) = Log::open(dir.path(), config(64 << 20), NOW).expect("reopen");
    assert_eq!(report.scanned_segments, 1, "{report:?}");
    assert_eq!(report.truncated_bytes, 40);
    assert_eq!(log.log_end_offset(), 20);
}
