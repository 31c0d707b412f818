//! Background storage upkeep: per-topic retention (`retention.ms`, `retention.bytes`),
//! time-based segment rolling of idle partitions, the global `storage.max_bytes` budget,
//! which deletes the oldest sealed segments across all partitions first (those the mirror
//! hub and the Kafka sinks already have before the others), and the short buffer of a
//! pass-through sink (sealed segments the cluster has are deleted at once).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::broker::Broker;
use crate::log::{self, Partition};

/// How often fenced partitions (a failed fsync) are tried again from disk.
const REOPEN_INTERVAL: Duration = Duration::from_secs(2);

/// Reopens fenced partitions from disk until `shutdown` fires: a partition whose fsync
/// failed (a full disk, a flaky card) serves appends again once the disk works.
pub async fn run_reopener(broker: Arc<Broker>, shutdown: CancellationToken) {
    every(REOPEN_INTERVAL, broker, shutdown, reopen_fenced).await
}

/// Runs `pass` on a blocking thread every `period` until `shutdown` fires.
pub(crate) async fn every(
    period: Duration,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    pass: fn(&Broker),
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let broker = Arc::clone(&broker);
        let _ = tokio::task::spawn_blocking(move || pass(&broker)).await;
    }
}

fn reopen_fenced(broker: &Broker) {
    for topic in broker.topics.list() {
        for partition in topic.partitions() {
            if partition.lock().fenced().is_none() {
                continue;
            }
            if let Err(e) = partition.reopen_if_fenced(log::now_ms()) {
                warn!(topic = %partition.topic, partition = partition.index, error = %e,
                    "fenced partition cannot be reopened yet; retrying");
            }
        }
    }
}

/// Runs until `shutdown` fires, checking every `storage.retention_check_interval_ms`.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = Duration::from_millis(broker.config.storage.retention_check_interval_ms);
    every(period, broker, shutdown, enforce).await
}

/// One pass of retention and the disk budget.
pub fn enforce(broker: &Broker) {
    let now = log::now_ms();
    // Internal topics (committed offsets) are never deleted by retention or the budget:
    // tern keeps them small itself.
    let partitions: Vec<Arc<Partition>> = broker
        .topics
        .list()
        .iter()
        .filter(|t| !crate::topics::is_internal(&t.name))
        .flat_map(|t| t.partitions())
        .collect();
    for partition in &partitions {
        roll_if_idle(broker, partition, now);
        let mut log = partition.lock();
        let start_before = log.log_start_offset();
        match log.apply_retention(now) {
            Ok(report) => {
                broker
                    .metrics
                    .retention_deleted_bytes
                    .inc_by(report.deleted_bytes);
                note_deleted(broker, partition, start_before, log.log_start_offset());
            }
            Err(e) => {
                error!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed")
            }
        }
        drop(log);
        drop_forwarded(broker, partition);
    }
    let budget = broker.config.storage.max_bytes;
    if budget > 0 {
        enforce_budget(broker, &partitions, budget);
    }
    let retention_ms = broker
        .config
        .groups
        .offsets_retention_minutes
        .saturating_mul(60_000) as i64;
    let groups = &broker.groups;
    // Groups with members, and tern's own cursors (MQTT bridges), never expire.
    let keep = |group: &str| group.starts_with("tern-") || groups.has_members(group);
    if let Err(e) = groups.offsets.maintain(now, retention_ms, &keep) {
        error!(error = %e, "committed-offsets housekeeping failed");
    }
}

fn enforce_budget(broker: &Broker, partitions: &[Arc<Partition>], budget: u64) {
    let mut total: u64 = partitions.iter().map(|p| p.lock().size_bytes()).sum();
    while total > budget {
        // The oldest sealed segment anywhere (smallest newest-record timestamp) — among
        // those the hub already holds first, so an edge under pressure deletes what is
        // safe at the datacenter before what is not; compacted topics (the latest state
        // of every key) only when nothing else is left.
        let candidates: Vec<(bool, bool, i64, &Arc<Partition>)> = partitions
            .iter()
            .filter_map(|p| {
                let log = p.lock();
                let (_, ts, _) = log.oldest_sealed()?;
                let end = log.oldest_sealed_end()?;
                let mirrored = mirrored_end(broker, p).is_none_or(|hub| hub >= end)
                    && crate::sink_log::forwarded_ends(broker, &p.topic, p.index, false)
                        .iter()
                        .all(|(_, forwarded)| forwarded.is_some_and(|f| f >= end));
                let compacted = log.config().cleanup.compacts();
                Some((mirrored, compacted, ts.unwrap_or(i64::MIN), p))
            })
            .collect();
        let victim = candidates
            .iter()
            .min_by_key(|(mirrored, compacted, ts, _)| (*compacted, !*mirrored, *ts))
            .map(|&(mirrored, _, ts, p)| (ts, mirrored, p));
        let Some((_, _, partition)) = victim else {
            // Only active segments remain: seal the largest so the next round can evict it.
            let largest = partitions.iter().max_by_key(|p| p.lock().size_bytes());
            if let Some(p) = largest {
                let mut log = p.lock();
                if log.size_bytes() == 0 || log.segment_count() > 1 {
                    break;
                }
                if let Err(e) = log.roll(log::now_ms()) {
                    error!(topic = %p.topic, partition = p.index, error = %e, "could not seal a segment for the disk budget");
                    break;
                }
                drop(log);
                // Seal it durably before anything below it is evicted.
                if !seal(broker, p) {
                    break;
                }
                continue;
            }
            break;
        };
        let mut log = partition.lock();
        let start_before = log.log_start_offset();
        match log.delete_oldest_segment() {
            Ok(Some(report)) => {
                note_deleted(broker, partition, start_before, log.log_start_offset());
                total = total.saturating_sub(report.deleted_bytes);
                broker
                    .metrics
                    .budget_evicted_bytes
                    .inc_by(report.deleted_bytes);
                warn!(topic = %partition.topic, partition = partition.index,
                    bytes = report.deleted_bytes, log_start = log.log_start_offset(),
                    budget, "storage.max_bytes reached: evicted the oldest segment");
            }
            Ok(None) => break,
            Err(e) => {
                error!(topic = %partition.topic, partition = partition.index, error = %e, "eviction failed");
                break;
            }
        }
    }
}

