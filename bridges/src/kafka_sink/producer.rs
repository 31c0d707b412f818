//! The sink as an idempotent Kafka producer: one producer id from the cluster, one
//! sequence per target partition, acks=all. A retried request carries the same
//! sequences, so the cluster writes it once; after an error that breaks the sequence the
//! sink bumps its epoch (KIP-360: InitProducerId v3+ with its current id and epoch; a new
//! producer id where the cluster cannot) and starts every sequence at 0 again.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::{self, ProducerStamp};
use super::cluster::{Cluster, SinkError};

/// The sink's producer identity and the next sequence of each target partition.
#[derive(Debug)]
pub struct Producer {
    pub producer_id: i64,
    pub epoch: i16,
    sequences: HashMap<(String, i32), i32>,
}

impl Producer {
    /// Asks the cluster for a producer id (InitProducerId without a transactional id);
    /// with `previous`, for that id with its epoch bumped, falling back to a new id.
    pub async fn init(
        cluster: &mut Cluster,
        previous: Option<(i64, i16)>,
    ) -> Result<Producer, SinkError> {
        let node = cluster
            .any_broker()
            .ok_or_else(|| SinkError::NoBroker("the metadata named no broker".into()))?;
        if let Some((id, epoch)) = previous {
            let bump = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch);
            match cluster.request(node, &bump, 3..=4).await {
                Ok(r) if r.error_code == 0 && r.producer_id.0 == id => {
                    return Ok(Producer {
                        producer_id: id,
                        epoch: r.producer_epoch,
                        sequences: HashMap::new(),
                    })
                }
                // Too old a cluster, or it refused: a new producer id does as well.
                Ok(_)
                | Err(SinkError::Client(crate::kafka_client::ClientError::Unsupported {
                    ..
                })) => {}
                Err(e) => return Err(e),
            }
        }
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(-1)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response = cluster.request(node, &request, 0..=4).await?;
        if response.error_code != 0 {
            return Err(SinkError::kafka("InitProducerId", response.error_code));
        }
        Ok(Producer {
            producer_id: response.producer_id.0,
            epoch: response.producer_epoch,
            sequences: HashMap::new(),
        })
    }

    pub fn sequence(&self, topic: &str, partition: i32) -> i32 {
        self.sequences
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Stamps `batches` for one target partition, starting at its next sequence; returns
    /// the bytes to send (the sequence moves only once the cluster acknowledged them).
    pub fn stamp<'a>(
        &self,
        topic: &str,
        partition: i32,
        batches: impl Iterator<Item = &'a batch::StoredBatch<'a>>,
    ) -> Vec<u8> {
        let mut sequence = self.sequence(topic, partition);
        let mut out = Vec::new();
        for b in batches {
            let stamp = ProducerStamp {
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                base_sequence: sequence,
            };
            batch::append_stamped(&mut out, b, stamp);
            sequence = batch::next_sequence(sequence, b.offset_count());
        }
        out
    }

    /// The cluster acknowledged `count` offsets for the partition.
    pub fn acknowledged(&mut self, topic: &str, partition: i32, count: i64) {
        let next = batch::next_sequence(self.sequence(topic, partition), count);
        self.sequences.insert((topic.to_string(), partition), next);
    }

    /// One batch of small records (offset syncs) stamped for the partition.
    pub fn encode_records(
        &self,
        topic: &str,
        partition: i32,
        records: &[(Bytes, Bytes, i64)],
    ) -> Result<Vec<u8>, SinkError> {
        let first = self.sequence(topic, partition);
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, value, timestamp))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: batch::next_sequence(first, i as i64),
                timestamp: *timestamp,
                key: Some(key.clone()),
                value: Some(value.clone()),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| {
            SinkError::Client(crate::kafka_client::ClientError::Encode(format!("{e:#}")))
        })?;
        Ok(buf.to_vec())
    }
}

/// What the cluster answered for one partition of a Produce request.
#[derive(Debug, Clone, Copy)]
pub struct PartitionAck {
    pub error_code: i16,
    pub base_offset: i64,
}

/// Sends one Produce request (acks=all) to `node` with the given partitions' bytes;
/// answers per (topic, partition).
pub async fn produce(
    cluster: &mut Cluster,
    node: i32,
    timeout_ms: i32,
    parts: Vec<(String, i32, Vec<u8>)>,
) -> Result<HashMap<(String, i32), PartitionAck>, SinkError> {
    let mut by_topic: Vec<TopicProduceData> = Vec::new();
    for (topic, partition, bytes) in parts {
        let data = PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(Bytes::from(bytes)));
        match by_topic.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partition_data.push(data),
            None => by_topic.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let request = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(by_topic);
    let response = cluster.request(node, &request, 3..=9).await?;
    let mut acks = HashMap::new();
    for topic in response.responses {
        for p in topic.partition_responses {
            acks.insert(
                (topic.name.0.to_string(), p.index),
                PartitionAck {
                    error_code: p.error_code,
                    base_offset: p.base_offset,
                },
            );
        }
    }
    Ok(acks)
}
