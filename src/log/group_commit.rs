//! Group commit: one fsync covers every produce that is waiting when it starts.
//!
//! Producers append under the partition lock, then ask this task to make their offsets
//! durable and wait. The task drains every waiting request, fsyncs each touched partition
//! once (outside the partition locks, on a blocking thread), moves the high watermarks and
//! answers. Requests that arrive during an fsync form the next group, so the fsync rate
//! adapts to the disk instead of to the request rate. No request is ever answered before
//! its bytes are on disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch, Notify};
use tracing::error;

use super::sync::SyncTarget;
use super::{LogError, Partition};
use crate::metrics::Metrics;

struct SyncRequest {
    partition: Arc<Partition>,
    upto: i64,
    /// The log generation the appended bytes belong to (see `Log::is_durable`).
    generation: u64,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// The requests waiting for the next group. Registering is a push under a mutex, with no
/// task in between: a produce costs no wake-up until its answer. Requests with a waiter
/// are bounded by the connections' in-flight limits (each holds a response slot); syncs
/// nobody waits for (acks=0) are merged per partition, so a flood of them takes one entry
/// per partition.
struct Queue {
    waiting: Mutex<Pending>,
    /// Wakes the group-commit task; a notification sent while it works is kept for it.
    wake: Notify,
    /// Set when the task ends: registering then fails at once.
    closed: AtomicBool,
}

#[derive(Default)]
struct Pending {
    /// Requests with a waiter, in arrival order.
    waited: Vec<SyncRequest>,
    /// Requests without one, at most one per partition.
    unwaited: Vec<SyncRequest>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.waited.is_empty() && self.unwaited.is_empty()
    }
}

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    queue: Arc<Queue>,
    durable: watch::Receiver<u64>,
}

/// A registered wait for durability: resolves once group commit has judged the write.
pub struct DurableWait {
    answer: Option<oneshot::Receiver<Result<(), String>>>,
}

impl DurableWait {
    pub async fn wait(self) -> Result<(), LogError> {
        let Some(answer) = self.answer else {
            return Err(LogError::ShuttingDown);
        };
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(LogError::NotDurable(why)),
            Err(_) => Err(LogError::ShuttingDown),
        }
    }
}

