//! What no well-behaved client sends, against a real tern process: decompression bombs,
//! giant ids, floods of groups, pipelined requests, bad offsets, stale static members,
//! and the configs Kafka tooling sets. Regression tests for issue #17 items B6–B10, C13–C16.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use tern::client::KafkaClient;

const INVALID_GROUP_ID: i16 = 24;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const INVALID_CONFIG: i16 = 40;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const INVALID_RECORD: i16 = 87;

/// B6: an 89-byte snappy batch announcing 4 GiB, and a gzip batch of 64 MiB of zeros
/// (before: 4.1 GiB and 1 GiB of RSS). Both are refused with INVALID_RECORD, tern's memory
/// stays where it was, nothing is stored, and readers never meet them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_without_memory_growth() {
    let tern = Tern::start("");
    let mut client = tern.client().await;
    assert_eq!(create_topic(&mut client, "bombs", 1, &[]).await, 0);
    let before = tern.rss_kib();
    let snappy = batch_with_section(2, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00], 1);
    let zeros = vec![0u8; 64 << 20];
    let gzip = tern::log::codec::compress(tern::log::batch::Codec::Gzip, &zeros).expect("gzip");
    drop(zeros);
    let gzip = batch_with_section(1, &gzip, 1_000_000);
    for bomb in [snappy, gzip] {
        let (code, _) = produce(&mut client, "bombs", 0, bomb).await;
        assert_eq!(code, INVALID_RECORD);
    }
    let grown = tern.rss_kib().saturating_sub(before);
    assert!(grown < 40 * 1024, "RSS grew by {grown} KiB");
    // ListOffsets by timestamp (the call that inflated the bomb before) finds nothing.
    assert_eq!(fetch_values(&mut client, "bombs", 0, 0).await.len(), 0);
}

fn commit_request(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

async fn committed(client: &mut KafkaClient, group: &str, topic: &str) -> i64 {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(vec![0])]));
    let (response, _) = client.send(&request, 1..=7).await.expect("OffsetFetch");
    response.topics[0].partitions[0].committed_offset
}

/// B7: a group id of 65,543 bytes was stored with a u16 length and aliased `billing`'s
/// offsets. Now it is INVALID_GROUP_ID, `billing` is untouched across a restart, and
/// ListGroups keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_group_id_is_refused_and_touches_no_other_group() {
    let mut tern = Tern::start("");
    let mut client = tern.client().await;
    assert_eq!(create_topic(&mut client, "t", 1, &[]).await, 0);
    assert_eq!(produce(&mut client, "t", 0, batch("r", 100)).await.0, 0);
    let (r, _) = client
        .send(&commit_request("billing", "t", 42), 2..=8)
        .await
        .expect("commit");
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let mut attacker = "billing".to_string();
    attacker.push_str(&"\0".repeat(65_536));
    let (r, _) = client
        .send(&commit_request(&attacker, "t", 7), 2..=8)
        .await
        .expect("commit");
    assert_eq!(r.topics[0].partitions[0].error_code, INVALID_GROUP_ID);
    assert_eq!(committed(&mut client, "billing", "t").await, 42);
    tern.restart();
    let mut client = tern.client().await;
    assert_eq!(
        committed(&mut client, "billing", "t").await,
        42,
        "after a restart too"
    );
    let (groups, _) = client
        .send(&ListGroupsRequest::default(), 0..=4)
        .await
        .expect("ListGroups");
    let ids: Vec<String> = groups
        .groups
        .iter()
        .map(|g| g.group_id.to_string())
        .collect();
    assert_eq!(ids, vec!["billing".to_string()]);
}

fn join_request(
    group: &str,
    member: &str,
    instance: Option<&str>,
    session_ms: i32,
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\x01\0\x01t\0\0\0\0"))])
}

