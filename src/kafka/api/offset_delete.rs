//! OffsetDelete: removes committed offsets of a group that is not consuming right now
//! (tombstones in `__consumer_offsets`, answered once durable).

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::Reply;
use crate::acls::Operation;

pub fn handle(access: &Access, request: OffsetDeleteRequest, version: i16) -> Reply {
    let broker = access.broker;
    let group = request.group_id.0.to_string();
    if !access.group(Operation::Delete, &group) {
        return Reply::now(
            OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            version,
        );
    }
    let offsets = &broker.groups.offsets;
    let known = broker.groups.describe(&group).is_some() || offsets.has_offsets(&group);
    if !crate::groups::valid_group_id(&group) || !known {
        let code = if known {
            ResponseError::InvalidGroupId
        } else {
            ResponseError::GroupIdNotFound
        };
        return Reply::now(
            OffsetDeleteResponse::default().with_error_code(code.code()),
            version,
        );
    }
    // Members may be consuming these partitions: deleting their offsets under them would
    // make them restart from auto.offset.reset.
    let active = broker
        .groups
        .describe(&group)
        .is_some_and(|g| !g.members.is_empty());
    let mut doomed = Vec::new();
    let topics: Vec<OffsetDeleteResponseTopic> = request
        .topics
        .iter()
        .map(|t| {
            let readable = access.topic(Operation::Read, &t.name.0);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if !readable {
                        ResponseError::TopicAuthorizationFailed.code()
                    } else if active {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else {
                        doomed.push((t.name.0.to_string(), p.partition_index));
                        0
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let pending = offsets.delete(&group, &doomed);
    Reply::later(version, async move {
        let outcome = match pending {
            Ok(p) => p.durable().await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::error!(%group, error = %e, "offset deletion not durable");
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::KafkaStorageError.code());
        }
        OffsetDeleteResponse::default().with_topics(topics)
    })
}
