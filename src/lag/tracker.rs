//! Fills each (group, topic, partition) window from the committed offsets: every
//! `sample_interval_ms` a commit newer than the window's newest sample is added (or
//! replaces it, if closer than `min_distance_ms`), with its lag against the log end at
//! that moment. Windows of groups whose offsets are gone are dropped, so memory follows
//! the committed offsets (themselves bounded by `groups.max_groups`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::evaluator::{group_status, partition_status, Sample, Status};
use super::LagConfig;
use crate::broker::Broker;

type Key = (String, String, i32);

pub struct LagTracker {
    config: LagConfig,
    windows: Mutex<HashMap<Key, VecDeque<Sample>>>,
}

/// One partition of a group, evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub log_end: i64,
    pub lag: i64,
    pub status: Status,
    /// How full the window is (Burrow's `complete`): 1.0 once it holds `lag.window` commits.
    pub complete: f32,
    pub window: Vec<Sample>,
}

/// A group, evaluated: its worst partition, total and largest lag.
#[derive(Debug, Clone, Serialize)]
pub struct GroupLag {
    pub status: Status,
    pub total_lag: i64,
    pub max_lag: i64,
    pub partitions: Vec<PartitionLag>,
}

impl LagTracker {
    pub fn new(config: LagConfig) -> LagTracker {
        LagTracker {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn log_end(broker: &Broker, topic: &str, partition: i32) -> Option<i64> {
        let topic = broker.topics.get(topic)?;
        Some(topic.partition(partition)?.bounds().1)
    }

    /// One pass over every group's committed offsets.
    pub fn sample(&self, broker: &Broker) {
        let mut seen: HashSet<Key> = HashSet::new();
        let groups = broker.groups.offsets.groups();
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        for group in groups {
            for (topic, partition, committed) in broker.groups.offsets.get(&group) {
                let Some(end) = Self::log_end(broker, &topic, partition) else {
                    continue;
                };
                let key = (group.clone(), topic, partition);
                let sample = Sample {
                    offset: committed.offset,
                    lag: (end - committed.offset).max(0),
                    time_ms: committed.commit_ms,
                };
                let window = windows.entry(key.clone()).or_default();
                seen.insert(key);
                match window.back_mut() {
                    Some(last)
                        if last.time_ms == sample.time_ms && last.offset == sample.offset => {}
                    Some(last)
                        if sample.time_ms.saturating_sub(last.time_ms)
                            < self.config.min_distance_ms as i64 =>
                    {
                        *last = sample
                    }
                    _ => {
                        window.push_back(sample);
                        while window.len() > self.config.window {
                            window.pop_front();
                        }
                    }
                }
            }
        }
        windows.retain(|key, _| seen.contains(key));
    }

    /// A group's lag and status now; `None` if it has no committed offsets.
    pub fn evaluate(&self, broker: &Broker, group: &str, now_ms: i64) -> Option<GroupLag> {
        let committed = broker.groups.offsets.get(group);
        if committed.is_empty() {
            return None;
        }
        let windows = self.windows.lock().ok()?;
        let mut partitions: Vec<PartitionLag> = committed
            .into_iter()
            .filter_map(|(topic, partition, c)| {
                let log_end = Self::log_end(broker, &topic, partition)?;
                let lag = (log_end - c.offset).max(0);
                let window: Vec<Sample> = windows
                    .get(&(group.to_string(), topic.clone(), partition))
                    .map(|w| w.iter().copied().collect())
                    .unwrap_or_default();
                Some(PartitionLag {
                    status: partition_status(&window, lag, now_ms),
                    complete: window.len() as f32 / self.config.window as f32,
                    topic,
                    partition,
                    committed: c.offset,
                    log_end,
                    lag,
                    window,
                })
            })
            .collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Some(GroupLag {
            status: group_status(partitions.iter().map(|p| p.status)),
            total_lag: partitions.iter().map(|p| p.lag).sum(),
            max_lag: partitions.iter().map(|p| p.lag).max().unwrap_or(0),
            partitions,
        })
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.config.sample_interval_ms)
    }
}

/// Samples until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(broker.lag.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => broker.lag.sample(&broker),
        }
    }
}

/// The status a group has right now, for `/metrics` (Burrow's codes; OK for no offsets).
pub fn status_code(lag: Option<&GroupLag>) -> i64 {
    lag.map(|l| l.status).unwrap_or(Status::Ok).code()
}
