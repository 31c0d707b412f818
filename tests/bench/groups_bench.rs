//! Consumer-group benchmarks against a real `tern serve` process (target/release/tern):
//!
//! 1. offset commit rate: many connections commit in a loop; prints commits/s and the
//!    offset-store fsyncs per 10 ms (from tern's own /metrics counters);
//! 2. settle time: a 10-member group, then an 11th member joins; prints the time until
//!    every member holds its new assignment, with heartbeats every 100 ms;
//! 3. coordinator memory per idle member: RSS growth of tern over N idle members.
//!
//!     cargo build --release && cargo bench --bench groups
//!
//! Figures are printed, never asserted: record them in docs/BENCHMARKS.md.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tern::cli::cluster::Cluster;
use tern::client::KafkaClient;

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;

struct TernProcess {
    child: Child,
    bootstrap: String,
    http: String,
    _dir: tempfile::TempDir,
}

impl Drop for TernProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_tern(extra: &str) -> Result<TernProcess> {
    let binary = std::env::var("TERN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/tern"));
    if !binary.exists() {
        bail!(
            "{} not found: run cargo build --release first",
            binary.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let (kafka, http) = (free_port()?, free_port()?);
    let config = format!(
        "[broker]\ndata_dir = \"{}\"\n[kafka]\nlisten = \"127.0.0.1:{kafka}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n{extra}",
        dir.path().join("data").display()
    );
    let config_path = dir.path().join("tern.toml");
    std::fs::write(&config_path, config)?;
    let child = Command::new(&binary)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let process = TernProcess {
        child,
        bootstrap: format!("127.0.0.1:{kafka}"),
        http: format!("127.0.0.1:{http}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&process.bootstrap).is_err() {
        if Instant::now() > deadline {
            bail!("tern did not listen on {}", process.bootstrap);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(process)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

/// Reads one counter from tern's /metrics with a minimal HTTP/1.0 GET.
fn metric(http: &str, name: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http)?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: tern\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| anyhow!("metric {name} not found"))
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let mut cluster = Cluster::connect(bootstrap).await?;
    tern::cli::topics::create(&mut cluster, topic, partitions, &[]).await?;
    Ok(())
}

/// Commits from `connections` clients in a loop for `seconds`.
async fn commit_rate(tern: &TernProcess, connections: usize, seconds: u64) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mut client = KafkaClient::connect(&tern.bootstrap).await?;
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut offset = 0i64;
            while !stop.load(Ordering::Relaxed) {
                offset += 1;
                let request = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s(&format!("committer-{c}"))))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("bench")))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)])]);
                let (response, _) = client.send(&request, 2..=8).await?;
                let code = response.topics[0].partitions[0].error_code;
                if code != 0 {
                    bail!("commit failed with error {code}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let (commits0, flushes0) = (
        metric(&tern.http, "tern_offset_commits_total")?,
        metric(&tern.http, "tern_fsync_partitions_total")?,
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (commits1, flushes1) = (
        metric(&tern.http, "tern_offset_commits_total")?,
        metric(&tern.http, "tern_fsync_partitions_total")?,
    );
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let commits = commits1 - commits0;
    let flushes = flushes1 - flushes0;
    println!(
        "offset commits: {connections} connections, {:.0} commits/s, {:.0} partition fsyncs/s = {:.2} per 10 ms, {:.1} commits per fsync",
        commits / elapsed,
        flushes / elapsed,
        flushes / elapsed / 100.0,
        commits / flushes.max(1.0)
    );
    Ok(())
}

struct Member {
    client: KafkaClient,
    id: String,
    generation: i32,
    group: String,
}

impl Member {
    async fn connect(bootstrap: &str, group: &str) -> Result<Member> {
        Ok(Member {
            client: KafkaClient::connect(bootstrap).await?,
            id: String::new(),
            generation: -1,
            group: group.to_string(),
        })
    }

    /// JoinGroup (answering MEMBER_ID_REQUIRED) + SyncGroup; the leader assigns nothing
    /// interesting, the bench only times the protocol.
    async fn join_and_sync(&mut self, session_ms: i32) -> Result<()> {
        let leader_members = loop {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_session_timeout_ms(session_ms)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(s(&self.id))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(
                        b"\0\0\0\0\0\x01\0\x05bench\0\0\0\0",
                    ))]);
            let (response, _) = self.client.send(&request, 0..=7).await?;
            self.id = response.member_id.to_string();
            match response.error_code {
                0 => {
                    self.generation = response.generation_id;
                    break if response.leader == response.member_id {
                        response
                            .members
                            .iter()
                            .map(|m| m.member_id.clone())
                            .collect()
                    } else {
                        Vec::new()
                    };
                }
                MEMBER_ID_REQUIRED => continue,
                code => bail!("JoinGroup failed with error {code}"),
            }
        };
        let assignments = leader_members
            .into_iter()
            .map(|id| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(id)
                    .with_assignment(Bytes::from_static(b"\0\0\0\0\0\0\0\0\0\0"))
            })
            .collect();
        let request = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.id))
            .with_assignments(assignments);
        let (response, _) = self.client.send(&request, 0..=5).await?;
        if response.error_code != 0 {
            bail!("SyncGroup failed with error {}", response.error_code);
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<i16> {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.id));
        Ok(self.client.send(&request, 0..=4).await?.0.error_code)
    }
}

