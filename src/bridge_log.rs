//! The MQTT bridge's port into tern (`tern_bridges::ports::TernLog`): appends go through
//! the same path as Kafka produce requests (one v2 batch per partition, group-commit
//! fsync before the bridge acknowledges), keys are partitioned with the Java client's
//! murmur2, and outbound cursors are committed offsets of the group `tern-mqtt-<bridge>`
//! (so `tern groups describe tern-mqtt-<bridge>` shows how far publishing got).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tern_bridges::ports::{InboundRecord, PortError, StoredRead, StoredRecord, TernLog};
use tokio::sync::watch;
use tracing::warn;

use crate::broker::Broker;
use crate::client::partitioner::partition_for_key;
use crate::client::records::{encode_batch, Outgoing};
use crate::groups::offset_records::Committed;
use crate::log::{now_ms, LogError, Partition};
use crate::topics::{Topic, TopicError};

/// Per-record overhead of a v2 record beyond key, value and headers (varints, deltas).
const RECORD_OVERHEAD: usize = 32;
/// The v2 batch header.
const BATCH_OVERHEAD: usize = 61;

pub struct BridgeLog {
    broker: Arc<Broker>,
    round_robin: AtomicU32,
}

impl BridgeLog {
    pub fn new(broker: Arc<Broker>) -> BridgeLog {
        BridgeLog {
            broker,
            round_robin: AtomicU32::new(0),
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, PortError> {
        self.broker
            .topics
            .get(name)
            .ok_or_else(|| PortError::Unavailable(format!("topic {name} does not exist")))
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, PortError> {
        self.topic(topic)?
            .partition(partition)
            .ok_or_else(|| PortError::Unavailable(format!("{topic}-{partition} does not exist")))
    }
}

pub fn cursor_group(bridge: &str) -> String {
    format!("tern-mqtt-{bridge}")
}

fn unavailable(e: impl ToString) -> PortError {
    PortError::Unavailable(e.to_string())
}

fn record_size(r: &InboundRecord) -> usize {
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.len()
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
        + RECORD_OVERHEAD
}

impl TernLog for BridgeLog {
    fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32, PortError> {
        if let Some(t) = self.broker.topics.get(topic) {
            return Ok(t.partition_count());
        }
        match self
            .broker
            .topics
            .create(topic, partitions, BTreeMap::new())
        {
            Ok(t) => Ok(t.partition_count()),
            Err(TopicError::AlreadyExists(_)) => Ok(self.topic(topic)?.partition_count()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn append(&self, topic: &str, records: &[InboundRecord]) -> Result<usize, PortError> {
        let t = self.topic(topic)?;
        let count = t.partition_count().max(1);
        let mut by_partition: BTreeMap<i32, Vec<&InboundRecord>> = BTreeMap::new();
        for r in records {
            let p = match &r.key {
                Some(key) => partition_for_key(key, count),
                None => (self.round_robin.fetch_add(1, Ordering::Relaxed) % count as u32) as i32,
            };
            by_partition.entry(p).or_default().push(r);
        }
        let now = now_ms();
        let mut rejected = 0;
        let mut pending = Vec::new();
        for (p, records) in by_partition {
            let log = t
                .partition(p)
                .ok_or_else(|| unavailable(format!("{topic}-{p} disappeared")))?;
            let max = log.lock().config().max_message_bytes;
            // Batches no larger than max.message.bytes; a record alone above it is left out.
            let mut chunk: Vec<Outgoing> = Vec::new();
            let mut chunk_bytes = BATCH_OVERHEAD;
            let mut chunks = Vec::new();
            for r in records {
                let size = record_size(r);
                if size + BATCH_OVERHEAD > max {
                    warn!(
                        topic,
                        partition = p,
                        size,
                        max,
                        "MQTT message larger than max.message.bytes; not stored"
                    );
                    rejected += 1;
                    continue;
                }
                if chunk_bytes + size > max && !chunk.is_empty() {
                    chunks.push(std::mem::take(&mut chunk));
                    chunk_bytes = BATCH_OVERHEAD;
                }
                chunk_bytes += size;
                chunk.push(Outgoing {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                    timestamp: r.timestamp_ms,
                });
            }
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
            let mut bytes = Vec::new();
            for c in &chunks {
                bytes.extend_from_slice(&encode_batch(c).map_err(unavailable)?);
            }
            if bytes.is_empty() {
                continue;
            }
            let appended = self
                .broker
                .append(topic, &log, &bytes, now)
                .map_err(unavailable)?;
            pending.push((log, appended));
        }
        for (log, appended) in pending {
            self.broker
                .group_commit
                .wait_durable(log, appended.upto, appended.generation)
                .await
                .map_err(unavailable)?;
        }
        Ok(rejected)
    }

    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<StoredRead, PortError> {
        let log = self.partition(topic, partition)?;
        let result = match log.read(offset, max_bytes) {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { start, .. }) if offset < start => {
                return Err(PortError::OutOfRange { offset, start })
            }
            Err(e) => return Err(unavailable(e)),
        };
        let mut read = StoredRead {
            records: Vec::new(),
            end: offset,
        };
        for batch in crate::log::records::decode_batches(&result.bytes) {
            read.end = read.end.max(batch.header.next_offset());
            match batch.records {
                Ok(records) => read.records.extend(
                    records
                        .into_iter()
                        .filter(|r| r.offset >= offset && !r.control)
                        .map(|r| StoredRecord {
                            offset: r.offset,
                            key: r.key,
                            value: r.value.unwrap_or_default(),
                        }),
                ),
                Err(e) => {
                    self.broker.metrics.corrupt_batches.inc();
                    warn!(topic, partition, base_offset = batch.header.base_offset,
                        last_offset = batch.header.last_offset(), error = %e,
                        "a stored batch cannot be decoded; the MQTT bridge skips it");
                }
            }
        }
        Ok(read)
    }

    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PortError> {
        Ok(self.partition(topic, partition)?.bounds())
    }

    fn durable_events(&self) -> watch::Receiver<u64> {
        self.broker.group_commit.durable_events()
    }

    fn load_cursor(
        &self,
        bridge: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, PortError> {
        let entries = self.broker.groups.offsets.get(&cursor_group(bridge));
        Ok(entries
            .into_iter()
            .find(|(t, p, _)| t == topic && *p == partition)
            .map(|(_, _, c)| c.offset))
    }

    async fn save_cursors(
        &self,
        bridge: &str,
        cursors: Vec<(String, i32, i64)>,
    ) -> Result<(), PortError> {
        let now = now_ms();
        let entries: Vec<_> = cursors
            .into_iter()
            .map(|(topic, partition, offset)| {
                (
                    topic,
                    partition,
                    Committed {
                        offset,
                        leader_epoch: -1,
                        metadata: "tern mqtt bridge".to_string(),
                        commit_ms: now,
                    },
                )
            })
            .collect();
        self.broker
            .groups
            .offsets
            .commit(&cursor_group(bridge), &entries)
            .await
            .map_err(unavailable)
    }
}

/// Starts the inbound and outbound side of every `[[bridges.mqtt]]` bridge.
pub fn start_bridges(
    broker: &Arc<Broker>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let compiled =
        tern_bridges::config::compile(&broker.config.bridges.mqtt).map_err(|e| e.to_string())?;
    let log = Arc::new(BridgeLog::new(Arc::clone(broker)));
    let mut tasks = Vec::new();
    for bridge in compiled {
        let tls = match &bridge.config.tls {
            Some(options) => Some(
                tern_bridges::tls::client_config(options)
                    .map_err(|e| format!("bridges.mqtt `{}`: {e}", bridge.config.name))?,
            ),
            None => None,
        };
        let bridge = Arc::new(bridge);
        let name = bridge.config.name.as_str();
        tracing::info!(bridge = name, host = %bridge.config.host, port = bridge.port,
            inbound = bridge.inbound.len(), outbound = bridge.outbound.len(), "MQTT bridge starting");
        if !bridge.inbound.is_empty() {
            tasks.push(tokio::spawn(tern_bridges::inbound::run(
                Arc::clone(&bridge),
                Arc::clone(&log),
                broker.metrics.mqtt.meters(name, "in"),
                tls.clone(),
                shutdown.clone(),
            )));
        }
        if !bridge.outbound.is_empty() {
            tasks.push(tokio::spawn(tern_bridges::outbound::run(
                Arc::clone(&bridge),
                Arc::clone(&log),
                broker.metrics.mqtt.meters(name, "out"),
                tls,
                shutdown.clone(),
            )));
        }
    }
    Ok(tasks)
}
