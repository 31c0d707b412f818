//! `tern records delete`: move partitions' log start offset forward (like
//! kafka-delete-records.sh); the records before it are no longer readable.

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{DeleteRecordsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{by_leader, Cluster};
use crate::client::{check_partition, ClientError};

/// `before` = -1 deletes up to the high watermark.
pub async fn run(
    cluster: &mut Cluster,
    topic: &str,
    partition: Option<i32>,
    before: i64,
) -> Result<(), ClientError> {
    let partitions = cluster.partitions(topic)?;
    let by_leader = by_leader(&partitions, |p| partition.is_none_or(|want| want == p));
    if by_leader.is_empty() {
        return Err(ClientError::Kafka(format!(
            "topic `{topic}` has no partition {partition:?}"
        )));
    }
    for (leader, ps) in by_leader {
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    ps.iter()
                        .map(|p| {
                            DeleteRecordsPartition::default()
                                .with_partition_index(*p)
                                .with_offset(before)
                        })
                        .collect(),
                )]);
        let (response, _) = cluster.node(leader).await?.send(&request, 0..=1).await?;
        for t in &response.topics {
            for p in &t.partitions {
                check_partition(p.partition_index, p.error_code)?;
                println!(
                    "{topic}:{}\tlow watermark {}",
                    p.partition_index, p.low_watermark
                );
            }
        }
    }
    Ok(())
}
