//! Routing for the CLI: which broker leads which partition, and one connection per broker.
//! Against tern that is always the same single node; against a Kafka cluster requests go
//! to partition leaders and admin requests to the controller.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::{error_name, ClientError, KafkaClient};

pub struct Cluster {
    bootstrap: String,
    brokers: HashMap<i32, String>,
    connections: HashMap<i32, KafkaClient>,
    pub controller: i32,
    pub metadata: MetadataResponse,
}

impl Cluster {
    pub async fn connect(bootstrap: &str) -> Result<Cluster, ClientError> {
        let mut cluster = Cluster {
            bootstrap: bootstrap.to_string(),
            brokers: HashMap::new(),
            connections: HashMap::new(),
            controller: -1,
            metadata: MetadataResponse::default(),
        };
        cluster.refresh(None).await?;
        Ok(cluster)
    }

    /// Reloads metadata (all topics, or just `topics`; those may be auto-created).
    pub async fn refresh(&mut self, topics: Option<&[String]>) -> Result<(), ClientError> {
        let request = MetadataRequest::default().with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                })
                .collect()
        }));
        let client = self.bootstrap_client().await?;
        let (metadata, _) = client.send(&request, 1..=9).await?;
        self.brokers = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.controller = metadata.controller_id.0;
        self.metadata = metadata;
        Ok(())
    }

    async fn bootstrap_client(&mut self) -> Result<&mut KafkaClient, ClientError> {
        if let Entry::Vacant(slot) = self.connections.entry(-1) {
            slot.insert(KafkaClient::connect(&self.bootstrap).await?);
        }
        self.connections
            .get_mut(&-1)
            .ok_or_else(|| ClientError::Kafka("bootstrap connection lost".to_string()))
    }

    /// The connection to broker `node` (the bootstrap connection when it is unknown).
    pub async fn node(&mut self, node: i32) -> Result<&mut KafkaClient, ClientError> {
        let Some(addr) = self.brokers.get(&node).cloned() else {
            return self.bootstrap_client().await;
        };
        if let Entry::Vacant(slot) = self.connections.entry(node) {
            slot.insert(KafkaClient::connect(&addr).await?);
        }
        self.connections
            .get_mut(&node)
            .ok_or_else(|| ClientError::Kafka(format!("connection to broker {node} lost")))
    }

    pub async fn controller(&mut self) -> Result<&mut KafkaClient, ClientError> {
        let controller = self.controller;
        self.node(controller).await
    }

    /// Host:port of every broker the metadata named, by node id.
    pub fn broker_addresses(&self) -> HashMap<i32, String> {
        self.brokers.clone()
    }

    /// Partitions of `topic` with their leaders, or the topic's error.
    pub fn partitions(&self, topic: &str) -> Result<Vec<(i32, i32)>, ClientError> {
        let t = self
            .metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| ClientError::Kafka(format!("unknown topic `{topic}`")))?;
        if t.error_code != 0 {
            return Err(ClientError::Kafka(format!(
                "topic `{topic}`: {}",
                error_name(t.error_code)
            )));
        }
        let mut partitions: Vec<(i32, i32)> = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        partitions.sort_unstable();
        Ok(partitions)
    }
}

/// Partition indexes grouped by their leader, for one request per broker.
pub fn by_leader(
    partitions: &[(i32, i32)],
    keep: impl Fn(i32) -> bool,
) -> std::collections::BTreeMap<i32, Vec<i32>> {
    let mut out: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for (p, leader) in partitions {
        if keep(*p) {
            out.entry(*leader).or_default().push(*p);
        }
    }
    out
}

pub fn leader_of(partitions: &[(i32, i32)], partition: i32) -> Option<i32> {
    partitions
        .iter()
        .find(|(p, _)| *p == partition)
        .map(|(_, l)| *l)
}
