//! OffsetCommit: checked against the group's generation, appended to `__consumer_offsets`
//! in request order, answered (and visible to OffsetFetch) once durable.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::Reply;
use crate::acls::Operation;
use crate::groups::offset_records::{Committed, OffsetKey};
use crate::groups::valid_group_id;
use crate::kafka::errors::group_error_code;

/// Kafka's offset.metadata.max.bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

pub fn handle(access: &Access, request: OffsetCommitRequest, version: i16) -> Reply {
    let broker = access.broker;
    let group = request.group_id.0.to_string();
    let generation = request.generation_id_or_member_epoch;
    let group_check = if !access.group(Operation::Read, &group) {
        Err(ResponseError::GroupAuthorizationFailed.code())
    } else if valid_group_id(&group) {
        broker
            .groups
            .check_commit(
                &group,
                &request.member_id,
                request.group_instance_id.as_deref(),
                generation,
            )
            .map_err(|e| group_error_code(e).code())
    } else {
        Err(ResponseError::InvalidGroupId.code())
    };
    let now = crate::log::now_ms();
    let mut entries = Vec::new();
    let mut topics: Vec<OffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|t| {
            let readable = group_check.is_err() || access.topic(Operation::Read, &t.name.0);
            let topic = broker.topics.get(&t.name.0);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let metadata = p.committed_metadata.as_deref().unwrap_or("");
                    let code = if let Err(code) = group_check {
                        code
                    } else if !readable {
                        ResponseError::TopicAuthorizationFailed.code()
                    } else if topic
                        .as_ref()
                        .and_then(|t| t.partition(p.partition_index))
                        .is_none()
                    {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else if metadata.len() > MAX_METADATA_BYTES {
                        ResponseError::OffsetMetadataTooLarge.code()
                    } else {
                        entries.push((
                            OffsetKey {
                                group: group.clone(),
                                topic: t.name.0.to_string(),
                                partition: p.partition_index,
                            },
                            Some(Committed {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: metadata.to_string(),
                                commit_ms: now,
                            }),
                        ));
                        0
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    // Appended now, in this connection's request order; durable (and visible) later.
    let pending = broker.groups.offsets.append(entries);
    Reply::later(version, async move {
        let outcome = match pending {
            Ok(pending) => pending.durable().await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::error!(%group, error = %e, "offset commit not durable");
            for t in &mut topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = ResponseError::KafkaStorageError.code();
                    }
                }
            }
        }
        OffsetCommitResponse::default().with_topics(topics)
    })
}
