//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (set / delete
//! single keys). Both validate every value before changing anything.

use std::sync::Arc;

use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RESOURCE_TOPIC};
use crate::broker::Broker;
use crate::kafka::errors::code_and_message;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

fn error(
    code: ResponseError,
    message: String,
) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    (code.code(), Some(str_bytes(&message)))
}

pub fn alter(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = request
        .resources
        .iter()
        .map(|r| {
            let (code, message) = if r.resource_type != RESOURCE_TOPIC {
                error(
                    ResponseError::InvalidRequest,
                    "only topic configs can be altered".to_string(),
                )
            } else {
                let pairs: Vec<(String, String)> = r
                    .configs
                    .iter()
                    .filter_map(|c| {
                        c.value
                            .as_ref()
                            .map(|v| (c.name.to_string(), v.to_string()))
                    })
                    .collect();
                let outcome = broker.topics.alter_configs(
                    &r.resource_name,
                    |overrides| {
                        overrides.clear();
                        overrides.extend(pairs);
                    },
                    request.validate_only,
                );
                match outcome {
                    Ok(()) => (0, None),
                    Err(e) => code_and_message(&e),
                }
            };
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub fn incremental(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .iter()
        .map(|r| {
            let unsupported_op = r
                .configs
                .iter()
                .find(|c| c.config_operation != OP_SET && c.config_operation != OP_DELETE);
            let (code, message) = if r.resource_type != RESOURCE_TOPIC {
                error(ResponseError::InvalidRequest, "only topic configs can be altered".to_string())
            } else if let Some(c) = unsupported_op {
                error(
                    ResponseError::InvalidRequest,
                    format!("operation {} on `{}`: tern topic configs are single values (use SET or DELETE)", c.config_operation, c.name),
                )
            } else {
                let edits: Vec<(i8, String, Option<String>)> = r
                    .configs
                    .iter()
                    .map(|c| (c.config_operation, c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                    .collect();
                let outcome = broker.topics.alter_configs(
                    &r.resource_name,
                    |overrides| {
                        for (op, name, value) in edits {
                            match (op, value) {
                                (OP_SET, Some(v)) => {
                                    overrides.insert(name, v);
                                }
                                _ => {
                                    overrides.remove(&name);
                                }
                            }
                        }
                    },
                    request.validate_only,
                );
                match outcome {
                    Ok(()) => (0, None),
                    Err(e) => code_and_message(&e),
                }
            };
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
