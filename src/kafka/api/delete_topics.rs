//! DeleteTopics (by name; versions that address topics by id are not advertised).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::Operation;
use crate::kafka::errors::code_and_message;

pub fn handle(access: &Access, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let broker = access.broker;
    let responses = request
        .topic_names
        .iter()
        .map(|name| {
            let result = DeletableTopicResult::default().with_name(Some(name.clone()));
            if !access.topic(Operation::Delete, &name.0) {
                return result
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(super::str_bytes(&format!(
                        "not authorized to delete topic {}",
                        name.0
                    ))));
            }
            match broker.topics.delete(&name.0) {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = code_and_message(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    let mut response = DeleteTopicsResponse::default().with_responses(responses);
    if version < 5 {
        for r in &mut response.responses {
            r.error_message = None;
        }
    }
    response
}
