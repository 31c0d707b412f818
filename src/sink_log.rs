//! The Kafka sink's port into tern (`tern_bridges::kafka_sink::ports::SinkLog`): stored
//! batches are read as they are on disk, and a sink's cursors are committed offsets of
//! the group `tern-sink-<name>` (so `tern groups describe tern-sink-<name>` shows how far
//! forwarding got), with the target partition's end in the commit metadata.

use std::sync::Arc;

use bytes::Bytes;
use tern_bridges::kafka_sink::config::{cursor_group, CompiledSink};
use tern_bridges::kafka_sink::ports::{PortError, SinkCursor, SinkLog};
use tern_bridges::kafka_sink::progress::SinkProgress;
use tern_bridges::kafka_sink::status::SharedStatus;
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

/// Batches a compacted log thinned (fewer records than offsets) as a producer would send
/// them, which is all a Kafka broker accepts: the records renumbered from the batch's base
/// offset, then a record-less control batch over the rest of its offsets, which the sink
/// steps over without sending (it never forwards control batches). Other batches are
/// passed through untouched (and nothing is copied when none is thinned).
fn as_a_producer_sends(bytes: Vec<u8>) -> Vec<u8> {
    use crate::log::batch::{self, BatchHeader};
    use crate::log::compaction::thin;
    let thinned = |h: &BatchHeader| !h.is_control() && h.record_count != h.last_offset_delta + 1;
    let mut headers = Vec::new();
    let mut rest = &bytes[..];
    while let Ok(h) = BatchHeader::parse(rest) {
        if h.total_len() > rest.len() {
            break;
        }
        headers.push(h);
        rest = &rest[h.total_len()..];
    }
    if !headers.iter().any(thinned) {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for h in headers {
        let stored = &bytes[at..at + h.total_len()];
        at += h.total_len();
        if !thinned(&h) {
            out.extend_from_slice(stored);
            continue;
        }
        let dense = if h.record_count > 0 {
            thin::renumbered(stored, &h).ok()
        } else {
            None
        };
        let filler_from = match dense {
            Some((dense, next)) => {
                out.extend_from_slice(&dense);
                next
            }
            None if h.record_count == 0 => h.base_offset,
            // Unreadable records: passed on as stored; the cluster's refusal is reported.
            None => {
                out.extend_from_slice(stored);
                continue;
            }
        };
        if let Ok(filler) = batch::control_filler(stored, filler_from, h.next_offset()) {
            out.extend_from_slice(&filler);
        }
    }
    out
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
        Ok(self.partition(topic, partition)?.bounds())
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
            Ok(read) => Ok(Bytes::from(as_a_producer_sends(read.bytes))),
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

/// A started sink, as the rest of tern sees it.
#[derive(Clone)]
pub struct RunningSink {
    pub sink: Arc<CompiledSink>,
    pub status: SharedStatus,
    pub progress: Arc<SinkProgress>,
}

/// The forwarded end of `topic`-`partition` for every sink that forwards the topic
/// (`only_pass_through`: only those in pass-through mode). `None` in the list while a
/// sink has not seen the partition yet.
pub fn forwarded_ends(
    broker: &Broker,
    topic: &str,
    partition: i32,
    only_pass_through: bool,
) -> Vec<(Arc<SinkProgress>, Option<i64>)> {
    let Ok(sinks) = broker.sinks.lock() else {
        return Vec::new();
    };
    sinks
        .iter()
        .filter(|s| s.sink.forwards(topic) && (!only_pass_through || s.sink.config.pass_through))
        .map(|s| (Arc::clone(&s.progress), s.progress.get(topic, partition)))
        .collect()
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
        let running = RunningSink {
            sink: Arc::new(sink),
            status: SharedStatus::default(),
            progress: Arc::new(SinkProgress::default()),
        };
        if let Ok(mut list) = broker.sinks.lock() {
            list.push(running.clone());
        }
        let meters = broker.metrics.sinks.meters(&running.sink.config.name);
        tasks.push(tokio::spawn(tern_bridges::kafka_sink::forwarder::run(
            running.sink,
            Arc::clone(&log),
            meters,
            running.status,
            running.progress,
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}
