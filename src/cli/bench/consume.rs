//! `tern bench consume`, like `kafka-consumer-perf-test`: read a topic from its start
//! (assigned partitions, or as the only member of a consumer group, committing as it
//! goes) and decode every record as a consumer would (CRC, decompression, records).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetFetchRequest, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;

use super::{latency_histogram, Report};
use crate::cli::cluster::{by_leader, Cluster};
use crate::cli::consume::list_offsets;
use crate::cli::groups::offset_commit_request;
use crate::client::{check_partition, error_name, ClientError, KafkaClient};
use crate::log::records;

pub struct ConsumeBench {
    pub topic: String,
    /// Stop after this many records (default: everything up to the end at start).
    pub records: Option<u64>,
    pub group: Option<String>,
    pub fetch_max_bytes: i32,
    pub partition_max_bytes: i32,
}

/// Where a consumer group member stands: its coordinator connection and generation.
struct Membership {
    coordinator: KafkaClient,
    group: GroupId,
    member_id: StrBytes,
    generation: i32,
    last_heartbeat: Instant,
}

const SESSION_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
/// A consume benchmark that sees no new record this long gives up (like
/// kafka-consumer-perf-test's timeout) instead of waiting forever for `--records`.
const IDLE_LIMIT: Duration = Duration::from_secs(10);

pub async fn run(
    bootstrap: &str,
    bench: ConsumeBench,
    progress: Arc<AtomicU64>,
) -> Result<Report, ClientError> {
    let mut cluster = Cluster::connect(bootstrap).await?;
    cluster
        .refresh(Some(std::slice::from_ref(&bench.topic)))
        .await?;
    let partitions = cluster.partitions(&bench.topic)?;
    let ends = list_offsets(&mut cluster, &bench.topic, &partitions, -1).await?;
    let (mut membership, mut positions) = match &bench.group {
        None => (
            None,
            list_offsets(&mut cluster, &bench.topic, &partitions, -2).await?,
        ),
        Some(group) => {
            let mut member = join(&mut cluster, group, &bench.topic, &partitions).await?;
            let committed = committed_offsets(&mut member, &bench.topic, &partitions).await?;
            let earliest = list_offsets(&mut cluster, &bench.topic, &partitions, -2).await?;
            let positions = earliest
                .into_iter()
                .map(|(p, start)| (p, committed.get(&p).copied().unwrap_or(start).max(start)))
                .collect();
            (Some(member), positions)
        }
    };
    let wanted = match bench.records {
        Some(n) => n,
        None => partitions
            .iter()
            .map(|(p, _)| (ends[p] - positions[p]).max(0) as u64)
            .sum(),
    };
    let mut latencies = latency_histogram()?;
    let mut consumed = 0u64;
    let mut bytes = 0u64;
    let mut requests = 0u64;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while consumed < wanted {
        if last_progress.elapsed() >= IDLE_LIMIT {
            return Err(ClientError::Kafka(format!(
                "only {consumed} of {wanted} records arrived; nothing new for {} s",
                IDLE_LIMIT.as_secs()
            )));
        }
        for (leader, ps) in by_leader(&partitions, |_| true) {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(bench.fetch_max_bytes)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(bench.topic.clone())))
                    .with_partitions(
                        ps.iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_fetch_offset(positions[p])
                                    .with_partition_max_bytes(bench.partition_max_bytes)
                            })
                            .collect(),
                    )]);
            let sent = Instant::now();
            let (response, _) = cluster.node(leader).await?.send(&request, 4..=11).await?;
            latencies.saturating_record((sent.elapsed().as_micros() as u64).max(1));
            requests += 1;
            for t in &response.responses {
                for p in &t.partitions {
                    if p.error_code == ResponseError::OffsetOutOfRange.code() {
                        return Err(ClientError::Kafka(format!(
                            "partition {}: offset {} is out of range (log start {})",
                            p.partition_index, positions[&p.partition_index], p.log_start_offset
                        )));
                    }
                    check_partition(p.partition_index, p.error_code)?;
                    let Some(data) = &p.records else { continue };
                    let position = positions[&p.partition_index];
                    let mut next = position;
                    let mut count = 0u64;
                    for batch in records::decode_batches(data) {
                        let decoded = batch
                            .records
                            .map_err(|e| ClientError::Decode(e.to_string()))?;
                        for record in decoded.iter().filter(|r| r.offset >= position) {
                            if !record.control {
                                count += 1;
                                bytes += record.value.as_ref().map_or(0, |v| v.len()) as u64;
                            }
                        }
                        next = next.max(batch.header.next_offset());
                    }
                    consumed += count;
                    if count > 0 {
                        last_progress = Instant::now();
                    }
                    progress.fetch_add(count, Ordering::Relaxed);
                    positions.insert(p.partition_index, next);
                }
            }
        }
        if let Some(member) = &mut membership {
            if member.last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
                commit(member, &bench.topic, &positions).await?;
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(mut member) = membership {
        commit(&mut member, &bench.topic, &positions).await?;
        leave(&mut member).await?;
    }
    Ok(Report {
        records: consumed,
        bytes,
        requests,
        elapsed,
        latencies: Some(latencies),
    })
}

