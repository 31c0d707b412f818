//! CreatePartitions: grows a topic. Existing keys keep their partition only if the client
//! partitioner is stable across counts, as with Kafka.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::broker::Broker;
use crate::kafka::errors::code_and_message;

pub fn handle(broker: &Arc<Broker>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let results = request
        .topics
        .iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match broker
                .topics
                .grow(&t.name.0, t.count, request.validate_only)
            {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = code_and_message(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
