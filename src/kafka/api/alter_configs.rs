//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (set / delete
//! single keys). Both validate every value before changing anything.

use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::access::Access;
use super::{str_bytes, RESOURCE_TOPIC};
use crate::acls::Operation;
use crate::kafka::errors::code_and_message;
use crate::topics::config::ConfigType;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// APPEND / SUBTRACT of one list config: items added if missing, or removed.
fn edit_list(current: &str, items: &str, append: bool) -> String {
    let mut list: Vec<String> = current
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append {
            if !list.iter().any(|i| i == item) {
                list.push(item.to_string());
            }
        } else {
            list.retain(|i| i != item);
        }
    }
    list.join(",")
}

fn error(code: ResponseError, message: String) -> (i16, Option<StrBytes>) {
    (code.code(), Some(str_bytes(&message)))
}

/// ALTER_CONFIGS on the topic, or an authorization error.
fn denied(access: &Access, resource_type: i8, name: &str) -> Option<(i16, Option<StrBytes>)> {
    (resource_type == RESOURCE_TOPIC && !access.topic(Operation::AlterConfigs, name)).then(|| {
        error(
            ResponseError::TopicAuthorizationFailed,
            format!("not authorized to alter the configs of topic {name}"),
        )
    })
}

pub fn alter(access: &Access, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let broker = access.broker;
    let responses = request
        .resources
        .iter()
        .map(|r| {
            let (code, message) = if r.resource_type != RESOURCE_TOPIC {
                error(
                    ResponseError::InvalidRequest,
                    "only topic configs can be altered".to_string(),
                )
            } else if let Some(refused) = denied(access, r.resource_type, &r.resource_name) {
                refused
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
    access: &Access,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let broker = access.broker;
    let responses = request
        .resources
        .iter()
        .map(|r| {
            // APPEND and SUBTRACT apply to list configs only, as in Kafka.
            let bad_op = r.configs.iter().find(|c| match c.config_operation {
                OP_SET | OP_DELETE => false,
                OP_APPEND | OP_SUBTRACT => {
                    crate::topics::config::key(&c.name).map(|k| k.kind) != Some(ConfigType::List)
                }
                _ => true,
            });
            let (code, message) = if r.resource_type != RESOURCE_TOPIC {
                error(ResponseError::InvalidRequest, "only topic configs can be altered".to_string())
            } else if let Some(refused) = denied(access, r.resource_type, &r.resource_name) {
                refused
            } else if let Some(c) = bad_op {
                let code = if c.config_operation > OP_SUBTRACT {
                    ResponseError::InvalidRequest
                } else {
                    ResponseError::InvalidConfig
                };
                error(
                    code,
                    format!("operation {} is not allowed on `{}` (APPEND and SUBTRACT take list configs)", c.config_operation, c.name),
                )
            } else {
                let edits: Vec<(i8, String, Option<String>)> = r
                    .configs
                    .iter()
                    .map(|c| (c.config_operation, c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                    .collect();
                let defaults = broker.topics.defaults().clone();
                let outcome = broker.topics.alter_configs(
                    &r.resource_name,
                    |overrides| {
                        for (op, name, value) in edits {
                            match (op, value) {
                                (OP_SET, Some(v)) => {
                                    overrides.insert(name, v);
                                }
                                (OP_APPEND | OP_SUBTRACT, Some(v)) => {
                                    let current = defaults.resolve(overrides, &name).0.to_string();
                                    let next = edit_list(&current, &v, op == OP_APPEND);
                                    overrides.insert(name, next);
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

#[cfg(test)]
mod tests {
    use super::edit_list;

    #[test]
    fn append_and_subtract_edit_lists() {
        assert_eq!(edit_list("delete", "delete", true), "delete");
        assert_eq!(edit_list("", "a,b", true), "a,b");
        assert_eq!(edit_list("a,b,c", "b", false), "a,c");
    }
}
