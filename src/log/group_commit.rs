//! Group commit: one fsync covers every produce that is waiting when it starts.
//!
//! Producers append under the partition lock, then ask this task to make their offsets
//! durable and wait. The task drains every waiting request, fsyncs each touched partition
//! once (outside the partition locks, on a blocking thread), moves the high watermarks and
//! answers. Requests that arrive during an fsync form the next group, so the fsync rate
//! adapts to the disk instead of to the request rate. No request is ever answered before
//! its bytes are on disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::error;

use super::{LogError, Partition};
use crate::metrics::Metrics;

/// Most requests one group takes; the rest wait for the next fsync.
const MAX_GROUP: usize = 4096;

struct SyncRequest {
    partition: Arc<Partition>,
    upto: i64,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::Sender<SyncRequest>,
    durable: watch::Receiver<u64>,
}

impl GroupCommit {
    /// Starts the task. `linger` optionally holds a group open a little longer to gather
    /// more requests per fsync (useful on SD cards; zero by default).
    pub fn start(
        linger: Duration,
        metrics: Arc<Metrics>,
    ) -> (GroupCommit, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_GROUP);
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let task = tokio::spawn(run(rx, linger, durable_tx, metrics));
        (
            GroupCommit {
                requests: tx,
                durable: durable_rx,
            },
            task,
        )
    }

    /// Waits until every offset below `upto` in `partition` is fsynced.
    ///
    /// Cancel safety: dropping the future abandons only the wait; the sync still happens.
    pub async fn wait_durable(&self, partition: Arc<Partition>, upto: i64) -> Result<(), LogError> {
        let (tx, rx) = oneshot::channel();
        let request = SyncRequest {
            partition,
            upto,
            done: Some(tx),
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| LogError::ShuttingDown)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(LogError::NotDurable(why)),
            Err(_) => Err(LogError::ShuttingDown),
        }
    }

    /// Asks for a sync without waiting (acks=0 produces still become visible to consumers).
    pub async fn request_sync(&self, partition: Arc<Partition>, upto: i64) {
        let _ = self
            .requests
            .send(SyncRequest {
                partition,
                upto,
                done: None,
            })
            .await;
    }

    /// A counter that changes whenever some high watermark moved (for long-poll fetches).
    pub fn durable_events(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }
}

async fn run(
    mut rx: mpsc::Receiver<SyncRequest>,
    linger: Duration,
    durable: watch::Sender<u64>,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.recv().await {
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
        }
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        // One fsync target per partition touched by this group.
        let mut targets = Vec::new();
        for request in &group {
            if targets
                .iter()
                .any(|(p, _, _): &(Arc<Partition>, _, _)| Arc::ptr_eq(p, &request.partition))
            {
                continue;
            }
            let log = request.partition.lock();
            if log.high_watermark() >= request.upto {
                continue;
            }
            let (file, point) = log.sync_target();
            drop(log);
            targets.push((Arc::clone(&request.partition), file, point));
        }
        let started = Instant::now();
        let files: Vec<_> = targets.iter().map(|(_, f, _)| Arc::clone(f)).collect();
        let results = tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|f| f.sync_data().map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| vec![Err(format!("fsync task failed: {e}")); targets.len()]);
        if !targets.is_empty() {
            metrics.observe_fsync(started.elapsed(), targets.len());
        }
        let mut failures: Vec<(Arc<Partition>, String)> = Vec::new();
        for ((partition, _, point), result) in targets.into_iter().zip(results) {
            let mut log = partition.lock();
            match result {
                Ok(()) => log.mark_durable(point),
                Err(why) => {
                    error!(topic = %partition.topic, partition = partition.index, error = %why,
                        "fsync failed: the unsynced tail is discarded and its producers get an error");
                    if let Err(e) = log.discard_unsynced() {
                        error!(topic = %partition.topic, partition = partition.index, error = %e,
                            "could not discard the unsynced tail");
                    }
                    drop(log);
                    failures.push((partition, why));
                }
            }
        }
        for request in group {
            let outcome = match failures
                .iter()
                .find(|(p, _)| Arc::ptr_eq(p, &request.partition))
            {
                Some((_, why)) => Err(why.clone()),
                None if request.partition.lock().high_watermark() >= request.upto => Ok(()),
                None => Err("the log was cut back before this write became durable".to_string()),
            };
            if let Some(done) = request.done {
                let _ = done.send(outcome);
            }
        }
        durable.send_modify(|generation| *generation = generation.wrapping_add(1));
    }
}
