//! OffsetDelete: removes committed offsets of a group that is not consuming right now.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.0.to_string();
    let store = broker.groups.offsets.store();
    let known = broker.groups.describe(&group).is_some()
        || store.get(&group).map(|o| !o.is_empty()).unwrap_or(false);
    if !known {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    }
    // Members may be consuming these partitions: deleting their offsets under them would
    // make them restart from auto.offset.reset.
    let active = broker
        .groups
        .describe(&group)
        .is_some_and(|g| !g.members.is_empty());
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if active {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else if store.delete(&group, &t.name.0, p.partition_index).is_err() {
                        ResponseError::KafkaStorageError.code()
                    } else {
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
    if let Err(e) = store.flush() {
        tracing::error!(%group, error = %e, "offset deletion not durable");
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::KafkaStorageError.code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
