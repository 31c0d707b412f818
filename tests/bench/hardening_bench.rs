//! Figures for the hardening issue (#17), against a real `tern serve` (this build):
//!
//! 1. a CreateTopics of 1,024 partitions on an emulated SD card (every fsync delayed
//!    5 ms by the tests/faults shim): produce latency (one 100-byte record per request,
//!    acks=all) and ApiVersions latency on other connections while it runs;
//! 2. peak RSS (VmHWM) across a snappy and a gzip decompression bomb;
//! 3. group state: memory per group with one member, and what 50,000 abandoned group ids
//!    leave behind (RSS, idle CPU);
//! 4. peak RSS while 4 connections pipeline 16 fetches of a 200 MB log without reading.
//!
//!     cargo bench --bench hardening
//!
//! Figures are printed, never asserted: record them in docs/BENCHMARKS.md.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use tern::client::KafkaClient;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds tern has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn create_topics_on_a_slow_disk() {
    let control = tempfile::NamedTempFile::new().expect("control");
    std::fs::write(control.path(), "delay-ms 5 *\n").expect("arm");
    let tern = Tern::start_with_env("", fault_env(control.path()));
    let mut producer = tern.client().await;
    assert_eq!(create_topic(&mut producer, "live", 1, &[]).await, 0);
    let kafka = tern.kafka.clone();
    let started = Instant::now();
    let create = tokio::spawn(async move {
        let mut admin = KafkaClient::connect(&kafka).await.expect("connect");
        let code = create_topic(&mut admin, "big", 1024, &[]).await;
        (code, Instant::now())
    });
    let kafka = tern.kafka.clone();
    let pings = tokio::spawn(async move {
        let mut c = KafkaClient::connect(&kafka).await.expect("connect");
        let mut latencies = Vec::new();
        for _ in 0..4000 {
            let t = Instant::now();
            c.send(&ApiVersionsRequest::default(), 0..=3)
                .await
                .expect("ApiVersions");
            latencies.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
            if create_done() {
                break;
            }
        }
        latencies
    });
    let mut produce = Vec::new();
    while !create.is_finished() {
        let t = Instant::now();
        let (code, _) = produce_one(&mut producer).await;
        assert_eq!(code, 0);
        produce.push(t.elapsed());
    }
    let (code, done) = create.await.expect("create");
    CREATE_DONE.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pings = pings.await.expect("pings");
    assert_eq!(code, 0);
    produce.sort();
    pings.sort();
    println!(
        "CreateTopics 1,024 partitions with 5 ms fsyncs: {:.1} s; meanwhile produce (1 record, acks=all) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} requests; ApiVersions p99 {:.1} ms, max {:.1} ms over {}",
        (done - started).as_secs_f64(),
        ms(percentile(&produce, 0.5)),
        ms(percentile(&produce, 0.99)),
        ms(*produce.last().unwrap_or(&Duration::ZERO)),
        produce.len(),
        ms(percentile(&pings, 0.99)),
        ms(*pings.last().unwrap_or(&Duration::ZERO)),
        pings.len()
    );
}

static CREATE_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
fn create_done() -> bool {
    CREATE_DONE.load(std::sync::atomic::Ordering::Relaxed)
}

async fn produce_one(client: &mut KafkaClient) -> (i16, i64) {
    produce(client, "live", 0, single_record_batch(vec![b'x'; 100])).await
}

async fn bombs() {
    let tern = Tern::start("");
    let mut c = tern.client().await;
    assert_eq!(create_topic(&mut c, "bombs", 1, &[]).await, 0);
    let before = status_kib(tern.pid(), "VmHWM:");
    let zeros = vec![0u8; 1 << 30];
    let gzip = tern::log::codec::compress(tern::log::batch::Codec::Gzip, &zeros).expect("gzip");
    drop(zeros);
    let snappy = batch_with_section(2, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00], 1);
    let gzip = batch_with_section(1, &gzip, 1_000_000);
    let gzip_len = gzip.len();
    let codes = [
        produce(&mut c, "bombs", 0, snappy).await.0,
        produce(&mut c, "bombs", 0, gzip).await.0,
    ];
    let after = status_kib(tern.pid(), "VmHWM:");
    println!(
        "decompression bombs (89-byte snappy announcing 4 GiB; {gzip_len}-byte gzip of 1 GiB): answered {codes:?} (87 = INVALID_RECORD); peak RSS {:.1} → {:.1} MiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
}

