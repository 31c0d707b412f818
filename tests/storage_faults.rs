//! The disk misbehaving under a real tern process: fsyncs that fail (EIO) or crawl
//! (an SD card), through the LD_PRELOAD shim in tests/faults, and bytes changed on disk.
//! Regression tests for issue #17 items A2, A4, A5 and B11.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};

const KAFKA_STORAGE_ERROR: i16 = 56;

/// A2: one failed fdatasync while four producers write. Before the fix a producer whose
/// records were cut away with the unsynced tail could still be told "success" at offsets
/// that later held another producer's records. Now every acknowledged record is at the
/// offset it was acknowledged with, the failure fences the partition, and it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_failed_fsync_no_lost_write_is_ever_acknowledged() {
    let control = tempfile::NamedTempFile::new().expect("control file");
    // A short group-commit linger, as on an SD card: appends gather while a sync waits.
    let tern = Tern::start_with_env(
        "[storage]\nflush_linger_ms = 20\n",
        fault_env(control.path()),
    );
    let mut admin = tern.client().await;
    assert_eq!(
        create_topic(&mut admin, "t", 1, &[("compression.type", "producer")]).await,
        0
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..4 {
        let kafka = tern.kafka.clone();
        let stop = Arc::clone(&stop);
        producers.push(tokio::spawn(async move {
            let mut client = tern::client::KafkaClient::connect(&kafka)
                .await
                .expect("connect");
            let (mut acked, mut failed) = (Vec::new(), 0u32);
            // Four requests in flight per connection, as librdkafka pipelines them.
            let mut in_flight = std::collections::VecDeque::new();
            let mut n = 0;
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                if !stopping && in_flight.len() < 4 {
                    let prefix = format!("p{p}-{n}");
                    let request = produce_request("t", 0, batch(&prefix, 3), -1);
                    let id = client.submit(&request, 9).await.expect("write");
                    in_flight.push_back((id, prefix));
                    n += 1;
                    continue;
                }
                let Some((id, prefix)) = in_flight.pop_front() else {
                    break;
                };
                let response = client
                    .receive::<kafka_protocol::messages::ProduceRequest>(9, id)
                    .await
                    .expect("response");
                let r = &response.responses[0].partition_responses[0];
                match r.error_code {
                    0 => acked.push((r.base_offset, prefix)),
                    KAFKA_STORAGE_ERROR => failed += 1,
                    other => panic!("unexpected error {other}"),
                }
            }
            (acked, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Slow fsyncs, the first of them failing: appends land while it is in flight.
    std::fs::write(
        control.path(),
        "delay-ms 100 topics/t/0/\neio-once first topics/t/0/\n",
    )
    .expect("arm the fault");
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for p in producers {
        let (a, f) = p.await.expect("producer");
        acked.extend(a);
        failed += f;
    }
    let injected =
        std::fs::read_to_string(format!("{}.log", control.path().display())).unwrap_or_default();
    assert_eq!(
        injected.lines().count(),
        1,
        "exactly one fsync failed: {injected}"
    );
    assert!(
        failed >= 1,
        "the producers waiting on the failed fsync were told"
    );
    let stored: BTreeMap<i64, String> = fetch_values(&mut admin, "t", 0, 0)
        .await
        .into_iter()
        .collect();
    for (base, prefix) in &acked {
        for i in 0..3 {
            assert_eq!(
                stored.get(&(base + i)),
                Some(&format!("{prefix}-{i}")),
                "acknowledged record {prefix}-{i} is not at offset {}",
                base + i
            );
        }
    }
    assert!(
        acked.len() > 10,
        "the producers made progress: {}",
        acked.len()
    );
    assert!(
        tern.log().contains("partition fenced"),
        "the fencing is logged"
    );
    assert!(tern.metric("tern_fsync_errors_total") >= 1.0);
    // The partition was reopened and took writes again after the failure.
    let (code, _) = produce(&mut admin, "t", 0, batch("after", 1)).await;
    assert_eq!(code, 0, "appends resume once the partition is reopened");
}

/// A2 with a disk that keeps failing: every produce fails (nothing is acknowledged), and
/// once the disk works again the partition reopens by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistently_failing_disk_acknowledges_nothing_and_recovers_by_itself() {
    let control = tempfile::NamedTempFile::new().expect("control file");
    let tern = Tern::start_with_env("", fault_env(control.path()));
    let mut client = tern.client().await;
    assert_eq!(create_topic(&mut client, "t", 1, &[]).await, 0);
    assert_eq!(produce(&mut client, "t", 0, batch("before", 2)).await.0, 0);
    std::fs::write(control.path(), "eio topics/t/0/\n").expect("arm");
    for i in 0..5 {
        let (code, _) = produce(&mut client, "t", 0, batch(&format!("during{i}"), 2)).await;
        assert_eq!(code, KAFKA_STORAGE_ERROR, "produce {i} during the failure");
    }
    std::fs::write(control.path(), "").expect("disarm");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, base) = produce(&mut client, "t", 0, batch("after", 2)).await;
        if code == 0 {
            assert_eq!(
                base, 2,
                "nothing from the failure survived: offsets continue at 2"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partition did not come back:\n{}",
            tern.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let values: Vec<String> = fetch_values(&mut client, "t", 0, 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, vec!["before-0", "before-1", "after-0", "after-1"]);
}

fn commit(group: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

async fn committed(client: &mut tern::client::KafkaClient, group: &str) -> i64 {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![0])]));
    let (response, _) = client.send(&request, 1..=7).await.expect("OffsetFetch");
    response.topics[0].partitions[0].committed_offset
}

/// A5: an offset commit becomes visible to other connections only once it is durable, and
/// a commit whose fsync fails is never visible (before: visible 3.7 s before its ack, and
/// kept after a failed flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_is_visible_only_once_durable_and_never_if_its_fsync_fails() {
    let control = tempfile::NamedTempFile::new().expect("control file");
    let tern = Tern::start_with_env("", fault_env(control.path()));
    let mut admin = tern.client().await;
    assert_eq!(create_topic(&mut admin, "t", 1, &[]).await, 0);
    assert_eq!(produce(&mut admin, "t", 0, batch("r", 50)).await.0, 0);
    let (r, _) = admin.send(&commit("g", 10), 2..=8).await.expect("commit");
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    // A slow card: the offsets topic's fsync takes 3 s.
    std::fs::write(control.path(), "delay-ms 3000 __consumer_offsets\n").expect("arm");
    let mut committer = tern.client().await;
    let started = Instant::now();
    let pending = tokio::spawn(async move { committer.send(&commit("g", 20), 2..=8).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut reader = tern.client().await;
    assert_eq!(
        committed(&mut reader, "g").await,
        10,
        "not visible before it is durable"
    );
    let (r, _) = pending.await.expect("task").expect("commit");
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(2_500),
        "the commit waited for its fsync"
    );
    assert_eq!(
        committed(&mut reader, "g").await,
        20,
        "visible once durable"
    );

    // A failing card: the commit is refused and never becomes visible.
    std::fs::write(control.path(), "eio-once c1 __consumer_offsets\n").expect("arm");
    let (r, _) = admin.send(&commit("g", 30), 2..=8).await.expect("commit");
    assert_eq!(r.topics[0].partitions[0].error_code, KAFKA_STORAGE_ERROR);
    assert_eq!(
        committed(&mut reader, "g").await,
        20,
        "a failed commit is not visible"
    );
    std::fs::write(control.path(), "").expect("disarm");
    // After the offsets partition reopens, commits work again; the failed one never shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (r, _) = admin.send(&commit("g", 40), 2..=8).await.expect("commit");
        if r.topics[0].partitions[0].error_code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "commits did not recover:\n{}",
            tern.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut tern = tern;
    tern.restart();
    let mut reader = tern.client().await;
    assert_eq!(
        committed(&mut reader, "g").await,
        40,
        "the durable commit survives a restart"
    );
}

/// A4: bytes changed on disk after they were acknowledged. tern starts, never serves the
/// damaged batches (librdkafka's default consumer would print them unchecked), serves
/// everything else, and `tern check` reports the damage offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_sealed_segments_are_quarantined_and_tern_check_reports_them() {
    use std::os::unix::fs::FileExt;
    let mut tern = Tern::start("");
    let mut client = tern.client().await;
    let configs = [("segment.bytes", "4096"), ("compression.type", "producer")];
    assert_eq!(create_topic(&mut client, "t", 1, &configs).await, 0);
    for i in 0..80 {
        assert_eq!(
            produce(&mut client, "t", 0, batch(&format!("b{i:02}"), 10))
                .await
                .0,
            0
        );
    }
    tern.terminate();
    let dir = tern.data_dir().join("topics/t/0");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    let bytes = std::fs::read(&segments[0]).expect("segment");
    // Flip one byte inside the value "b01-5" of the second batch of the first segment.
    let needle = b"b01-5";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("value on disk");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .expect("open");
    f.write_all_at(b"X", at as u64).expect("flip");
    // Corrupt the first batch length of the second-newest segment.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[segments.len() - 2])
        .expect("open");
    f.write_all_at(&[0, 0, 0, 3], 8).expect("length");
    drop(f);

    let check = std::process::Command::new(tern_binary())
        .arg("check")
        .arg(tern.data_dir())
        .output()
        .expect("tern check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(1),
        "damage makes tern check fail:\n{report}"
    );
    assert_eq!(report.matches("DAMAGED").count(), 2, "{report}");

    tern.restart();
    let mut client = tern.client().await;
    let values = fetch_values(&mut client, "t", 0, 0).await;
    assert!(
        values
            .iter()
            .all(|(_, v)| !v.contains('X') && !v.starts_with("b01")),
        "a damaged batch was served"
    );
    assert!(
        values.iter().any(|(_, v)| v == "b79-9"),
        "records after the damage are served"
    );
    assert_eq!(tern.metric("tern_quarantined_ranges"), 2.0);
    assert!(tern.log().contains("damaged batch quarantined"));
}