impl GroupCommit {
    /// Starts the task. `linger` optionally holds a group open a little longer to gather
    /// more requests per fsync (useful on SD cards; zero by default).
    pub fn start(
        linger: Duration,
        metrics: Arc<Metrics>,
    ) -> (GroupCommit, tokio::task::JoinHandle<()>) {
        let queue = Arc::new(Queue {
            waiting: Mutex::new(Pending::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let task = tokio::spawn(run(Arc::clone(&queue), linger, durable_tx, metrics));
        (
            GroupCommit {
                queue,
                durable: durable_rx,
            },
            task,
        )
    }

    /// Registers a wait until every offset below `upto` in `partition`, appended in log
    /// generation `generation` (from `AppendInfo`), is fsynced. The sync happens whether
    /// or not the returned wait is awaited; it fails if a sync failed in between, even
    /// when later appends have reused those offsets.
    pub fn register(&self, partition: Arc<Partition>, upto: i64, generation: u64) -> DurableWait {
        let (tx, rx) = oneshot::channel();
        let registered = self.push(SyncRequest {
            partition,
            upto,
            generation,
            done: Some(tx),
        });
        DurableWait {
            answer: registered.then_some(rx),
        }
    }

    /// [`GroupCommit::register`] and wait.
    ///
    /// Cancel safety: dropping the future abandons only the wait; the sync still happens.
    pub async fn wait_durable(
        &self,
        partition: Arc<Partition>,
        upto: i64,
        generation: u64,
    ) -> Result<(), LogError> {
        self.register(partition, upto, generation).wait().await
    }

    /// Asks for a sync without waiting (acks=0 produces still become visible to consumers).
    pub fn request_sync(&self, partition: Arc<Partition>, upto: i64) {
        self.push(SyncRequest {
            partition,
            upto,
            generation: 0,
            done: None,
        });
    }

    /// Queues a request; false once the task has ended.
    fn push(&self, request: SyncRequest) -> bool {
        if self.queue.closed.load(Ordering::Acquire) {
            return false;
        }
        let was_empty = {
            let mut waiting = self
                .queue
                .waiting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let was_empty = waiting.is_empty();
            if request.done.is_some() {
                waiting.waited.push(request);
            } else if let Some(queued) = waiting
                .unwaited
                .iter_mut()
                .find(|queued| Arc::ptr_eq(&queued.partition, &request.partition))
            {
                queued.upto = queued.upto.max(request.upto);
            } else {
                waiting.unwaited.push(request);
            }
            was_empty
        };
        if was_empty {
            self.queue.wake.notify_one();
        }
        true
    }

    /// A counter that changes whenever some high watermark moved (for long-poll fetches).
    pub fn durable_events(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }
}

/// Ends the queue when the task ends (shutdown aborts it): queued waiters are answered
/// "shutting down" by the dropped senders, and later ones at once.
struct CloseOnDrop(Arc<Queue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        let waiting = std::mem::take(
            &mut *self
                .0
                .waiting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        drop(waiting);
    }
}

async fn run(
    queue: Arc<Queue>,
    linger: Duration,
    durable: watch::Sender<u64>,
    metrics: Arc<Metrics>,
) {
    let _close = CloseOnDrop(Arc::clone(&queue));
    // The next group's vectors: they swap with the queue's, so steady load allocates nothing.
    let mut spare = Pending::default();
    loop {
        queue.wake.notified().await;
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
        }
        let mut taken = std::mem::replace(
            &mut *queue
                .waiting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            std::mem::take(&mut spare),
        );
        if taken.is_empty() {
            spare = taken;
            continue;
        }
        let mut group = std::mem::take(&mut taken.waited);
        group.append(&mut taken.unwaited);
        // One sync target per partition touched by this group, taken under the lock.
        let mut targets: Vec<(Arc<Partition>, SyncTarget)> = Vec::new();
        for request in &group {
            if targets
                .iter()
                .any(|(p, _)| Arc::ptr_eq(p, &request.partition))
            {
                continue;
            }
            let log = request.partition.lock();
            if log.fenced().is_some() || !log.needs_sync(request.upto) {
                continue;
            }
            let target = log.sync_target();
            drop(log);
            targets.push((Arc::clone(&request.partition), target));
        }
        let started = Instant::now();
        let count = targets.len();
        // The fsyncs run outside every lock, on a blocking thread.
        let (targets, results) = tokio::task::spawn_blocking(move || {
            let results: Vec<Result<(), String>> = targets
                .iter()
                .map(|(_, t)| t.run().map_err(|e| e.to_string()))
                .collect();
            (targets, results)
        })
        .await
        .unwrap_or_else(|e| {
            (
                Vec::new(),
                vec![Err(format!("fsync task failed: {e}")); count],
            )
        });
        if count > 0 {
            metrics.observe_fsync(started.elapsed(), count);
        }
        for ((partition, target), result) in targets.iter().zip(results) {
            let mut log = partition.lock();
            match result {
                Ok(()) => {
                    if log.complete_sync(target) {
                        drop(log);
                        partition.watchers.wake();
                    }
                }
                Err(why) => {
                    metrics.fsync_errors.inc();
                    error!(topic = %partition.topic, partition = partition.index, error = %why,
                        "fsync failed: the unsynced tail is discarded and the partition fenced");
                    log.fail_sync(&why);
                }
            }
        }
        for request in group.drain(..) {
            let log = request.partition.lock();
            let outcome = if log.is_durable(request.upto, request.generation) {
                Ok(())
            } else if let Some(why) = log.fenced() {
                Err(why.to_string())
            } else if request.generation != log.generation() {
                Err("the log was cut back before this write became durable".to_string())
            } else {
                Err("the write is not durable yet".to_string())
            };
            drop(log);
            if let Some(done) = request.done {
                let _ = done.send(outcome);
            }
        }
        durable.send_modify(|generation| *generation = generation.wrapping_add(1));
        // `taken.unwaited` is empty (appended above) and keeps its capacity.
        taken.waited = group;
        spare = taken;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{split_batches, tests::make_batch};
    use crate::log::{Log, LogConfig};

    fn partition(dir: &std::path::Path, name: &str) -> Arc<Partition> {
        let (log, _) = Log::open(&dir.join(name), LogConfig::default(), 0).expect("open");
        Arc::new(Partition::new(name, 0, log))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_on_several_partitions_are_answered_once_their_bytes_are_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (commit, _task) = GroupCommit::start(Duration::ZERO, Arc::new(Metrics::new()));
        let events = commit.durable_events();
        let (a, b) = (partition(dir.path(), "a"), partition(dir.path(), "b"));
        let mut waits = Vec::new();
        for p in [&a, &b, &a] {
            let bytes = make_batch(3, b"v");
            let info = p
                .append(&split_batches(&bytes).expect("batch"), 0)
                .expect("append");
            let (commit, p) = (commit.clone(), Arc::clone(p));
            waits.push(tokio::spawn(async move {
                commit
                    .wait_durable(p, info.last_offset + 1, info.generation)
                    .await
            }));
        }
        for w in waits {
            w.await.expect("task").expect("durable");
        }
        assert_eq!(a.lock().high_watermark(), 6);
        assert_eq!(b.lock().high_watermark(), 3);
        assert!(
            events.has_changed().expect("sender alive"),
            "long polls are woken"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unwaited_syncs_take_one_entry_per_partition_and_still_happen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (commit, _task) = GroupCommit::start(Duration::ZERO, Arc::new(Metrics::new()));
        let p = partition(dir.path(), "t");
        let mut end = 0;
        for _ in 0..1000 {
            let info = p
                .append(&split_batches(&make_batch(1, b"v")).expect("batch"), 0)
                .expect("append");
            end = info.last_offset + 1;
            commit.request_sync(Arc::clone(&p), end);
            let queued = commit.queue.waiting.lock().expect("lock").unwaited.len();
            assert!(queued <= 1, "{queued} entries for one partition");
        }
        for _ in 0..200 {
            if p.lock().high_watermark() == end {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "acks=0 appends never became visible: {}",
            p.lock().high_watermark()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_from_before_a_failed_sync_is_refused_even_when_offsets_are_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (commit, _task) = GroupCommit::start(Duration::ZERO, Arc::new(Metrics::new()));
        let p = partition(dir.path(), "t");
        let bytes = make_batch(3, b"lost");
        let lost = p
            .append(&split_batches(&bytes).expect("batch"), 0)
            .expect("append");
        // The sync of those bytes failed (as group commit would record it), the partition
        // was reopened, and another append took the same offsets.
        p.lock().fail_sync("EIO (injected)");
        assert!(p.reopen_if_fenced(0).expect("reopen"));
        let other = p
            .append(&split_batches(&make_batch(3, b"new")).expect("batch"), 0)
            .expect("append");
        assert_eq!(other.base_offset, lost.base_offset);
        commit
            .wait_durable(Arc::clone(&p), other.last_offset + 1, other.generation)
            .await
            .expect("the new write is durable");
        let stale = commit
            .wait_durable(Arc::clone(&p), lost.last_offset + 1, lost.generation)
            .await;
        assert!(stale.is_err(), "the lost write is never acknowledged");
    }
}