/// B8: group state stays bounded. Refused joins store nothing (before: ten joins with 8 MiB
/// ids and a bad session timeout kept 170 MiB), and groups whose members left are
/// forgotten (before: 50,000 ids kept 40 MiB and the ticker walked them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_joins_and_abandoned_groups_do_not_stay_in_memory() {
    let tern = Tern::start("");
    let mut client = tern.client().await;
    let before = tern.rss_kib();
    let huge = "g".repeat(8 << 20);
    for _ in 0..10 {
        let (r, _) = client
            .send(&join_request(&huge, "", None, 1), 0..=7)
            .await
            .expect("join");
        assert!(
            matches!(r.error_code, INVALID_GROUP_ID | INVALID_SESSION_TIMEOUT),
            "{}",
            r.error_code
        );
    }
    // 2,000 groups: join (member id handed out), then leave.
    for i in 0..2_000 {
        let group = format!("flood-{i}");
        let (r, _) = client
            .send(&join_request(&group, "", None, 10_000), 4..=7)
            .await
            .expect("join");
        assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
        let member = r.member_id.to_string();
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_member_id(s(&member));
        client.send(&leave, 0..=2).await.expect("leave");
    }
    let grown = tern.rss_kib().saturating_sub(before);
    assert!(grown < 30 * 1024, "RSS grew by {grown} KiB");
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("flood-7"))]);
    let (r, _) = client.send(&request, 0..=5).await.expect("describe");
    assert_eq!(
        r.groups[0].group_state.to_string(),
        "Dead",
        "an abandoned group is gone"
    );
}

/// B9: a second JoinGroup from the same member on the same connection used to leave the
/// first unanswered, and with it every later response of that connection for 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_join_is_answered_and_the_connection_keeps_answering() {
    let tern = Tern::start("[groups]\ninitial_rebalance_delay_ms = 2000\n");
    let mut client = tern.client().await;
    let (r, _) = client
        .send(&join_request("g", "", None, 10_000), 4..=7)
        .await
        .expect("join");
    let member = r.member_id.to_string();
    let first = client
        .submit(&join_request("g", &member, None, 10_000), 7)
        .await
        .expect("write");
    let second = client
        .submit(&join_request("g", &member, None, 10_000), 7)
        .await
        .expect("write");
    let versions = client
        .submit(&ApiVersionsRequest::default(), 0)
        .await
        .expect("write");
    let all = async {
        let a = client
            .receive::<JoinGroupRequest>(7, first)
            .await
            .expect("first join");
        let b = client
            .receive::<JoinGroupRequest>(7, second)
            .await
            .expect("second join");
        let v = client
            .receive::<ApiVersionsRequest>(0, versions)
            .await
            .expect("versions");
        (a, b, v)
    };
    let (a, b, v) = tokio::time::timeout(Duration::from_secs(15), all)
        .await
        .expect("every request is answered (no hang)");
    assert_eq!(
        a.error_code, REBALANCE_IN_PROGRESS,
        "the replaced join gets Kafka's answer"
    );
    assert_eq!(b.error_code, 0);
    assert_eq!(v.error_code, 0);
}

/// B10: one connection pipelining fetches without reading the answers held 810 MiB; now
/// each connection holds one response and all connections share a budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_fetches_stay_within_the_response_budget() {
    // The default budget: kafka.max_queued_response_bytes = 64 MiB.
    let tern = Tern::start("");
    let mut client = tern.client().await;
    assert_eq!(
        create_topic(&mut client, "big", 1, &[("compression.type", "producer")]).await,
        0
    );
    let chunk = incompressible(1_000_000);
    for _ in 0..40 {
        let records = single_record_batch(chunk.clone());
        assert_eq!(produce(&mut client, "big", 0, records).await.0, 0);
    }
    let before = tern.rss_kib();
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut c = tern.client().await;
        let mut ids = Vec::new();
        for _ in 0..16 {
            ids.push(
                c.submit(&fetch_request("big", 0, 0, 50 << 20), 11)
                    .await
                    .expect("write"),
            );
        }
        readers.push((c, ids));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = tern.rss_kib().saturating_sub(before);
    // The budget, plus the encoding copy of the response being written and the runtime.
    assert!(
        held < (64 + 24) * 1024,
        "tern holds {held} KiB for unread responses"
    );
    for (n, (mut c, ids)) in readers.into_iter().enumerate() {
        for (k, id) in ids.into_iter().enumerate() {
            let r =
                tokio::time::timeout(Duration::from_secs(20), c.receive::<FetchRequest>(11, id))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("fetch {k} of connection {n} unanswered:\n{}", tern.log())
                    })
                    .expect("fetch answered");
            assert_eq!(r.responses[0].partitions[0].error_code, 0);
        }
    }
}

