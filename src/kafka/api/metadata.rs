//! Metadata: brokers (just this one), topics and partitions, auto-creating topics a
//! producer asks about when `kafka.auto_create_topics` is on.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::access::Access;
use super::{str_bytes, topic_name};
use crate::acls::{Operation, ResourceType, CLUSTER_NAME};
use crate::kafka::errors::topic_error_code;
use crate::topics::Topic;

pub fn handle(
    access: &Access,
    listener: &crate::kafka::listener::Listener,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let broker = access.broker;
    let node = broker.node_id();
    let (host, port) = (listener.advertised.0.as_str(), listener.advertised.1);
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested: Option<Vec<String>> = match request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(
            list.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let topics = match requested {
        // All topics: those the principal may describe (Kafka leaves the others out).
        None => broker
            .topics
            .list()
            .iter()
            .filter(|t| access.topic(Operation::Describe, &t.name))
            .map(|t| describe(t, node))
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                if !access.topic(Operation::Describe, name) {
                    return missing(name, ResponseError::TopicAuthorizationFailed.code());
                }
                let exists = broker.topics.get(name).is_some();
                if !exists && allow_create && !access.may_create_topic(name) {
                    return missing(name, ResponseError::TopicAuthorizationFailed.code());
                }
                let found = if allow_create {
                    broker.topic_or_auto_create(name)
                } else {
                    Ok(broker.topics.get(name))
                };
                match found {
                    Ok(Some(topic)) => describe(&topic, node),
                    Ok(None) => missing(name, ResponseError::UnknownTopicOrPartition.code()),
                    Err(e) => missing(name, topic_error_code(&e).code()),
                }
            })
            .collect(),
    };
    let mut response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port)])
        .with_topics(topics);
    // Fields a version does not have must keep their defaults, or encoding fails.
    if version >= 1 {
        response.controller_id = BrokerId(node);
    }
    if version >= 2 {
        response.cluster_id = Some(str_bytes(&broker.config.broker.cluster_id));
    }
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = access.operations(
            ResourceType::Cluster,
            CLUSTER_NAME,
            super::CLUSTER_OPERATIONS,
        );
    }
    for topic in &mut response.topics {
        if version >= 8 && request.include_topic_authorized_operations && topic.error_code == 0 {
            let name = topic.name.as_ref().map(|n| n.0.as_str()).unwrap_or("");
            topic.topic_authorized_operations =
                access.operations(ResourceType::Topic, name, super::TOPIC_OPERATIONS);
        }
        if version < 10 {
            topic.topic_id = Uuid::nil();
        }
        if version < 7 {
            for p in &mut topic.partitions {
                p.leader_epoch = -1;
            }
        }
    }
    response
}

fn missing(name: &str, error_code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error_code)
        .with_name(Some(topic_name(name)))
        .with_topic_id(Uuid::nil())
}

fn describe(topic: &Topic, node: i32) -> MetadataResponseTopic {
    let partitions = (0..topic.partition_count())
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_is_internal(crate::topics::is_internal(&topic.name))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}
