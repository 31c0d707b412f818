//! DeleteRecords: moves a partition's log start offset forward (-1: to the high watermark).

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::Operation;
use crate::kafka::errors::log_error_code;

pub fn handle(access: &Access, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let broker = access.broker;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let allowed = access.topic(Operation::Delete, &t.name.0);
            let topic = broker.topics.get(&t.name.0);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    if !allowed {
                        return result
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    if crate::topics::is_internal(&t.name.0) {
                        return result.with_error_code(ResponseError::InvalidTopicException.code());
                    }
                    match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                        None => {
                            result.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        }
                        Some(partition) => match partition.lock().delete_records_before(p.offset) {
                            Ok(start) => result.with_low_watermark(start),
                            Err(e) => result.with_error_code(log_error_code(&e).code()),
                        },
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