/// C13: asynchronous commits sent back to back on one connection took effect in random
/// order (librdkafka 0030_offset_commit read back 37, 3, 2 of 50). Now in arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commits_take_effect_in_request_order() {
    let tern = Tern::start("");
    let mut client = tern.client().await;
    assert_eq!(create_topic(&mut client, "t", 1, &[]).await, 0);
    assert_eq!(produce(&mut client, "t", 0, batch("r", 500)).await.0, 0);
    for round in 0..3 {
        let mut ids = Vec::new();
        for i in 1..=300 {
            ids.push(
                client
                    .submit(&commit_request("g", "t", round * 1000 + i), 8)
                    .await
                    .expect("write"),
            );
        }
        for id in ids {
            let r = client
                .receive::<OffsetCommitRequest>(8, id)
                .await
                .expect("commit");
            assert_eq!(r.topics[0].partitions[0].error_code, 0);
        }
        assert_eq!(committed(&mut client, "g", "t").await, round * 1000 + 300);
    }
}

/// C14: DeleteRecords with offset −1001 emptied the partition; only −1 means "to the high
/// watermark".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_with_a_bad_negative_offset_deletes_nothing() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let tern = Tern::start("");
    let mut client = tern.client().await;
    assert_eq!(create_topic(&mut client, "t", 1, &[]).await, 0);
    assert_eq!(produce(&mut client, "t", 0, batch("r", 10)).await.0, 0);
    let request = |offset| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(offset)])])
    };
    let (r, _) = client
        .send(&request(-1001), 0..=2)
        .await
        .expect("DeleteRecords");
    assert_eq!(r.topics[0].partitions[0].error_code, OFFSET_OUT_OF_RANGE);
    assert_eq!(
        fetch_values(&mut client, "t", 0, 0).await.len(),
        10,
        "nothing deleted"
    );
    let (r, _) = client
        .send(&request(-1), 0..=2)
        .await
        .expect("DeleteRecords");
    assert_eq!(
        r.topics[0].partitions[0].low_watermark, 10,
        "-1 is the high watermark"
    );
}

async fn join_static(client: &mut KafkaClient, instance: &str) -> (String, i32) {
    let (r, _) = client
        .send(&join_request("static", "", Some(instance), 10_000), 5..=7)
        .await
        .expect("join");
    assert_eq!(r.error_code, 0, "static join");
    (r.member_id.to_string(), r.generation_id)
}

/// C15: a second consumer with the same group.instance.id replaces the first; the first
/// is fenced (FENCED_INSTANCE_ID) on Heartbeat, SyncGroup and OffsetCommit instead of
/// being told UNKNOWN_MEMBER_ID and rejoining (librdkafka 0102_static_group_rebalance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_static_member_is_fenced() {
    let tern = Tern::start("[groups]\ninitial_rebalance_delay_ms = 0\n");
    let mut old = tern.client().await;
    assert_eq!(create_topic(&mut old, "t", 1, &[]).await, 0);
    let (old_id, generation) = join_static(&mut old, "door-1").await;
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("static")))
        .with_generation_id(generation)
        .with_member_id(s(&old_id))
        .with_group_instance_id(Some(s("door-1")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&old_id))
            .with_assignment(Bytes::new())]);
    let (r, _) = old.send(&sync, 3..=5).await.expect("sync");
    assert_eq!(r.error_code, 0);
    let mut new = tern.client().await;
    let (new_id, _) = join_static(&mut new, "door-1").await;
    assert_ne!(new_id, old_id);
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(s("static")))
        .with_generation_id(generation)
        .with_member_id(s(&old_id))
        .with_group_instance_id(Some(s("door-1")));
    let (r, _) = old.send(&heartbeat, 3..=4).await.expect("heartbeat");
    assert_eq!(r.error_code, FENCED_INSTANCE_ID, "heartbeat");
    let (r, _) = old.send(&sync, 3..=5).await.expect("sync");
    assert_eq!(r.error_code, FENCED_INSTANCE_ID, "sync");
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("static")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(&old_id))
        .with_group_instance_id(Some(s("door-1")))
        .with_topics(commit_request("static", "t", 0).topics);
    let (r, _) = old.send(&commit, 7..=8).await.expect("commit");
    assert_eq!(
        r.topics[0].partitions[0].error_code, FENCED_INSTANCE_ID,
        "commit"
    );
}

