//! The Kafka sink's port into tern (`tern_bridges::kafka_sink::ports::SinkLog`): stored
//! batches are read as they are on disk, and a sink's cursors are committed offsets of
//! the group `tern-sink-<name>` (so `tern groups describe tern-sink-<name>` shows how far
//! forwarding got), with the target partition's end in the commit metadata.

use std::sync::Arc;

use bytes::Bytes;
use tern_bridges::kafka_sink::config::cursor_group;
use tern_bridges::kafka_sink::ports::{PortError, SinkCursor, SinkLog};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::groups::offset_records::Committed;
use crate::log::{now_ms, LogError, Partition};

/// Commit metadata of a sink cursor: `tern sink target_end=<offset>`.
const METADATA_PREFIX: &str = "tern sink target_end=";

pub struct TernSinkLog {
    broker: Arc<Broker>,
}

impl TernSinkLog {
    pub fn new(broker: Arc<Broker>) -> TernSinkLog {
        TernSinkLog { broker }
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, PortError> {
        self.broker
            .topics
            .get(topic)
            .and_then(|t| t.partition(partition))
            .ok_or_else(|| PortError::Unavailable(format!("{topic}-{partition} does not exist")))
    }
}

fn unavailable(e: impl ToString) -> PortError {
    PortError::Unavailable(e.to_string())
}

impl SinkLog for TernSinkLog {
    fn topics(&self) -> Vec<(String, i32)> {
        self.broker
            .topics
            .list()
            .into_iter()
            .filter(|t| !crate::topics::is_internal(&t.name))
            .map(|t| (t.name.clone(), t.partition_count()))
            .collect()
    }

    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PortError> {
        let log = self.partition(topic, partition)?;
        let log = log.lock();
        Ok((log.log_start_offset(), log.high_watermark()))
    }

    fn read_batches(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, PortError> {
        let log = self.partition(topic, partition)?;
        match tokio::task::block_in_place(|| log.read(offset, max_bytes)) {
            Ok(read) => Ok(Bytes::from(read.bytes)),
            Err(LogError::OffsetOutOfRange { start, .. }) if offset < start => {
                Err(PortError::OutOfRange { offset, start })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn durable_events(&self) -> watch::Receiver<u64> {
        self.broker.group_commit.durable_events()
    }

    fn load_cursors(&self, sink: &str) -> Result<Vec<SinkCursor>, PortError> {
        Ok(self
            .broker
            .groups
            .offsets
            .get(&cursor_group(sink))
            .into_iter()
            .map(|(topic, partition, c)| SinkCursor {
                topic,
                partition,
                offset: c.offset,
                target_end: c
                    .metadata
                    .strip_prefix(METADATA_PREFIX)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(-1),
            })
            .collect())
    }

    async fn save_cursors(&self, sink: &str, cursors: Vec<SinkCursor>) -> Result<(), PortError> {
        let now = now_ms();
        let entries: Vec<_> = cursors
            .into_iter()
            .map(|c| {
                (
                    c.topic,
                    c.partition,
                    Committed {
                        offset: c.offset,
                        leader_epoch: -1,
                        metadata: format!("{METADATA_PREFIX}{}", c.target_end),
                        commit_ms: now,
                    },
                )
            })
            .collect();
        self.broker
            .groups
            .offsets
            .commit(&cursor_group(sink), &entries)
            .await
            .map_err(unavailable)
    }
}

/// Starts every `[[sinks.kafka]]`.
pub fn start_sinks(
    broker: &Arc<Broker>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let compiled = tern_bridges::kafka_sink::config::compile(&broker.config.sinks.kafka)
        .map_err(|e| e.to_string())?;
    let log = Arc::new(TernSinkLog::new(Arc::clone(broker)));
    let mut tasks = Vec::new();
    for sink in compiled {
        let status = tern_bridges::kafka_sink::status::SharedStatus::default();
        if let Ok(mut list) = broker.sink_status.lock() {
            list.push(Arc::clone(&status));
        }
        let meters = broker.metrics.sinks.meters(&sink.config.name);
        tasks.push(tokio::spawn(tern_bridges::kafka_sink::forwarder::run(
            Arc::new(sink),
            Arc::clone(&log),
            meters,
            status,
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}
