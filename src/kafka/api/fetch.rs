//! Fetch: whole batches from the durable log, long-polling up to `max_wait_ms` until
//! `min_bytes` are available. A fetch offset inside a batch returns the whole batch; the
//! consumer skips the records before its offset, as with Kafka.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::Reply;
use crate::broker::Broker;
use crate::kafka::errors::log_error_code;
use crate::log::batch::BatchHeader;

/// Upper bound on a long poll, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub fn handle(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> Reply {
    let broker = Arc::clone(broker);
    Reply::later(version, async move {
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        let min_bytes = request.min_bytes.max(0) as usize;
        let mut events = broker.group_commit.durable_events();
        loop {
            events.borrow_and_update();
            let (response, bytes, errors) = read_all(&broker, &request, version);
            if bytes >= min_bytes.max(1) || errors || Instant::now() >= deadline {
                account(&broker, &response);
                return response;
            }
            tokio::select! {
                changed = events.changed() => if changed.is_err() {
                    return response;
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    })
}

fn read_all(broker: &Broker, request: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let mut budget =
        (request.max_bytes.max(0) as usize).min(broker.config.kafka.max_fetch_bytes as usize);
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for fetch_topic in &request.topics {
        let name = fetch_topic.topic.0.to_string();
        let topic = broker.topics.get(&name);
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for fp in &fetch_topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(BrokerId(-1));
            match topic.as_ref().and_then(|t| t.partition(fp.partition)) {
                None => {
                    data.error_code = ResponseError::UnknownTopicOrPartition.code();
                    errors = true;
                }
                Some(partition) => {
                    // KIP-74: the first partition may exceed the budget by one batch.
                    let limit = (fp.partition_max_bytes.max(0) as usize).min(budget);
                    let first = total == 0;
                    let result =
                        partition.read(fp.fetch_offset, if first { limit.max(1) } else { limit });
                    match result {
                        Ok(read) => {
                            data.high_watermark = read.high_watermark;
                            data.last_stable_offset = read.high_watermark;
                            data.log_start_offset = read.log_start_offset;
                            if !read.bytes.is_empty() && (first || read.bytes.len() <= budget) {
                                total += read.bytes.len();
                                budget = budget.saturating_sub(read.bytes.len());
                                data.records = Some(Bytes::from(read.bytes));
                            }
                        }
                        Err(e) => {
                            let log = partition.lock();
                            data.high_watermark = log.high_watermark();
                            data.last_stable_offset = log.high_watermark();
                            data.log_start_offset = log.log_start_offset();
                            data.error_code = log_error_code(&e).code();
                            errors = true;
                        }
                    }
                }
            }
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    let mut response = FetchResponse::default().with_responses(topics);
    if version < 5 {
        for topic in &mut response.responses {
            for p in &mut topic.partitions {
                p.log_start_offset = -1;
            }
        }
    }
    (response, total, errors)
}

/// Counts records and bytes served, from the batch headers.
fn account(broker: &Broker, response: &FetchResponse) {
    for topic in &response.responses {
        let mut records = 0u64;
        let mut bytes = 0u64;
        for p in &topic.partitions {
            if let Some(data) = &p.records {
                bytes += data.len() as u64;
                let mut rest = &data[..];
                while let Ok(h) = BatchHeader::parse(rest) {
                    records += h.record_count.max(0) as u64;
                    rest = &rest[h.total_len().min(rest.len())..];
                }
            }
        }
        if bytes > 0 {
            broker.metrics.record_fetch(&topic.topic.0, records, bytes);
        }
    }
}