/// C16: every Kafka topic config is accepted; gzip is a compression.type that recompresses;
/// APPEND / SUBTRACT work on list configs; authorized operations are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topic_configs_are_accepted_and_reported() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let tern = Tern::start("");
    let mut client = tern.client().await;
    let configs = [
        ("delete.retention.ms", "1000"),
        ("min.cleanable.dirty.ratio", "0.2"),
        ("compression.type", "gzip"),
        ("message.timestamp.type", "LogAppendTime"),
    ];
    assert_eq!(
        create_topic(&mut client, "cfg", 1, &configs).await,
        0,
        "0081_admin's configs"
    );
    assert_eq!(produce(&mut client, "cfg", 0, batch("v", 20)).await.0, 0);
    let (r, _) = client
        .send(&fetch_request("cfg", 0, 0, 1 << 20), 4..=12)
        .await
        .expect("fetch");
    let stored = r.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    let attributes = i16::from_be_bytes([stored[21], stored[22]]);
    assert_eq!(attributes & 0x07, 1, "stored gzip-compressed");
    assert_eq!(attributes & 0x08, 0x08, "LogAppendTime stamped");
    assert_eq!(
        tern::log::records::decode(&stored).expect("decodes").len(),
        20
    );

    let edit = |name: &str, op: i8, value: &str| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("cfg"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s(name))
                    .with_config_operation(op)
                    .with_value(Some(s(value)))]),
        ])
    };
    let (r, _) = client
        .send(&edit("cleanup.policy", 2, "delete"), 0..=1)
        .await
        .expect("append");
    assert_eq!(r.responses[0].error_code, 0, "APPEND on a list config");
    let (r, _) = client
        .send(&edit("retention.ms", 2, "5"), 0..=1)
        .await
        .expect("append");
    assert_eq!(
        r.responses[0].error_code, INVALID_CONFIG,
        "APPEND on a non-list config"
    );

    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(s("cfg")))),
        ]))
        .with_include_topic_authorized_operations(true);
    let (r, _) = client.send(&metadata, 8..=12).await.expect("metadata");
    assert_ne!(
        r.topics[0].topic_authorized_operations,
        i32::MIN,
        "operations reported"
    );
    assert_ne!(
        r.topics[0].topic_authorized_operations & (1 << 3),
        0,
        "READ allowed"
    );
}

/// A client may not write tern's internal offsets topic, or delete it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_is_read_only_for_clients() {
    let tern = Tern::start("");
    let mut client = tern.client().await;
    let (code, _) = produce(&mut client, "__consumer_offsets", 0, batch("x", 1)).await;
    assert_ne!(code, 0);
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(s("__consumer_offsets"))])
        .with_timeout_ms(5_000);
    let (r, _) = client.send(&request, 1..=5).await.expect("DeleteTopics");
    assert_ne!(r.responses[0].error_code, 0);
}

/// B12: under an address-space limit of 400 MB (systemd's LimitAS, a 32-bit Pi) a
/// legitimate 80 MiB Produce aborted tern: the custom allocator copied large blocks where
/// the system allocator moves them, the frame buffer doubled to 128 MiB, and glibc's
/// per-thread arenas reserved address space. It is now answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_produce_under_an_address_space_limit_is_answered() {
    let tern = Tern::start_with_address_space_limit("", 400_000_000);
    let mut client = tern.client().await;
    assert_eq!(
        create_topic(&mut client, "big", 1, &[("compression.type", "producer")]).await,
        0
    );
    let value = incompressible(1_000_000);
    let mut records = Vec::new();
    for _ in 0..84 {
        records.extend_from_slice(&single_record_batch(value.clone()));
    }
    assert!(records.len() > 80 << 20, "{} bytes", records.len());
    let request = produce_request("big", 0, Bytes::from(records), -1);
    let outcome = client.send(&request, 3..=9).await;
    let response = outcome.unwrap_or_else(|e| panic!("produce failed: {e}\n{}", tern.log()));
    let p = &response.0.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "the 80 MiB produce is stored"
    );
    let (r, _) = client
        .send(&ApiVersionsRequest::default(), 0..=3)
        .await
        .expect("tern still answers");
    assert_eq!(r.error_code, 0);
}
