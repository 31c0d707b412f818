//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3) or the first offset at or
//! after a timestamp. "Latest" is the high watermark: the end of the durable log.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::Operation;
use crate::kafka::errors::log_error_code;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub fn handle(access: &Access, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let broker = access.broker;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let allowed = access.topic(Operation::Describe, &t.name.0);
            let topic = if allowed {
                broker.topics.get(&t.name.0)
            } else {
                None
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let Some(partition) =
                        topic.as_ref().and_then(|t| t.partition(p.partition_index))
                    else {
                        let code = if allowed {
                            ResponseError::UnknownTopicOrPartition
                        } else {
                            ResponseError::TopicAuthorizationFailed
                        };
                        return response.with_error_code(code.code());
                    };
                    let found = match p.timestamp {
                        LATEST => Ok(Some((partition.lock().high_watermark(), -1))),
                        EARLIEST | EARLIEST_LOCAL => {
                            Ok(Some((partition.lock().log_start_offset(), -1)))
                        }
                        MAX_TIMESTAMP => partition.lock().max_timestamp_offset(),
                        ts if ts >= 0 => partition.offset_for_timestamp(ts),
                        _ => Ok(Some((partition.lock().log_start_offset(), -1))),
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => {
                            response.with_offset(offset).with_timestamp(timestamp)
                        }
                        Ok(None) => response,
                        Err(e) => response.with_error_code(log_error_code(&e).code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
