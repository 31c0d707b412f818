//! One sink's loop: every local partition the sink forwards is a lane with a cursor. A
//! step reads stored batches from each lane, sends them to the leaders of the target
//! partitions (one Produce request per broker, acks=all, idempotent), moves the cursors
//! of what the cluster acknowledged and, every few hundred milliseconds, stores them.
//!
//! Exactly once: the cluster deduplicates retries of one producer id by sequence; across
//! a restart (a new producer id) the stored cursor carries the target partition's end
//! right after the last stored step, so the batches the cluster received after it are
//! recognised by counting offsets and not sent again. That holds while the sink is the
//! only writer of its target partitions; anything else is logged and forwarding goes on
//! (at least once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::admin;
use super::batch::{self, StoredBatch};
use super::cluster::{Cluster, SinkError};
use super::config::{CompiledSink, SinkStart};
use super::metrics::SinkMeters;
use super::ports::{PortError, SinkCursor, SinkLog};
use super::producer::{self, Producer};
use super::progress::SinkProgress;
use super::status::{SharedStatus, SinkPartitionStatus};
use crate::backoff::Backoff;

/// Bytes read from one partition for one request.
const PARTITION_BYTES: usize = 1024 * 1024;
/// How often advanced cursors are stored.
const SAVE_EVERY: Duration = Duration::from_millis(500);
/// How long a partition the cluster refuses waits before it is tried again.
const REFUSED_WAIT: Duration = Duration::from_secs(30);
/// How long a partition whose target does not exist (yet) waits.
const MISSING_WAIT: Duration = Duration::from_secs(5);
/// Offset syncs waiting to be written (older ones are dropped when the cluster is away
/// for long; the newest per partition is what translation needs most).
const MAX_PENDING_SYNCS: usize = 10_000;

/// One local partition and where forwarding got to.
struct Lane {
    topic: String,
    partition: i32,
    target: String,
    /// Next local offset to forward.
    next: i64,
    /// The target partition's end after the last acknowledged batch.
    target_end: Option<i64>,
    /// The target end to compare with the cluster's before the first send (after a
    /// restart or a new producer id).
    reconcile: Option<Option<i64>>,
    /// (offset, target end) last stored.
    saved: (i64, i64),
    /// target offset − local offset of the last offset sync written.
    synced_delta: Option<i64>,
    waiting: Option<(Instant, String)>,
    log_end: i64,
}

impl Lane {
    fn cursor(&self) -> SinkCursor {
        SinkCursor {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.next,
            target_end: self.target_end.unwrap_or(-1),
        }
    }

    fn is_waiting(&self, now: Instant) -> bool {
        self.waiting.as_ref().is_some_and(|(until, _)| *until > now)
    }

    fn wait(&mut self, for_: Duration, why: String) {
        self.waiting = Some((Instant::now() + for_, why));
    }
}

/// What one lane put into a Produce request: (local base offset, offsets) of each data
/// batch, the local offset after the last batch read, and the bytes sent.
struct Sent {
    lane: usize,
    spans: Vec<(i64, i64)>,
    end: i64,
    bytes: u64,
}

/// One (source offset ↔ target offset) pair to publish.
struct OffsetSync {
    topic: String,
    partition: i32,
    target: String,
    offset: i64,
    target_offset: i64,
}

struct Forwarder<L: SinkLog> {
    sink: Arc<CompiledSink>,
    log: Arc<L>,
    meters: SinkMeters,
    status: SharedStatus,
    progress: Arc<SinkProgress>,
    cluster: Cluster,
    producer: Option<Producer>,
    /// The identity whose epoch the next InitProducerId bumps.
    previous: Option<(i64, i16)>,
    lanes: Vec<Lane>,
    stored: HashMap<(String, i32), SinkCursor>,
    syncs: VecDeque<OffsetSync>,
    last_error: Option<String>,
    forwarded: u64,
}