/// Joins `group` as its only member (the leader), assigning itself every partition.
async fn join(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    partitions: &[(i32, i32)],
) -> Result<Membership, ClientError> {
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    // v0..=3 answer with one coordinator (v4 batches keys).
    let (found, _) = cluster.node(-1).await?.send(&find, 0..=3).await?;
    if found.error_code != 0 {
        return Err(kafka_error("FindCoordinator", found.error_code));
    }
    let address = format!("{}:{}", found.host.as_str(), found.port);
    let mut coordinator = KafkaClient::connect_as(&address, "tern-bench").await?;
    let group_id = GroupId(StrBytes::from_string(group.into()));
    let subscription = encode(
        &ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_string(topic.into())]),
    )?;
    let mut member_id = StrBytes::default();
    let joined = loop {
        let request = JoinGroupRequest::default()
            .with_group_id(group_id.clone())
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(SESSION_TIMEOUT_MS)
            .with_member_id(member_id.clone())
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(subscription.clone())]);
        let (response, _) = coordinator.send(&request, 0..=7).await?;
        // KIP-394: the first join returns a member id to join with.
        if response.error_code == ResponseError::MemberIdRequired.code() {
            member_id = response.member_id;
            continue;
        }
        if response.error_code != 0 {
            return Err(kafka_error("JoinGroup", response.error_code));
        }
        break response;
    };
    if joined.members.len() > 1 {
        return Err(ClientError::Kafka(format!(
            "group `{group}` has other members: the benchmark must be its only member"
        )));
    }
    let assignment = encode(
        &ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(partitions.iter().map(|(p, _)| *p).collect()),
        ]),
    )?;
    let sync = SyncGroupRequest::default()
        .with_group_id(group_id.clone())
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
        .with_protocol_name(Some(StrBytes::from_static_str("range")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(joined.member_id.clone())
            .with_assignment(assignment)]);
    let (synced, _) = coordinator.send(&sync, 0..=5).await?;
    if synced.error_code != 0 {
        return Err(kafka_error("SyncGroup", synced.error_code));
    }
    Ok(Membership {
        coordinator,
        group: group_id,
        member_id: joined.member_id,
        generation: joined.generation_id,
        last_heartbeat: Instant::now(),
    })
}

async fn committed_offsets(
    member: &mut Membership,
    topic: &str,
    partitions: &[(i32, i32)],
) -> Result<BTreeMap<i32, i64>, ClientError> {
    let request = OffsetFetchRequest::default()
        .with_group_id(member.group.clone())
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_indexes(
                partitions.iter().map(|(p, _)| *p).collect(),
            )]));
    let (response, _) = member.coordinator.send(&request, 1..=7).await?;
    if response.error_code != 0 {
        return Err(kafka_error("OffsetFetch", response.error_code));
    }
    let mut out = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            check_partition(p.partition_index, p.error_code)?;
            if p.committed_offset >= 0 {
                out.insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits the positions (which also keeps the membership alive, with a heartbeat).
async fn commit(
    member: &mut Membership,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
) -> Result<(), ClientError> {
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(member.group.clone())
        .with_generation_id(member.generation)
        .with_member_id(member.member_id.clone());
    let (beat, _) = member.coordinator.send(&heartbeat, 0..=4).await?;
    if beat.error_code != 0 {
        return Err(kafka_error("Heartbeat", beat.error_code));
    }
    member.last_heartbeat = Instant::now();
    let request = offset_commit_request(
        member.group.clone(),
        member.generation,
        member.member_id.clone(),
        topic,
        positions,
    );
    let (response, _) = member.coordinator.send(&request, 2..=8).await?;
    for t in &response.topics {
        for p in &t.partitions {
            check_partition(p.partition_index, p.error_code)?;
        }
    }
    Ok(())
}

async fn leave(member: &mut Membership) -> Result<(), ClientError> {
    let request = LeaveGroupRequest::default()
        .with_group_id(member.group.clone())
        .with_member_id(member.member_id.clone());
    let (response, _) = member.coordinator.send(&request, 0..=2).await?;
    if response.error_code != 0 {
        return Err(kafka_error("LeaveGroup", response.error_code));
    }
    Ok(())
}

/// Consumer protocol payloads carry their own version (0) as a 16-bit prefix.
fn encode<T: Encodable>(message: &T) -> Result<Bytes, ClientError> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&0i16.to_be_bytes());
    message
        .encode(&mut buf, 0)
        .map_err(|e| ClientError::Encode(format!("{e:#}")))?;
    Ok(buf.freeze())
}

fn kafka_error(what: &str, code: i16) -> ClientError {
    ClientError::Kafka(format!("{what}: {}", error_name(code)))
}