/// Joins `members` together into `group`: all join concurrently, all sync.
async fn form_group(
    bootstrap: &str,
    group: &str,
    members: usize,
    session_ms: i32,
) -> Result<Vec<Member>> {
    let mut joins = Vec::new();
    for _ in 0..members {
        let mut m = Member::connect(bootstrap, group).await?;
        joins.push(tokio::spawn(async move {
            m.join_and_sync(session_ms).await.map(|_| m)
        }));
    }
    let mut formed = Vec::new();
    for j in joins {
        formed.push(j.await??);
    }
    Ok(formed)
}

/// A member's life: heartbeat every 100 ms, rejoin when told a rebalance is under way.
async fn heartbeat_until_rebalanced(mut m: Member, generation: i32) -> Result<(Member, Instant)> {
    loop {
        if m.generation > generation {
            return Ok((m, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        match m.heartbeat().await? {
            0 => {}
            REBALANCE_IN_PROGRESS => m.join_and_sync(10_000).await?,
            code => bail!("Heartbeat failed with error {code}"),
        }
    }
}

async fn settle_time(tern: &TernProcess) -> Result<()> {
    let members = form_group(&tern.bootstrap, "settle", 10, 10_000).await?;
    let generation = members[0].generation;
    let started = Instant::now();
    let mut lives: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(heartbeat_until_rebalanced(m, generation)))
        .collect();
    let mut newcomer = Member::connect(&tern.bootstrap, "settle").await?;
    lives.push(tokio::spawn(async move {
        newcomer.join_and_sync(10_000).await?;
        Ok((newcomer, Instant::now()))
    }));
    let mut last = started;
    for l in lives {
        let (_, at) = l.await??;
        last = last.max(at);
    }
    println!(
        "group settle: 10 members + 1 joining → all 11 synced in {:.0} ms (heartbeat interval 100 ms is the clients' own delay)",
        (last - started).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Forms `batches` rounds of `parallel` groups of `per_group` members over one pool of
/// connections (so connection buffers are not counted); RSS is read after the first round
/// and after the last.
async fn memory_per_member(
    tern: &TernProcess,
    batches: usize,
    parallel: usize,
    per_group: usize,
) -> Result<()> {
    let pid = tern.child.id();
    let mut pool = Vec::new();
    for _ in 0..parallel * per_group {
        pool.push(KafkaClient::connect(&tern.bootstrap).await?);
    }
    let mut before = 0;
    for b in 0..batches {
        let mut joins = Vec::new();
        for (i, client) in pool.drain(..).enumerate() {
            let mut m = Member {
                client,
                id: String::new(),
                generation: -1,
                group: format!("idle-{b}-{}", i % parallel),
            };
            joins.push(tokio::spawn(async move {
                m.join_and_sync(1_800_000).await.map(|_| m.client)
            }));
        }
        for j in joins {
            pool.push(j.await??);
        }
        if b == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            before = rss_kib(pid)?;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(pid)?;
    let members = (batches - 1) * parallel * per_group;
    println!(
        "coordinator memory: {members} more idle members in {} groups: RSS {before} KiB → {after} KiB = {:.0} bytes per member (group state included)",
        (batches - 1) * parallel,
        (after.saturating_sub(before) * 1024) as f64 / members as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // New groups wait 300 ms for their members (the bench's members join together).
    let fast_groups = "[groups]\ninitial_rebalance_delay_ms = 300\nmin_session_timeout_ms = 1000\n";
    {
        let tern = start_tern(fast_groups)?;
        create_topic(&tern.bootstrap, "bench", 1).await?;
        commit_rate(&tern, 64, 5).await?;
        commit_rate(&tern, 200, 5).await?;
    }
    {
        let tern = start_tern(fast_groups)?;
        settle_time(&tern).await?;
    }
    {
        let tern = start_tern(fast_groups)?;
        memory_per_member(&tern, 21, 50, 10).await?;
    }
    Ok(())
}
