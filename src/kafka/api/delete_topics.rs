//! DeleteTopics (by name; versions that address topics by id are not advertised).

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use crate::broker::Broker;
use crate::kafka::errors::code_and_message;

pub fn handle(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let responses = request
        .topic_names
        .iter()
        .map(|name| {
            let result = DeletableTopicResult::default().with_name(Some(name.clone()));
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
