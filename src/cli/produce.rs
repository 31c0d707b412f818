//! `tern produce`: one record per stdin line (like kafka-console-producer), optionally
//! `key<separator>value`. Keyed records go to the partition the Java client would pick.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::cluster::{leader_of, Cluster};
use crate::client::records::{encode_batch, Outgoing};
use crate::client::{error_name, partitioner, ClientError};

pub struct ProduceOptions {
    pub topic: String,
    pub key_separator: Option<String>,
    pub partition: Option<i32>,
    pub acks: i16,
    pub batch_size: usize,
    pub linger: Duration,
}

pub async fn run(cluster: &mut Cluster, options: ProduceOptions) -> Result<u64, ClientError> {
    cluster
        .refresh(Some(std::slice::from_ref(&options.topic)))
        .await?;
    let partitions = cluster.partitions(&options.topic)?;
    if partitions.is_empty() {
        return Err(ClientError::Kafka(format!(
            "topic `{}` has no partitions",
            options.topic
        )));
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: Vec<(i32, Outgoing)> = Vec::new();
    let mut next_unkeyed = 0usize;
    let mut sent = 0u64;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = tokio::time::sleep(options.linger), if !pending.is_empty() => {
                sent += flush(cluster, &options, &partitions, &mut pending).await?;
                continue;
            }
        };
        let Some(line) = line else { break };
        let (key, value) = match &options.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                None => {
                    return Err(ClientError::Kafka(format!(
                        "line {} has no key separator `{sep}`: {line}",
                        sent + pending.len() as u64 + 1
                    )))
                }
            },
            None => (None, Bytes::from(line)),
        };
        let partition = match (options.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partitioner::partition_for_key(k, partitions.len() as i32),
            (None, None) => {
                // Sticky per batch, like the Java client's default for unkeyed records.
                partitions[next_unkeyed % partitions.len()].0
            }
        };
        pending.push((
            partition,
            Outgoing {
                key,
                value,
                headers: Vec::new(),
                timestamp: crate::log::now_ms(),
            },
        ));
        if pending.len() >= options.batch_size {
            sent += flush(cluster, &options, &partitions, &mut pending).await?;
            next_unkeyed += 1;
        }
    }
    sent += flush(cluster, &options, &partitions, &mut pending).await?;
    Ok(sent)
}

/// Sends the pending records, one request per leader, and checks every partition's answer.
async fn flush(
    cluster: &mut Cluster,
    options: &ProduceOptions,
    partitions: &[(i32, i32)],
    pending: &mut Vec<(i32, Outgoing)>,
) -> Result<u64, ClientError> {
    if pending.is_empty() {
        return Ok(0);
    }
    let records = std::mem::take(pending);
    let count = records.len() as u64;
    let mut by_partition: std::collections::BTreeMap<i32, Vec<Outgoing>> = Default::default();
    for (p, r) in records {
        by_partition.entry(p).or_default().push(r);
    }
    let mut by_leader: std::collections::BTreeMap<i32, Vec<PartitionProduceData>> =
        Default::default();
    for (p, records) in by_partition {
        let leader = leader_of(partitions, p).ok_or_else(|| {
            ClientError::Kafka(format!(
                "partition {p} does not exist in `{}`",
                options.topic
            ))
        })?;
        by_leader.entry(leader).or_default().push(
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(encode_batch(&records)?)),
        );
    }
    for (leader, data) in by_leader {
        let request = ProduceRequest::default()
            .with_acks(options.acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(options.topic.clone())))
                .with_partition_data(data)]);
        let client = cluster.node(leader).await?;
        if options.acks == 0 {
            client.send_no_response(&request, 3..=8).await?;
            continue;
        }
        let (response, _) = client.send(&request, 3..=8).await?;
        for t in &response.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    let detail = p
                        .error_message
                        .as_ref()
                        .map(|m| format!(": {}", m.as_str()))
                        .unwrap_or_default();
                    return Err(ClientError::Kafka(format!(
                        "partition {} refused the records with {}{detail}",
                        p.index,
                        error_name(p.error_code)
                    )));
                }
            }
        }
    }
    Ok(count)
}
