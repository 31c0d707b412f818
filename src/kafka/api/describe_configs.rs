//! DescribeConfigs: every topic config tern knows, with its effective value and source.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::{str_bytes, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::acls::Operation;
use crate::topics::{config::KEYS, Source};

/// Kafka's ConfigSource numbering.
pub fn source_code(source: Source) -> i8 {
    match source {
        Source::Topic => 1,
        Source::Broker => 4,
        Source::Default => 5,
    }
}

pub fn handle(
    access: &Access,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let broker = access.broker;
    let results = request
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |key: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            match r.resource_type {
                RESOURCE_TOPIC if !access.topic(Operation::DescribeConfigs, &name) => result
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "not authorized to describe the configs of topic {name}"
                    )))),
                RESOURCE_BROKER if !access.cluster(Operation::DescribeConfigs) => result
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(
                        "not authorized to describe the broker's configs",
                    ))),
                RESOURCE_TOPIC => {
                    let Some(topic) = broker.topics.get(&name) else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(&format!(
                                "unknown topic `{name}`"
                            ))));
                    };
                    let overrides = topic.overrides();
                    let configs = KEYS
                        .iter()
                        .filter(|k| wanted(k.name))
                        .map(|k| {
                            let (value, source) =
                                broker.topics.defaults().resolve(&overrides, k.name);
                            let mut entry = DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(k.name))
                                .with_value(Some(str_bytes(value)))
                                .with_config_source(source_code(source))
                                .with_config_type(k.kind as i8);
                            if request.include_documentation {
                                entry =
                                    entry.with_documentation(Some(str_bytes(&k.documentation())));
                            }
                            entry
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let c = &broker.config;
                    let pairs = [
                        ("broker.id", c.broker.node_id.to_string()),
                        ("log.dirs", c.broker.data_dir.display().to_string()),
                        (
                            "auto.create.topics.enable",
                            c.kafka.auto_create_topics.to_string(),
                        ),
                        ("num.partitions", c.kafka.default_partitions.to_string()),
                        (
                            "socket.request.max.bytes",
                            c.kafka.max_request_bytes.to_string(),
                        ),
                    ];
                    let configs = pairs
                        .iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(str_bytes(v)))
                                .with_read_only(true)
                                .with_config_source(4)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    let mut response = DescribeConfigsResponse::default().with_results(results);
    for r in &mut response.results {
        for c in &mut r.configs {
            if version < 3 {
                c.config_type = 0;
                c.documentation = None;
            }
        }
    }
    response
}
