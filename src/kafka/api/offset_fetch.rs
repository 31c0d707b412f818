//! OffsetFetch: committed offsets of a group (all, or the partitions asked for).

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::str_bytes;
use crate::acls::Operation;

pub fn handle(access: &Access, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let broker = access.broker;
    if !access.group(Operation::Describe, &request.group_id.0) {
        let mut r = OffsetFetchResponse::default();
        if version >= 2 {
            r.error_code = ResponseError::GroupAuthorizationFailed.code();
        }
        return r;
    }
    if !crate::groups::valid_group_id(&request.group_id.0) {
        let mut r = OffsetFetchResponse::default();
        if version >= 2 {
            r.error_code = ResponseError::InvalidGroupId.code();
        }
        return r;
    }
    let committed = broker.groups.offsets.get(&request.group_id.0);
    let lookup = |topic: &str, partition: i32| {
        committed
            .iter()
            .find(|(t, p, _)| t == topic && *p == partition)
            .map(|(_, _, c)| c.clone())
    };
    let partition_response = |topic: &str, partition: i32| {
        let found = lookup(topic, partition);
        let mut r = OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_committed_offset(found.as_ref().map(|c| c.offset).unwrap_or(-1))
            .with_metadata(Some(str_bytes(
                found.as_ref().map(|c| c.metadata.as_str()).unwrap_or(""),
            )));
        if version >= 5 {
            r.committed_leader_epoch = found.as_ref().map(|c| c.leader_epoch).unwrap_or(-1);
        }
        r
    };
    let topics = match &request.topics {
        Some(topics) => topics
            .iter()
            .map(|t| {
                let allowed = access.topic(Operation::Describe, &t.name.0);
                OffsetFetchResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|p| {
                                if allowed {
                                    partition_response(&t.name.0, *p)
                                } else {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(-1)
                                        .with_error_code(
                                            ResponseError::TopicAuthorizationFailed.code(),
                                        )
                                }
                            })
                            .collect(),
                    )
            })
            .collect(),
        None => {
            let mut names: Vec<&String> = committed.iter().map(|(t, _, _)| t).collect();
            names.dedup();
            // All topics: those the principal may describe.
            names.retain(|name| access.topic(Operation::Describe, name));
            names
                .into_iter()
                .map(|name| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(name)))
                        .with_partitions(
                            committed
                                .iter()
                                .filter(|(t, _, _)| t == name)
                                .map(|(t, p, _)| partition_response(t, *p))
                                .collect(),
                        )
                })
                .collect()
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}
