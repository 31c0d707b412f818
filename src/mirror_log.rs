//! The mirror's port into tern (`tern_mirror::ports::MirrorLog`): reads hand out stored
//! batches as they are on disk, mirrored appends keep the offsets the batches carry and
//! become durable through the same group commit as produce requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tern_mirror::ports::{
    Appended, CheckpointOutcome, GroupOffset, MirrorLog, PortError, TopicInfo,
};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::client::records::{encode_batch, Outgoing};
use crate::log::{batch, now_ms, LogError, Partition};
use crate::topics::{is_internal, TopicError};

pub struct MirrorPort {
    broker: Arc<Broker>,
}

impl MirrorPort {
    pub fn new(broker: Arc<Broker>) -> MirrorPort {
        MirrorPort { broker }
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, PortError> {
        self.broker
            .topics
            .get(topic)
            .and_then(|t| t.partition(partition))
            .ok_or_else(|| PortError::Unavailable(format!("{topic}-{partition} does not exist")))
    }
}

fn from_log(e: LogError) -> PortError {
    match e {
        LogError::OffsetOutOfRange { offset, start, .. } => PortError::OutOfRange { offset, start },
        LogError::MirrorOverlap { .. } | LogError::Corrupt(_) | LogError::InvalidRecords(_) => {
            PortError::Refused(e.to_string())
        }
        other => PortError::Unavailable(other.to_string()),
    }
}

fn from_topic(e: TopicError) -> PortError {
    match e {
        TopicError::InvalidName(_) | TopicError::Config(_) | TopicError::InvalidPartitions(_) => {
            PortError::Refused(e.to_string())
        }
        other => PortError::Unavailable(other.to_string()),
    }
}

impl MirrorLog for MirrorPort {
    fn topics(&self) -> Vec<TopicInfo> {
        self.broker
            .topics
            .list()
            .into_iter()
            .map(|t| TopicInfo {
                internal: is_internal(&t.name),
                name: t.name.clone(),
                partitions: t.partition_count(),
                configs: t.overrides().into_iter().collect(),
            })
            .collect()
    }

    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PortError> {
        Ok(self.partition(topic, partition)?.bounds())
    }

    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, PortError> {
        let log = self.partition(topic, partition)?;
        let read = tokio::task::block_in_place(|| log.read(offset, max_bytes)).map_err(from_log)?;
        Ok(Bytes::from(read.bytes))
    }

    fn bytes_from(&self, topic: &str, partition: i32, offset: i64) -> Result<u64, PortError> {
        let log = self.partition(topic, partition)?;
        let bytes = log.lock().durable_bytes_from(offset);
        bytes.map_err(from_log)
    }

    fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(String, String)],
        keep_local: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<i32, PortError> {
        let topics = &self.broker.topics;
        tokio::task::block_in_place(|| {
            if let Some(existing) = topics.get(topic) {
                if existing.partition_count() < partitions {
                    topics.grow(topic, partitions, false).map_err(from_topic)?;
                }
                let current = existing.overrides();
                let mut wanted: BTreeMap<String, String> = current
                    .iter()
                    .filter(|(k, _)| keep_local(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                wanted.extend(configs.iter().filter(|(k, _)| !keep_local(k)).cloned());
                if wanted != current {
                    topics
                        .alter_configs(topic, |m| *m = wanted, false)
                        .map_err(from_topic)?;
                    tracing::info!(topic, "topic configs synced from the source");
                }
                return Ok(partitions.max(existing.partition_count()));
            }
            let configs: Vec<(String, String)> = configs
                .iter()
                .filter(|(k, _)| !keep_local(k))
                .cloned()
                .collect();
            let configs: BTreeMap<String, String> = configs.iter().cloned().collect();
            match topics.create(topic, partitions, configs) {
                Ok(t) => Ok(t.partition_count()),
                Err(TopicError::AlreadyExists(_)) => {
                    // Another partition's stream is creating it right now (the name is
                    // reserved until its files exist): wait for that to finish.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    loop {
                        if let Some(t) = topics.get(topic) {
                            return Ok(t.partition_count());
                        }
                        if std::time::Instant::now() > deadline {
                            return Err(PortError::Unavailable(format!(
                                "{topic} is still being created"
                            )));
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                Err(e) => Err(from_topic(e)),
            }
        })
    }

    fn append_mirrored(
        &self,
        topic: &str,
        partition: i32,
        batches: &[u8],
    ) -> Result<Appended, PortError> {
        let log = self.partition(topic, partition)?;
        // The edge's batches as it stores them: compaction may have thinned them.
        let split =
            batch::split_stored_batches(batches).map_err(|e| PortError::Refused(e.to_string()))?;
        let outcome = tokio::task::block_in_place(|| log.append_mirrored(&split, now_ms()))
            .map_err(from_log)?;
        self.broker
            .metrics
            .record_produce(topic, outcome.records, outcome.stored_bytes);
        Ok(Appended {
            log_end: outcome.log_end,
            records: outcome.records,
            bytes: outcome.stored_bytes,
            duplicates: outcome.duplicates,
            gaps: outcome.gaps,
            generation: outcome.generation,
        })
    }

    async fn wait_durable(
        &self,
        topic: &str,
        partition: i32,
        appended: &Appended,
    ) -> Result<(), PortError> {
        let log = self.partition(topic, partition)?;
        self.broker
            .group_commit
            .wait_durable(log, appended.log_end, appended.generation)
            .await
            .map_err(from_log)?;
        // Pass-through: the edge hears of the batch once the cluster has it too.
        for (progress, _) in crate::sink_log::forwarded_ends(&self.broker, topic, partition, true) {
            progress.wait_for(topic, partition, appended.log_end).await;
        }
        Ok(())
    }

    async fn append_record(
        &self,
        topic: &str,
        key: Bytes,
        value: Bytes,
        timestamp_ms: i64,
    ) -> Result<(), PortError> {
        // Only created here; whatever configs the user set on it stay.
        self.ensure_topic(topic, 1, &[], &|_| true)?;
        let log = self.partition(topic, 0)?;
        let batch = encode_batch(&[Outgoing {
            key: Some(key),
            value,
            headers: Vec::new(),
            timestamp: timestamp_ms,
        }])
        .map_err(|e| PortError::Unavailable(e.to_string()))?;
        let appended = self
            .broker
            .append(topic, &log, &batch, now_ms())
            .map_err(from_log)?;
        self.broker
            .group_commit
            .wait_durable(log, appended.upto, appended.generation)
            .await
            .map_err(from_log)
    }

    fn claim_namespace(&self, prefix: &str) -> Result<(), PortError> {
        tokio::task::block_in_place(|| self.broker.mirror_namespaces.claim(prefix)).map_err(|e| {
            PortError::Unavailable(format!("cannot record the namespace {prefix}: {e}"))
        })
    }

    fn claim_topic(&self, topic: &str) -> Result<(), PortError> {
        tokio::task::block_in_place(|| self.broker.mirror_namespaces.claim_topic(topic))
            .map_err(|e| PortError::Unavailable(format!("cannot reserve {topic}: {e}")))
    }

    fn committed_offsets(&self) -> Vec<(String, Vec<GroupOffset>)> {
        let offsets = &self.broker.groups.offsets;
        offsets
            .groups()
            .into_iter()
            .map(|group| {
                let entries = offsets
                    .get(&group)
                    .into_iter()
                    .map(|(topic, partition, c)| GroupOffset {
                        topic,
                        partition,
                        offset: c.offset,
                        metadata: c.metadata,
                    })
                    .collect();
                (group, entries)
            })
            .collect()
    }

    async fn commit_checkpoint(
        &self,
        group: &str,
        offsets: &[GroupOffset],
    ) -> Result<CheckpointOutcome, PortError> {
        if !crate::groups::valid_group_id(group) {
            return Err(PortError::Refused(format!("invalid group id `{group}`")));
        }
        if self.broker.groups.has_members(group) {
            return Ok(CheckpointOutcome::Skipped(format!(
                "group {group} has members on this hub; its offsets here are its own"
            )));
        }
        let current: BTreeMap<(String, i32), i64> = self
            .broker
            .groups
            .offsets
            .get(group)
            .into_iter()
            .map(|(t, p, c)| ((t, p), c.offset))
            .collect();
        let now = now_ms();
        let mut entries = Vec::new();
        for o in offsets {
            // A partition the hub does not hold (yet) is skipped; the edge sends again.
            let Ok((_, end)) = self.offsets(&o.topic, o.partition) else {
                continue;
            };
            let offset = o.offset.min(end);
            // Forward only (as MirrorMaker): a consumer here that went further stays there.
            if current
                .get(&(o.topic.clone(), o.partition))
                .is_some_and(|&here| here >= offset)
            {
                continue;
            }
            entries.push((
                o.topic.clone(),
                o.partition,
                crate::groups::offset_records::Committed {
                    offset,
                    leader_epoch: -1,
                    metadata: o.metadata.clone(),
                    commit_ms: now,
                },
            ));
        }
        if entries.is_empty() {
            return Ok(CheckpointOutcome::Applied(0));
        }
        self.broker
            .groups
            .offsets
            .commit(group, &entries)
            .await
            .map_err(|e| PortError::Unavailable(e.to_string()))?;
        Ok(CheckpointOutcome::Applied(entries.len() as u32))
    }

    fn durable_events(&self) -> watch::Receiver<u64> {
        self.broker.group_commit.durable_events()
    }
}

/// The tasks `[mirror]` and `[hub]` start, and the hub's bound address.
pub struct MirrorTasks {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub hub_addr: Option<std::net::SocketAddr>,
}

/// Starts the edge link and the hub listener the config asks for. Configuration and
/// certificate errors stop `tern serve` before it reports ready.
pub fn start(
    broker: &Arc<Broker>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<MirrorTasks, String> {
    let port = Arc::new(MirrorPort::new(Arc::clone(broker)));
    let status = broker.mirror_status.clone();
    let metrics = broker.metrics.mirror.clone();
    let mut out = MirrorTasks {
        tasks: Vec::new(),
        hub_addr: None,
    };
    if let Some(hub) = &broker.config.hub {
        let hub = tern_mirror::config::Hub::compile(hub.clone()).map_err(|e| e.to_string())?;
        let state_dir = broker.config.broker.data_dir.join("mirror-hub");
        let (server, addr) = tern_mirror::hub::HubServer::bind(
            hub,
            Arc::clone(&port),
            status.clone(),
            metrics.clone(),
            &state_dir,
        )
        .map_err(|e| format!("[hub]: {e}"))?;
        out.hub_addr = Some(addr);
        out.tasks.push(tokio::spawn(server.run(shutdown.clone())));
    }
    if let Some(edge) = &broker.config.mirror {
        let edge = tern_mirror::config::Edge::compile(edge.clone()).map_err(|e| e.to_string())?;
        let _ = broker.mirror_edge.set(edge.clone());
        let link = tern_mirror::edge::EdgeLink::new(edge, port, status, metrics)
            .map_err(|e| format!("[mirror]: {e}"))?;
        out.tasks.push(tokio::spawn(link.run(shutdown)));
    }
    Ok(out)
}