pub async fn run<L: SinkLog>(
    sink: Arc<CompiledSink>,
    log: Arc<L>,
    meters: SinkMeters,
    status: SharedStatus,
    progress: Arc<SinkProgress>,
    shutdown: CancellationToken,
) {
    let config = &sink.config;
    let mut f = Forwarder::new(Arc::clone(&sink), log, meters, status, progress);
    let name = sink.config.name.clone();
    let mut retry = Backoff::new(config.retry_backoff_ms, config.retry_backoff_max_ms);
    loop {
        match f.log.load_cursors(&name) {
            Ok(cursors) => {
                f.stored = cursors
                    .into_iter()
                    .map(|c| ((c.topic.clone(), c.partition), c))
                    .collect();
                break;
            }
            Err(e) => {
                error!(sink = %name, error = %e, "cannot read the sink's cursors; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry.next_delay()) => {}
                }
            }
        }
    }
    info!(sink = %name, bootstrap = ?sink.config.bootstrap_servers, cursors = f.stored.len(), "Kafka sink starting");
    let mut events = f.log.durable_events();
    let discovery = Duration::from_millis(config.discovery_interval_ms);
    let mut next_discovery = Instant::now();
    let mut last_save = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let now = Instant::now();
        if now >= next_discovery {
            f.discover();
            next_discovery = now + discovery;
        }
        let step = f.step().await;
        if let Err(e) = &step {
            f.failed(e);
        }
        if last_save.elapsed() >= SAVE_EVERY {
            f.save().await;
            last_save = Instant::now();
        }
        f.publish_status();
        let wait = match step {
            Ok(true) => {
                retry.reset();
                continue;
            }
            Ok(false) => {
                f.save().await;
                let wake = f
                    .lanes
                    .iter()
                    .filter_map(|l| l.waiting.as_ref().map(|(until, _)| *until))
                    .filter(|until| *until > Instant::now())
                    .min()
                    .unwrap_or(next_discovery)
                    .min(next_discovery);
                wake.saturating_duration_since(Instant::now())
            }
            Err(_) => retry.next_delay(),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = events.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    f.save().await;
    f.publish_status();
    info!(sink = %name, "Kafka sink stopped; cursors saved");
}

impl<L: SinkLog> Forwarder<L> {
    fn new(
        sink: Arc<CompiledSink>,
        log: Arc<L>,
        meters: SinkMeters,
        status: SharedStatus,
        progress: Arc<SinkProgress>,
    ) -> Forwarder<L> {
        let cluster = Cluster::new(
            sink.config.bootstrap_servers.clone(),
            sink.client_id.clone(),
            sink.security.clone(),
            Duration::from_millis(sink.config.request_timeout_ms),
        );
        Forwarder {
            sink,
            log,
            meters,
            status,
            progress,
            cluster,
            producer: None,
            previous: None,
            lanes: Vec::new(),
            stored: HashMap::new(),
            syncs: VecDeque::new(),
            last_error: None,
            forwarded: 0,
        }
    }

    fn name(&self) -> &str {
        &self.sink.config.name
    }

    fn failed(&mut self, e: &SinkError) {
        self.meters.errors.inc();
        warn!(sink = %self.name(), error = %e, "Kafka sink: the cluster is unreachable or refused; retrying");
        self.last_error = Some(e.to_string());
        self.cluster.disconnect();
    }

    /// Adds a lane for every local partition the sink forwards that has none yet.
    fn discover(&mut self) {
        for (topic, partitions) in self.log.topics() {
            if !self.sink.forwards(&topic) {
                continue;
            }
            for partition in 0..partitions {
                if self
                    .lanes
                    .iter()
                    .any(|l| l.partition == partition && l.topic == topic)
                {
                    continue;
                }
                let Ok((start, end)) = self.log.offsets(&topic, partition) else {
                    continue;
                };
                let stored = self.stored.remove(&(topic.clone(), partition));
                let (next, reconcile) = match &stored {
                    Some(c) => (c.offset, Some((c.target_end >= 0).then_some(c.target_end))),
                    None => match self.sink.config.start_from {
                        SinkStart::Earliest => (start, Some(None)),
                        SinkStart::Latest => (end, Some(None)),
                    },
                };
                let saved = stored.map_or((-1, -1), |c| (c.offset, c.target_end));
                self.lanes.push(Lane {
                    target: self.sink.target_topic(&topic),
                    topic: topic.clone(),
                    partition,
                    next,
                    target_end: None,
                    reconcile,
                    saved,
                    synced_delta: None,
                    waiting: None,
                    log_end: end,
                });
            }
        }
    }

    /// One round: make sure targets exist and lanes are reconciled, then send what is
    /// stored. `Ok(true)` when something was forwarded (there may be more).
    async fn step(&mut self) -> Result<bool, SinkError> {
        let now = Instant::now();
        if self.lanes.iter().all(|l| l.is_waiting(now)) {
            return Ok(false);
        }
        self.prepare_targets().await?;
        if self.producer.is_none() {
            let producer = Producer::init(&mut self.cluster, self.previous).await?;
            self.previous = None;
            info!(sink = %self.name(), producer_id = producer.producer_id, epoch = producer.epoch, "Kafka sink has a producer id");
            self.meters.connected.set(1);
            self.last_error = None;
            self.producer = Some(producer);
        }
        self.reconcile().await?;
        let sent = self.forward().await?;
        self.write_offset_syncs().await?;
        Ok(sent)
    }

    /// Refreshes the metadata of every lane's target; creates missing topics or
    /// partitions where allowed; lanes whose target partition is missing wait.
    async fn prepare_targets(&mut self) -> Result<(), SinkError> {
        let mut targets: Vec<String> = self.lanes.iter().map(|l| l.target.clone()).collect();
        let syncs = self.sink.config.offset_syncs_topic.clone();
        if !syncs.is_empty() {
            targets.push(syncs.clone());
        }
        targets.sort();
        targets.dedup();
        let needs_refresh = targets.iter().any(|t| !self.cluster.topics.contains_key(t))
            || self
                .lanes
                .iter()
                .any(|l| self.cluster.leader(&l.target, l.partition).is_none());
        if !needs_refresh {
            return Ok(());
        }
        self.cluster.refresh(&targets).await?;
        // Partitions each target needs: the local partition count.
        let mut wanted: BTreeMap<String, i32> = BTreeMap::new();
        for l in &self.lanes {
            let w = wanted.entry(l.target.clone()).or_insert(0);
            *w = (*w).max(l.partition + 1);
        }
        if !syncs.is_empty() {
            wanted.entry(syncs).or_insert(1);
        }
        let mut created = false;
        for (target, partitions) in &wanted {
            if self.cluster.partition_count(target) >= *partitions as usize {
                continue;
            }
            if !self.sink.config.create_topics {
                continue;
            }
            let timeout = self.sink.config.request_timeout_ms.min(i32::MAX as u64) as i32;
            match admin::ensure_partitions(
                &mut self.cluster,
                target,
                *partitions,
                self.sink.config.replication_factor,
                timeout,
            )
            .await
            {
                Ok(()) => {
                    info!(sink = %self.name(), topic = %target, partitions, "created or grew the topic in the cluster");
                    created = true;
                }
                Err(e) => {
                    self.meters.errors.inc();
                    error!(sink = %self.name(), topic = %target, error = %e, "cannot create the topic in the cluster");
                }
            }
        }
        if created {
            self.cluster.refresh(&targets).await?;
        }
        for i in 0..self.lanes.len() {
            let l = &self.lanes[i];
            if self.cluster.leader(&l.target, l.partition).is_some() {
                continue;
            }
            let why = if self.cluster.partition_count(&l.target) == 0 {
                format!("topic {} does not exist in the cluster", l.target)
            } else if self.cluster.partition_count(&l.target) <= l.partition as usize {
                format!("topic {} has fewer partitions in the cluster", l.target)
            } else {
                format!("{}-{} has no leader", l.target, l.partition)
            };
            if !self.lanes[i].is_waiting(Instant::now()) {
                warn!(sink = %self.name(), topic = %self.lanes[i].topic, partition = self.lanes[i].partition, "{why}; waiting");
            }
            self.lanes[i].wait(MISSING_WAIT, why);
        }
        Ok(())
    }

    /// For lanes that start (again): asks the cluster where their target partitions end
    /// and skips what it already has.
    async fn reconcile(&mut self) -> Result<(), SinkError> {
        let now = Instant::now();
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for l in &self.lanes {
            if l.reconcile.is_some() && !l.is_waiting(now) {
                if let Some(node) = self.cluster.leader(&l.target, l.partition) {
                    by_leader
                        .entry(node)
                        .or_default()
                        .push((l.target.clone(), l.partition));
                }
            }
        }
        for (node, partitions) in by_leader {
            let ends = admin::end_offsets(&mut self.cluster, node, &partitions).await?;
            for i in 0..self.lanes.len() {
                let key = (self.lanes[i].target.clone(), self.lanes[i].partition);
                let Some(&end) = ends.get(&key) else { continue };
                if self.lanes[i].reconcile.is_some() {
                    self.reconcile_lane(i, end)?;
                }
            }
        }
        Ok(())
    }

    fn reconcile_lane(&mut self, i: usize, cluster_end: i64) -> Result<(), SinkError> {
        let name = self.sink.config.name.clone();
        let lane = &mut self.lanes[i];
        let Some(expected) = lane.reconcile.take() else {
            return Ok(());
        };
        lane.target_end = Some(cluster_end);
        let Some(expected) = expected else {
            return Ok(());
        };
        if cluster_end < expected {
            self.meters.errors.inc();
            error!(sink = %name, topic = %lane.topic, partition = lane.partition, target = %lane.target,
                cluster_end, expected,
                "the target partition ends before what the cluster acknowledged to this sink: the cluster lost records or the topic was recreated; forwarding goes on from the cursor");
            return Ok(());
        }
        let mut surplus = cluster_end - expected;
        if surplus == 0 {
            return Ok(());
        }
        // The cluster has `surplus` offsets this sink wrote after its last stored cursor
        // (a crash between the acknowledgement and the save): skip as many whole batches.
        let mut skipped = 0i64;
        while surplus > 0 {
            let bytes =
                match self
                    .log
                    .read_batches(&lane.topic, lane.partition, lane.next, PARTITION_BYTES)
                {
                    Ok(b) => b,
                    Err(PortError::OutOfRange { start, .. }) => {
                        lane.next = start;
                        continue;
                    }
                    Err(e) => {
                        lane.reconcile = Some(Some(expected));
                        return Err(SinkError::NoBroker(format!(
                            "reading {}-{}: {e}",
                            lane.topic, lane.partition
                        )));
                    }
                };
            let found = batch::batches(&bytes);
            if found.is_empty() {
                break;
            }
            let mut fits = true;
            let from = lane.next;
            for b in found.iter().filter(|b| b.next_offset() > from) {
                if b.control {
                    lane.next = b.next_offset();
                    continue;
                }
                if b.offset_count() > surplus {
                    fits = false;
                    break;
                }
                surplus -= b.offset_count();
                skipped += b.offset_count();
                lane.next = b.next_offset();
                if surplus == 0 {
                    break;
                }
            }
            if !fits {
                break;
            }
        }
        self.meters.skipped.inc_by(skipped as u64);
        if surplus == 0 {
            info!(sink = %name, topic = %lane.topic, partition = lane.partition, skipped,
                "the cluster already had {skipped} records forwarded before the last restart; not sent again");
        } else {
            warn!(sink = %name, topic = %lane.topic, partition = lane.partition, target = %lane.target, skipped, unexplained = surplus,
                "the target partition holds records this sink did not write (another producer?); forwarding goes on, duplicates are possible");
        }
        Ok(())
    }

    /// Sends one request per leader with what the lanes have stored past their cursors.
    async fn forward(&mut self) -> Result<bool, SinkError> {
        let now = Instant::now();
        if self.producer.is_none() {
            return Ok(false);
        }
        // Per leader: (lane index, batch bytes as read).
        let mut plans: BTreeMap<i32, Vec<(usize, Bytes)>> = BTreeMap::new();
        let mut planned_bytes: BTreeMap<i32, usize> = BTreeMap::new();
        for i in 0..self.lanes.len() {
            let lane = &mut self.lanes[i];
            if lane.is_waiting(now) || lane.reconcile.is_some() {
                continue;
            }
            let Some(node) = self.cluster.leader(&lane.target, lane.partition) else {
                continue;
            };
            let Ok((start, end)) = self.log.offsets(&lane.topic, lane.partition) else {
                continue;
            };
            lane.log_end = end;
            if lane.next < start {
                self.meters.skipped.inc_by((start - lane.next) as u64);
                warn!(sink = %self.sink.config.name, topic = %lane.topic, partition = lane.partition,
                    from = lane.next, to = start,
                    "records were deleted here (retention) before the sink forwarded them; they are missing in the cluster");
                lane.next = start;
            }
            if lane.next >= end {
                continue;
            }
            let used = planned_bytes.entry(node).or_insert(0);
            if *used >= self.sink.config.max_request_bytes {
                continue;
            }
            let budget = PARTITION_BYTES.min(self.sink.config.max_request_bytes - *used);
            match self
                .log
                .read_batches(&lane.topic, lane.partition, lane.next, budget)
            {
                Ok(bytes) if !bytes.is_empty() => {
                    *used += bytes.len();
                    plans.entry(node).or_default().push((i, bytes));
                }
                Ok(_) => {}
                Err(PortError::OutOfRange { .. }) => {} // seen as a gap next round
                Err(e) => {
                    warn!(sink = %self.sink.config.name, topic = %lane.topic, partition = lane.partition, error = %e, "cannot read the partition");
                    lane.wait(MISSING_WAIT, format!("local read failed: {e}"));
                }
            }
        }
        if plans.is_empty() {
            return Ok(false);
        }
        let mut progress = false;
        let timeout = self.sink.config.request_timeout_ms.min(i32::MAX as u64) as i32;
        for (node, plan) in plans {
            let Some(producer) = self.producer.as_ref() else {
                break;
            };
            // What each partition sends: batches past the cursor, control batches left out.
            let mut parts = Vec::new();
            let mut sent: Vec<Sent> = Vec::new();
            for (i, bytes) in &plan {
                let lane = &self.lanes[*i];
                let found: Vec<StoredBatch<'_>> = batch::batches(bytes)
                    .into_iter()
                    .filter(|b| b.next_offset() > lane.next)
                    .collect();
                let end = found.last().map_or(lane.next, |b| b.next_offset());
                let data: Vec<&StoredBatch<'_>> = found.iter().filter(|b| !b.control).collect();
                let spans: Vec<(i64, i64)> = data
                    .iter()
                    .map(|b| (b.base_offset, b.offset_count()))
                    .collect();
                let size: u64 = data.iter().map(|b| b.bytes.len() as u64).sum();
                if data.is_empty() {
                    // Only control batches: nothing for the cluster.
                    sent.push(Sent {
                        lane: *i,
                        spans,
                        end,
                        bytes: 0,
                    });
                    continue;
                }
                let stamped = producer.stamp(&lane.target, lane.partition, data.into_iter());
                parts.push((lane.target.clone(), lane.partition, stamped));
                sent.push(Sent {
                    lane: *i,
                    spans,
                    end,
                    bytes: size,
                });
            }
            let acks = if parts.is_empty() {
                HashMap::new()
            } else {
                producer::produce(&mut self.cluster, node, timeout, parts).await?
            };
            for Sent {
                lane: i,
                spans,
                end,
                bytes: size,
            } in sent
            {
                if spans.is_empty() {
                    self.lanes[i].next = end;
                    progress = true;
                    continue;
                }
                let key = (self.lanes[i].target.clone(), self.lanes[i].partition);
                let Some(ack) = acks.get(&key).copied() else {
                    self.meters.retries.inc();
                    continue;
                };
                if self.acknowledged(i, ack, &spans, end, size)? {
                    progress = true;
                }
            }
        }
        Ok(progress)
    }

    /// Applies the cluster's answer for one lane's batches. `Ok(true)` if they are in.
    fn acknowledged(
        &mut self,
        i: usize,
        ack: producer::PartitionAck,
        spans: &[(i64, i64)],
        end: i64,
        size: u64,
    ) -> Result<bool, SinkError> {
        let name = self.sink.config.name.clone();
        let count: i64 = spans.iter().map(|(_, c)| c).sum();
        let error = ResponseError::try_from_code(ack.error_code);
        let lane = &mut self.lanes[i];
        match error {
            None | Some(ResponseError::DuplicateSequenceNumber) => {
                if let Some(p) = self.producer.as_mut() {
                    p.acknowledged(&lane.target, lane.partition, count);
                }
                let known = error.is_none() && ack.base_offset >= 0;
                if known {
                    let mut target_offset = ack.base_offset;
                    for (offset, c) in spans {
                        let delta = target_offset - offset;
                        if lane.synced_delta != Some(delta)
                            && !self.sink.config.offset_syncs_topic.is_empty()
                        {
                            lane.synced_delta = Some(delta);
                            if self.syncs.len() >= MAX_PENDING_SYNCS {
                                self.syncs.pop_front();
                            }
                            self.syncs.push_back(OffsetSync {
                                topic: lane.topic.clone(),
                                partition: lane.partition,
                                target: lane.target.clone(),
                                offset: *offset,
                                target_offset,
                            });
                        }
                        target_offset += c;
                    }
                    lane.target_end = Some(target_offset);
                } else {
                    lane.target_end = None;
                }
                lane.next = end;
                lane.waiting = None;
                self.meters.records.inc_by(count as u64);
                self.meters.bytes.inc_by(size);
                self.forwarded += count as u64;
                Ok(true)
            }
            Some(
                ResponseError::NotLeaderOrFollower
                | ResponseError::LeaderNotAvailable
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::FencedLeaderEpoch
                | ResponseError::NotEnoughReplicas
                | ResponseError::NotEnoughReplicasAfterAppend
                | ResponseError::RequestTimedOut
                | ResponseError::KafkaStorageError
                | ResponseError::NetworkException,
            ) => {
                // Sent again with the same sequences once the metadata is fresh.
                self.meters.retries.inc();
                let target = lane.target.clone();
                self.cluster.topics.remove(&target);
                Ok(false)
            }
            Some(
                ResponseError::OutOfOrderSequenceNumber
                | ResponseError::UnknownProducerId
                | ResponseError::InvalidProducerEpoch
                | ResponseError::ProducerFenced,
            ) => {
                // The cluster lost track of this producer: take a new id and ask every
                // partition where it ends before sending again.
                self.meters.retries.inc();
                warn!(sink = %name, topic = %lane.topic, partition = lane.partition, error = ?error,
                    "the cluster no longer accepts this producer's sequence; bumping the producer epoch");
                self.previous = self.producer.as_ref().map(|p| (p.producer_id, p.epoch));
                self.producer = None;
                self.meters.connected.set(0);
                for l in self.lanes.iter_mut() {
                    if l.reconcile.is_none() {
                        l.reconcile = Some(l.target_end);
                    }
                }
                Err(SinkError::kafka(
                    format!(
                        "producing to {}-{}",
                        self.lanes[i].target, self.lanes[i].partition
                    ),
                    ack.error_code,
                ))
            }
            Some(e) => {
                self.meters.errors.inc();
                let why = match e {
                    ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => format!(
                        "the cluster refuses a batch of {size} bytes as too large: raise max.message.bytes of {} in the cluster",
                        lane.target
                    ),
                    ResponseError::TopicAuthorizationFailed | ResponseError::ClusterAuthorizationFailed => {
                        format!("the cluster does not allow this sink to write {}", lane.target)
                    }
                    other => format!("the cluster refused the batch: {other:?}"),
                };
                error!(sink = %name, topic = %lane.topic, partition = lane.partition, offset = lane.next, "{why}; trying again in {} s", REFUSED_WAIT.as_secs());
                self.last_error = Some(why.clone());
                lane.wait(REFUSED_WAIT, why);
                Ok(false)
            }
        }
    }

    /// Writes the pending offset syncs (JSON records keyed by local topic and partition)
    /// to partition 0 of the offset-sync topic.
    async fn write_offset_syncs(&mut self) -> Result<(), SinkError> {
        let topic = self.sink.config.offset_syncs_topic.clone();
        if self.syncs.is_empty() || topic.is_empty() {
            return Ok(());
        }
        let Some(node) = self.cluster.leader(&topic, 0) else {
            return Ok(()); // waits for the topic (logged by prepare_targets)
        };
        let Some(producer) = self.producer.as_ref() else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let take = self.syncs.len().min(1000);
        let records: Vec<(Bytes, Bytes, i64)> = self
            .syncs
            .iter()
            .take(take)
            .map(|s| {
                let key = format!("{}:{}", s.topic, s.partition);
                let value = serde_json::json!({
                    "source_topic": s.topic,
                    "source_partition": s.partition,
                    "source_offset": s.offset,
                    "target_topic": s.target,
                    "target_offset": s.target_offset,
                });
                (Bytes::from(key), Bytes::from(value.to_string()), now)
            })
            .collect();
        let bytes = producer.encode_records(&topic, 0, &records)?;
        let timeout = self.sink.config.request_timeout_ms.min(i32::MAX as u64) as i32;
        let acks = producer::produce(
            &mut self.cluster,
            node,
            timeout,
            vec![(topic.clone(), 0, bytes)],
        )
        .await?;
        let code = acks.get(&(topic.clone(), 0)).map_or(-1, |a| a.error_code);
        if code == 0 {
            if let Some(p) = self.producer.as_mut() {
                p.acknowledged(&topic, 0, take as i64);
            }
            self.syncs.drain(..take);
            self.meters.offset_syncs.inc_by(take as u64);
            Ok(())
        } else {
            self.cluster.topics.remove(&topic);
            Err(SinkError::kafka(
                format!("writing offset syncs to {topic}"),
                code,
            ))
        }
    }

    /// Stores the cursors that moved.
    async fn save(&mut self) {
        let moved: Vec<SinkCursor> = self
            .lanes
            .iter()
            .filter(|l| l.reconcile.is_none())
            .map(Lane::cursor)
            .filter(|c| (c.offset, c.target_end) != self.saved_of(c))
            .collect();
        if moved.is_empty() {
            return;
        }
        let name = self.sink.config.name.clone();
        match self.log.save_cursors(&name, moved.clone()).await {
            Ok(()) => {
                for c in moved {
                    if let Some(l) = self
                        .lanes
                        .iter_mut()
                        .find(|l| l.partition == c.partition && l.topic == c.topic)
                    {
                        l.saved = (c.offset, c.target_end);
                    }
                }
            }
            Err(e) => {
                self.meters.errors.inc();
                error!(sink = %name, error = %e, "cannot store the sink's cursors; they are stored again later");
            }
        }
    }

    fn saved_of(&self, c: &SinkCursor) -> (i64, i64) {
        self.lanes
            .iter()
            .find(|l| l.partition == c.partition && l.topic == c.topic)
            .map_or((-1, -1), |l| l.saved)
    }

    fn publish_status(&self) {
        let now = Instant::now();
        let partitions = self
            .lanes
            .iter()
            .map(|l| {
                self.progress.set(&l.topic, l.partition, l.next);
                let lag = (l.log_end - l.next).max(0);
                self.meters.set_lag(&l.topic, l.partition, lag);
                SinkPartitionStatus {
                    topic: l.topic.clone(),
                    partition: l.partition,
                    target_topic: l.target.clone(),
                    cursor: l.next,
                    log_end: l.log_end,
                    lag_records: lag,
                    target_end: l.target_end,
                    waiting: l
                        .waiting
                        .as_ref()
                        .filter(|(until, _)| *until > now)
                        .map(|(_, why)| why.clone()),
                }
            })
            .collect();
        if let Ok(mut s) = self.status.lock() {
            s.name = self.sink.config.name.clone();
            s.bootstrap_servers = self.sink.config.bootstrap_servers.clone();
            s.connected = self.producer.is_some();
            s.producer_id = self.producer.as_ref().map_or(-1, |p| p.producer_id);
            s.last_error = self.last_error.clone();
            s.records_forwarded = self.forwarded;
            s.partitions = partitions;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka_sink::config::{compile, KafkaSinkConfig};
    use crate::kafka_sink::metrics::SinkMetrics;
    use tokio::sync::watch;

    /// One local partition `t`-0 of four stored batches of 100 records.
    struct FakeLog {
        bytes: Vec<u8>,
        events: watch::Sender<u64>,
    }

    impl SinkLog for FakeLog {
        fn topics(&self) -> Vec<(String, i32)> {
            vec![("t".into(), 1)]
        }
        fn offsets(&self, _: &str, _: i32) -> Result<(i64, i64), PortError> {
            Ok((0, 400))
        }
        fn read_batches(&self, _: &str, _: i32, offset: i64, _: usize) -> Result<Bytes, PortError> {
            let from = batch::batches(&self.bytes)
                .iter()
                .take_while(|b| b.next_offset() <= offset)
                .map(|b| b.bytes.len())
                .sum::<usize>();
            Ok(Bytes::copy_from_slice(&self.bytes[from..]))
        }
        fn durable_events(&self) -> watch::Receiver<u64> {
            self.events.subscribe()
        }
        fn load_cursors(&self, _: &str) -> Result<Vec<SinkCursor>, PortError> {
            Ok(Vec::new())
        }
        async fn save_cursors(&self, _: &str, _: Vec<SinkCursor>) -> Result<(), PortError> {
            Ok(())
        }
    }

    /// A forwarder whose lane `t`-0 restarts from a stored cursor (offset 100, the
    /// target ended at 1100 then).
    fn restarted() -> Forwarder<FakeLog> {
        let mut bytes = Vec::new();
        for base in [0, 100, 200, 300] {
            let values: Vec<String> = (0..100).map(|i| format!("v{}", base + i)).collect();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            bytes.extend(batch::stored(
                base,
                &values,
                kafka_protocol::records::Compression::None,
            ));
        }
        let config = KafkaSinkConfig {
            name: "dc".into(),
            bootstrap_servers: vec!["127.0.0.1:9".into()],
            topics: vec!["t".into()],
            ..Default::default()
        };
        let sink = compile(&[config]).expect("config").remove(0);
        let log = FakeLog {
            bytes,
            events: watch::Sender::new(0),
        };
        let mut f = Forwarder::new(
            Arc::new(sink),
            Arc::new(log),
            SinkMetrics::default().meters("dc"),
            SharedStatus::default(),
            Arc::new(SinkProgress::default()),
        );
        f.stored.insert(
            ("t".into(), 0),
            SinkCursor {
                topic: "t".into(),
                partition: 0,
                offset: 100,
                target_end: 1100,
            },
        );
        f.discover();
        f
    }

    #[test]
    fn batches_the_cluster_got_after_the_last_saved_cursor_are_not_sent_again() {
        let mut f = restarted();
        f.reconcile_lane(0, 1300).expect("reconciled");
        assert_eq!((f.lanes[0].next, f.lanes[0].target_end), (300, Some(1300)));
        assert!(f.lanes[0].reconcile.is_none());
    }

    #[test]
    fn nothing_is_skipped_when_the_cluster_ends_where_the_cursor_says() {
        let mut f = restarted();
        f.reconcile_lane(0, 1100).expect("reconciled");
        assert_eq!((f.lanes[0].next, f.lanes[0].target_end), (100, Some(1100)));
    }

    #[test]
    fn records_someone_else_wrote_skip_only_whole_batches_and_a_shorter_target_skips_nothing() {
        let mut f = restarted();
        f.reconcile_lane(0, 1250).expect("reconciled");
        assert_eq!(
            f.lanes[0].next, 200,
            "one whole batch fits in 150 unexplained offsets"
        );
        let mut f = restarted();
        f.reconcile_lane(0, 900).expect("reconciled");
        assert_eq!((f.lanes[0].next, f.lanes[0].target_end), (100, Some(900)));
    }
}
