//! CreatePartitions: grows a topic. Existing keys keep their partition only if the client
//! partitioner is stable across counts, as with Kafka.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::Operation;
use crate::kafka::errors::code_and_message;

pub fn handle(access: &Access, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let broker = access.broker;
    let results = request
        .topics
        .iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if !access.topic(Operation::Alter, &t.name.0) {
                return result
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(super::str_bytes(&format!(
                        "not authorized to alter topic {}",
                        t.name.0
                    ))));
            }
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
