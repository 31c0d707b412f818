//! CreateTopics: validated like every other config path; replication factor must be 1
//! (or -1, "broker default") on a single node.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::str_bytes;
use crate::kafka::errors::code_and_message;

pub fn handle(access: &Access, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let broker = access.broker;
    let results = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            if !access.may_create_topic(&name) {
                return result
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "not authorized to create topic {name}"
                    ))));
            }
            if t.replication_factor != -1 && t.replication_factor != 1 {
                return result
                    .with_error_code(ResponseError::InvalidReplicationFactor.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "replication factor {} is impossible on a single-node broker; use 1",
                        t.replication_factor
                    ))));
            }
            let partitions = if t.num_partitions == -1 {
                if t.assignments.is_empty() {
                    broker.config.kafka.default_partitions
                } else {
                    t.assignments.len() as i32
                }
            } else {
                t.num_partitions
            };
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
            let outcome = if request.validate_only {
                broker
                    .topics
                    .check_create(&name, partitions, &configs)
                    .map(|_| None)
            } else {
                broker
                    .topics
                    .create(&name, partitions, configs.clone())
                    .map(Some)
            };
            match outcome {
                Ok(created) => {
                    let described = crate::topics::config::KEYS
                        .iter()
                        .map(|k| {
                            let (value, source) =
                                broker.topics.defaults().resolve(&configs, k.name);
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(k.name))
                                .with_value(Some(str_bytes(value)))
                                .with_config_source(super::describe_configs::source_code(source))
                        })
                        .collect();
                    let result = result
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(described));
                    match created {
                        Some(topic) => result.with_topic_id(topic.id),
                        None => result,
                    }
                }
                Err(e) => {
                    let (code, message) = code_and_message(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    let mut response = CreateTopicsResponse::default().with_topics(results);
    for t in &mut response.topics {
        if version < 7 {
            t.topic_id = uuid::Uuid::nil();
        }
        if version < 5 {
            t.num_partitions = -1;
            t.replication_factor = -1;
            t.configs = None;
        }
        if version < 1 {
            t.error_message = None;
        }
    }
    response
}