/// Rolls a partition nobody wrote to for `segment.ms` and seals the old segment durably.
fn roll_if_idle(broker: &Broker, partition: &Partition, now: i64) {
    let rolled = partition.lock().roll_if_idle(now);
    match rolled {
        Ok(true) => {
            seal(broker, partition);
        }
        Ok(false) => {}
        Err(e) => {
            error!(topic = %partition.topic, partition = partition.index, error = %e, "could not roll an idle segment")
        }
    }
}

/// Makes everything appended (a just sealed segment included) durable. Returns false
/// when the fsync failed (the partition is fenced then).
fn seal(broker: &Broker, partition: &Partition) -> bool {
    let target = partition.lock().sync_target();
    let result = target.run();
    let mut log = partition.lock();
    match result {
        Ok(()) => {
            log.complete_sync(&target);
            true
        }
        Err(e) => {
            broker.metrics.fsync_errors.inc();
            log.fail_sync(&e.to_string());
            false
        }
    }
}

/// Pass-through sinks: the hub keeps only what the cluster has not acknowledged (and the
/// active segment) — sealed segments the cluster has are deleted at once.
fn drop_forwarded(broker: &Broker, partition: &Partition) {
    let (topic, index) = (&partition.topic, partition.index);
    if crate::sink_log::forwarded_ends(broker, topic, index, true).is_empty() {
        return;
    }
    // What every sink (pass-through or not) and the mirror hub already have.
    let Some(forwarded) = crate::sink_log::forwarded_ends(broker, topic, index, false)
        .iter()
        .map(|(_, end)| end.unwrap_or(-1))
        .chain(mirrored_end(broker, partition))
        .min()
    else {
        return;
    };
    let mut log = partition.lock();
    while log.oldest_sealed_end().is_some_and(|end| end <= forwarded) {
        match log.delete_oldest_segment() {
            Ok(Some(report)) => {
                broker
                    .metrics
                    .retention_deleted_bytes
                    .inc_by(report.deleted_bytes);
            }
            Ok(None) => break,
            Err(e) => {
                error!(topic = %partition.topic, partition = partition.index, error = %e,
                    "could not delete a segment the Kafka sink forwarded");
                break;
            }
        }
    }
}

/// On an edge, the hub's acknowledged end of `partition`: `None` when it is not mirrored
/// (deleting it loses nothing the hub wants); -1 while the hub's end is not known yet.
fn mirrored_end(broker: &Broker, partition: &Partition) -> Option<i64> {
    let edge = broker.mirror_edge.get()?;
    if !edge.selects(&partition.topic) {
        return None;
    }
    let key = format!("{}/{}", partition.topic, partition.index);
    Some(
        broker
            .mirror_status
            .edge(|s| s.partitions.get(&key).map_or(-1, |p| p.hub_end)),
    )
}

/// Counts, logs and shows records deleted from `[from, to)` that the hub did not have:
/// they will be a gap on the hub.
fn note_deleted(broker: &Broker, partition: &Partition, from: i64, to: i64) {
    let Some(hub_end) = mirrored_end(broker, partition) else {
        return;
    };
    let lost = to - from.max(hub_end);
    if lost <= 0 {
        return;
    }
    let topic = &partition.topic;
    warn!(%topic, partition = partition.index, from = from.max(hub_end), to, lost,
        "deleted records the mirror hub does not have yet (they become a gap on the hub)");
    broker
        .metrics
        .mirror
        .deleted_unmirrored
        .get_or_create(&tern_mirror::metrics::labels(&[("topic", topic)]))
        .inc_by(lost as u64);
    broker
        .mirror_status
        .edge_partition(topic, partition.index, |p| p.deleted_unmirrored += lost);
}