fn join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\x01\0\x01t\0\0\0\0"))])
}

async fn groups() {
    let tern = Tern::start("[groups]\ninitial_rebalance_delay_ms = 0\n");
    let mut c = tern.client().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = status_kib(tern.pid(), "VmRSS:");
    // 5,000 groups of one member each (join with MEMBER_ID_REQUIRED, join, sync).
    let n = 5_000;
    for i in 0..n {
        let group = format!("member-{i}");
        let (r, _) = c.send(&join(&group, ""), 4..=7).await.expect("join");
        let id = r.member_id.to_string();
        let (r, _) = c.send(&join(&group, &id), 4..=7).await.expect("join");
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(r.generation_id)
            .with_member_id(s(&id))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&id))
                .with_assignment(Bytes::from_static(b"\0\0\0\0\0\0\0\0\0\0"))]);
        c.send(&sync, 0..=5).await.expect("sync");
    }
    let with_members = status_kib(tern.pid(), "VmRSS:");
    println!(
        "groups: {n} groups with one member each: RSS {:.1} → {:.1} MiB = {:.0} bytes per group",
        base as f64 / 1024.0,
        with_members as f64 / 1024.0,
        (with_members.saturating_sub(base) * 1024) as f64 / n as f64
    );
    // 50,000 distinct ids that join and leave again.
    let before = status_kib(tern.pid(), "VmRSS:");
    for i in 0..50_000 {
        let group = format!("flood-{i}");
        let (r, _) = c.send(&join(&group, ""), 4..=7).await.expect("join");
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_member_id(r.member_id);
        c.send(&leave, 0..=2).await.expect("leave");
    }
    let after = status_kib(tern.pid(), "VmRSS:");
    let cpu0 = cpu_seconds(tern.pid());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (cpu_seconds(tern.pid()) - cpu0) / 10.0 * 100.0;
    println!(
        "groups: 50,000 group ids joined and left: RSS {:.1} → {:.1} MiB; idle CPU afterwards {idle_cpu:.1} % (with the 5,000 one-member groups still alive)",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
}

async fn pipelined_fetches() {
    let tern = Tern::start("");
    let mut c = tern.client().await;
    assert_eq!(
        create_topic(&mut c, "big", 1, &[("compression.type", "producer")]).await,
        0
    );
    let chunk = incompressible(1_000_000);
    for _ in 0..200 {
        let records = single_record_batch(chunk.clone());
        assert_eq!(produce(&mut c, "big", 0, records).await.0, 0);
    }
    let before = status_kib(tern.pid(), "VmHWM:");
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut r = tern.client().await;
        let mut ids = Vec::new();
        for _ in 0..16 {
            ids.push(
                r.submit(&fetch_request("big", 0, 0, 50 << 20), 11)
                    .await
                    .expect("write"),
            );
        }
        readers.push((r, ids));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let peak = status_kib(tern.pid(), "VmHWM:");
    for (mut r, ids) in readers {
        for id in ids {
            r.receive::<FetchRequest>(11, id).await.expect("fetch");
        }
    }
    let after_reading = status_kib(tern.pid(), "VmHWM:");
    println!(
        "pipelined fetches: 4 connections x 16 fetches of a 200 MB log, unread for 5 s: peak RSS {:.1} → {:.1} MiB (budget kafka.max_queued_response_bytes = 64 MiB); {:.1} MiB peak once all were read",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        after_reading as f64 / 1024.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    println!(
        "hardening benchmarks — tern {} ({} cores)",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if run("create") {
        create_topics_on_a_slow_disk().await;
    }
    if run("bomb") {
        bombs().await;
    }
    if run("groups") {
        groups().await;
    }
    if run("fetch") {
        pipelined_fetches().await;
    }
}