/// B11: a CreateTopics that fsyncs many files on a slow disk does not stall the other
/// connections (before: 16.6 s of silence with 5 ms fsyncs and 1,024 partitions).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_create_topics_does_not_stall_other_connections() {
    let control = tempfile::NamedTempFile::new().expect("control file");
    std::fs::write(control.path(), "delay-ms 20 topics/big\n").expect("arm");
    let tern = Tern::start_with_env("", fault_env(control.path()));
    let mut other = tern.client().await;
    assert_eq!(create_topic(&mut other, "small", 1, &[]).await, 0);
    let kafka = tern.kafka.clone();
    let creating = tokio::spawn(async move {
        let mut admin = tern::client::KafkaClient::connect(&kafka)
            .await
            .expect("connect");
        let code = create_topic(&mut admin, "big", 200, &[]).await;
        (code, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (r, _) = other
        .send(&ApiVersionsRequest::default(), 0..=3)
        .await
        .expect("ApiVersions");
    assert_eq!(r.error_code, 0);
    let (code, _) = produce(&mut other, "small", 0, batch("x", 1)).await;
    assert_eq!(code, 0);
    let answered = Instant::now();
    let (code, created) = creating.await.expect("create");
    assert_eq!(code, 0);
    assert!(
        answered < created,
        "ApiVersions and Produce were answered while CreateTopics (≥ 200 × 20 ms of fsyncs) was still running"
    );
}
