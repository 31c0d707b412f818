//! `tern bench produce`, like `kafka-producer-perf-test`: many connections, each sending
//! Produce requests of `batch` records and waiting for the answers (up to `in_flight` at a
//! time), with latency per request.
//!
//! The client must never be the bottleneck: each connection encodes its request once and
//! then only re-stamps it (correlation id, timestamps, sequence, CRC) before each send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, ProduceRequest, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{ensure_topic, latency_histogram, Report};
use crate::cli::cluster::Cluster;
use crate::client::{error_name, ClientError, KafkaClient};
use crate::log::batch;

pub struct ProduceBench {
    pub topic: String,
    pub records: u64,
    pub record_size: usize,
    pub connections: usize,
    pub batch: usize,
    pub acks: i16,
    pub partitions: i32,
    /// Records per second over all connections; 0: as fast as the broker answers.
    pub rate: u64,
    pub idempotent: bool,
    pub in_flight: usize,
    pub compression: Compression,
}

/// What one connection did.
struct ConnectionResult {
    latencies: Histogram<u64>,
}

pub async fn run(
    bootstrap: &str,
    bench: ProduceBench,
    progress: Arc<AtomicU64>,
) -> Result<Report, ClientError> {
    if bench.idempotent && bench.acks != -1 {
        return Err(ClientError::Kafka(
            "--idempotent needs --acks all (as Kafka's producer does)".to_string(),
        ));
    }
    let mut cluster = Cluster::connect(bootstrap).await?;
    ensure_topic(&mut cluster, &bench.topic, bench.partitions).await?;
    let partitions = cluster.partitions(&bench.topic)?;
    let brokers = cluster.broker_addresses();
    let bench = Arc::new(bench);
    // Connections first, so that connecting is not part of the measured time.
    let mut producers = Vec::with_capacity(bench.connections);
    for i in 0..bench.connections {
        let (partition, leader) = partitions[i % partitions.len()];
        let addr = brokers
            .get(&leader)
            .cloned()
            .unwrap_or_else(|| bootstrap.to_string());
        let records = bench.records / bench.connections as u64
            + u64::from((i as u64) < bench.records % bench.connections as u64);
        producers.push(Producer::connect(&addr, &bench, partition, records, i).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(producers.len());
    for producer in producers {
        let progress = Arc::clone(&progress);
        tasks.push(tokio::spawn(producer.run(progress)));
    }
    let mut latencies = latency_histogram()?;
    let mut requests = 0u64;
    for task in tasks {
        let result = task
            .await
            .map_err(|e| ClientError::Kafka(format!("a producer task failed: {e}")))??;
        requests += result.latencies.len();
        latencies
            .add(&result.latencies)
            .map_err(|e| ClientError::Kafka(format!("latency histogram: {e}")))?;
    }
    let elapsed = started.elapsed();
    Ok(Report {
        records: bench.records,
        bytes: bench.records * bench.record_size as u64,
        requests: if bench.acks == 0 {
            bench.records.div_ceil(bench.batch as u64)
        } else {
            requests
        },
        elapsed,
        latencies: (bench.acks != 0).then_some(latencies),
    })
}

struct Producer {
    client: KafkaClient,
    version: i16,
    template: Template,
    /// The whole request frame (size prefix included), re-stamped before each send.
    frame: BytesMut,
    /// Where the record batch sits in `frame`.
    batch_at: std::ops::Range<usize>,
    records: u64,
    batch: usize,
    acks: i16,
    in_flight: usize,
    /// Time between two requests of this connection (rate limit), if any.
    interval: Option<Duration>,
    idempotent: bool,
}

impl Producer {
    async fn connect(
        addr: &str,
        bench: &ProduceBench,
        partition: i32,
        records: u64,
        index: usize,
    ) -> Result<Producer, ClientError> {
        let mut client = KafkaClient::connect_as(addr, "tern-bench").await?;
        let version = client.version_for(ApiKey::Produce, 3..=9)?;
        let (producer_id, producer_epoch) = if bench.idempotent {
            let (response, _) = client
                .send(
                    &InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(-1),
                    0..=4,
                )
                .await?;
            if response.error_code != 0 {
                return Err(ClientError::Kafka(format!(
                    "InitProducerId: {}",
                    error_name(response.error_code)
                )));
            }
            (response.producer_id.0, response.producer_epoch)
        } else {
            (-1, -1)
        };
        let template = Template {
            topic: bench.topic.clone(),
            partition,
            acks: bench.acks,
            version,
            record_size: bench.record_size,
            connection: index,
            producer_id,
            producer_epoch,
            compression: bench.compression,
        };
        let (frame, batch_at) = template.frame(bench.batch)?;
        let requests_per_second = bench.rate as f64 / bench.batch as f64 / bench.connections as f64;
        Ok(Producer {
            client,
            version,
            template,
            frame,
            batch_at,
            records,
            batch: bench.batch,
            acks: bench.acks,
            in_flight: bench.in_flight.max(1),
            interval: (bench.rate > 0)
                .then(|| Duration::from_secs_f64(1.0 / requests_per_second.max(1e-6))),
            idempotent: bench.idempotent,
        })
    }

    async fn run(mut self, progress: Arc<AtomicU64>) -> Result<ConnectionResult, ClientError> {
        let mut latencies = latency_histogram()?;
        let mut sent_at = std::collections::VecDeque::with_capacity(self.in_flight);
        let mut correlation_id = 0i32;
        let mut sequence = 0i32;
        let mut left = self.records;
        let mut next_send = tokio::time::Instant::now();
        while left > 0 || !sent_at.is_empty() {
            if left > 0 && sent_at.len() < self.in_flight {
                if let Some(interval) = self.interval {
                    tokio::time::sleep_until(next_send).await;
                    next_send += interval;
                }
                let count = (self.batch as u64).min(left) as usize;
                if count < self.batch {
                    // The last request of this connection carries fewer records.
                    (self.frame, self.batch_at) = self.template.frame(count)?;
                }
                correlation_id = correlation_id.wrapping_add(1);
                self.frame[8..12].copy_from_slice(&correlation_id.to_be_bytes());
                let base_sequence = if self.idempotent { sequence } else { -1 };
                batch::restamp(
                    &mut self.frame[self.batch_at.clone()],
                    crate::log::now_ms(),
                    base_sequence,
                );
                self.client.write_raw(&self.frame).await?;
                sequence = sequence.wrapping_add(count as i32);
                left -= count as u64;
                if self.acks == 0 {
                    progress.fetch_add(count as u64, Ordering::Relaxed);
                    continue;
                }
                sent_at.push_back((correlation_id, Instant::now(), count));
                if left > 0 && sent_at.len() < self.in_flight {
                    continue;
                }
            }
            let Some((id, at, count)) = sent_at.pop_front() else {
                break;
            };
            let response = self
                .client
                .receive::<ProduceRequest>(self.version, id)
                .await?;
            for topic in &response.responses {
                for p in &topic.partition_responses {
                    if p.error_code != 0 {
                        return Err(ClientError::Kafka(format!(
                            "produce to partition {} failed: {}{}",
                            p.index,
                            error_name(p.error_code),
                            p.error_message
                                .as_ref()
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        )));
                    }
                }
            }
            let micros = at.elapsed().as_micros().min(u64::MAX as u128) as u64;
            latencies.saturating_record(micros.max(1));
            progress.fetch_add(count as u64, Ordering::Relaxed);
        }
        Ok(ConnectionResult { latencies })
    }
}

/// What a connection's requests are made of.
struct Template {
    topic: String,
    partition: i32,
    acks: i16,
    version: i16,
    record_size: usize,
    connection: usize,
    producer_id: i64,
    producer_epoch: i16,
    compression: Compression,
}

impl Template {
    /// A whole Produce request frame (size prefix included) carrying one batch of `count`
    /// records, and where that batch starts in the frame.
    fn frame(&self, count: usize) -> Result<(BytesMut, std::ops::Range<usize>), ClientError> {
        let batch_bytes = self.batch(count)?;
        let request = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(self.partition)
                    .with_records(Some(batch_bytes.clone()))])]);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(self.version)
            .with_correlation_id(0)
            .with_client_id(Some(StrBytes::from_static_str("tern-bench")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0, 0, 0, 0]);
        let encode_error = |e: anyhow::Error| ClientError::Encode(format!("{e:#}"));
        header
            .encode(
                &mut frame,
                ApiKey::Produce.request_header_version(self.version),
            )
            .map_err(encode_error)?;
        request
            .encode(&mut frame, self.version)
            .map_err(encode_error)?;
        let size = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        // The records are the last field but for the tagged-field counts of the partition,
        // the topic and the request (one zero byte each) in flexible versions.
        let trailing = if self.version >= 9 { 3 } else { 0 };
        let batch_at = frame.len() - trailing - batch_bytes.len();
        if frame[batch_at..batch_at + batch_bytes.len()] != batch_bytes[..] {
            return Err(ClientError::Encode(
                "the record batch is not where the request layout puts it".to_string(),
            ));
        }
        Ok((frame, batch_at..batch_at + batch_bytes.len()))
    }

    /// One batch of `count` records of `record_size` bytes each (printable and varied per
    /// connection, like kafka-producer-perf-test's random payload).
    fn batch(&self, count: usize) -> Result<Bytes, ClientError> {
        let now = crate::log::now_ms();
        let records: Vec<Record> = (0..count)
            .map(|i| {
                let value: Vec<u8> = (0..self.record_size)
                    .map(|j| b'A' + ((self.connection * 31 + i * 7 + j * 13) % 26) as u8)
                    .collect();
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: self.producer_id,
                    producer_epoch: self.producer_epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    // Without a producer id the batch's base sequence must come out as -1.
                    sequence: if self.producer_id >= 0 {
                        i as i32
                    } else {
                        i as i32 - 1
                    },
                    timestamp: now,
                    key: None,
                    value: Some(Bytes::from(value)),
                    headers: Default::default(),
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        // lz4 through tern's own codec (the one the broker writes with): the protocol
        // crate's is not built in.
        let lz4 = |plain: &mut BytesMut, out: &mut BytesMut, compression: Compression| {
            match compression {
                Compression::Lz4 => {
                    out.extend_from_slice(&crate::log::codec::compress(batch::Codec::Lz4, plain)?)
                }
                _ => out.extend_from_slice(plain),
            }
            Ok(())
        };
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: self.compression,
            },
            Some(lz4),
        )
        .map_err(|e| ClientError::Encode(format!("{e:#}")))?;
        Ok(buf.freeze())
    }
}
