//! What the sink asks the cluster besides Produce: where target partitions end
//! (ListOffsets), and creating target topics or partitions.

use std::collections::HashMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, ListOffsetsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::cluster::{Cluster, SinkError};

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// The end offset (next offset to be written) of each partition, asked of its leader.
/// Partitions whose leader answers with an error are left out.
pub async fn end_offsets(
    cluster: &mut Cluster,
    node: i32,
    partitions: &[(String, i32)],
) -> Result<HashMap<(String, i32), i64>, SinkError> {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for (topic, partition) in partitions {
        let p = ListOffsetsPartition::default()
            .with_partition_index(*partition)
            .with_current_leader_epoch(-1)
            .with_timestamp(-1);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(topics);
    let response = cluster.request(node, &request, 1..=7).await?;
    let mut ends = HashMap::new();
    for topic in response.topics {
        for p in topic.partitions {
            if p.error_code == 0 {
                ends.insert((topic.name.0.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(ends)
}

/// Creates `topic` with `partitions` partitions, or grows it to that many. A topic that
/// already exists (someone else was faster) is fine.
pub async fn ensure_partitions(
    cluster: &mut Cluster,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    timeout_ms: i32,
) -> Result<(), SinkError> {
    let node = cluster
        .any_broker()
        .ok_or_else(|| SinkError::NoBroker("the metadata named no broker".into()))?;
    let existing = cluster.partition_count(topic) as i32;
    if existing == 0 {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)])
            .with_timeout_ms(timeout_ms);
        let response = cluster.request(node, &request, 2..=5).await?;
        for t in response.topics {
            let exists = ResponseError::try_from_code(t.error_code)
                == Some(ResponseError::TopicAlreadyExists);
            if t.error_code != 0 && !exists {
                return Err(SinkError::kafka(
                    format!("creating topic {topic}"),
                    t.error_code,
                ));
            }
        }
    } else if existing < partitions {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(partitions)
                .with_assignments(None)])
            .with_timeout_ms(timeout_ms);
        let response = cluster.request(node, &request, 0..=3).await?;
        for t in response.results {
            if t.error_code != 0 {
                return Err(SinkError::kafka(
                    format!("growing topic {topic} to {partitions} partitions"),
                    t.error_code,
                ));
            }
        }
    }
    Ok(())
}
