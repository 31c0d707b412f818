//! How far a sink got, per local partition, as soon as the cluster acknowledged (before
//! the cursor is stored). The root reads it to hold a hub's acknowledgement to an edge
//! until the cluster has the batch (pass-through), and so that the disk budget deletes
//! what the cluster has before what it has not.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

pub struct SinkProgress {
    forwarded: Mutex<HashMap<(String, i32), i64>>,
    changed: watch::Sender<u64>,
}

impl Default for SinkProgress {
    fn default() -> Self {
        SinkProgress {
            forwarded: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
        }
    }
}

impl SinkProgress {
    /// Everything of `topic`-`partition` before `offset` is in the cluster (or will never
    /// be: deleted here before it was sent).
    pub fn set(&self, topic: &str, partition: i32, offset: i64) {
        if let Ok(mut map) = self.forwarded.lock() {
            let entry = map.entry((topic.to_string(), partition)).or_insert(offset);
            *entry = (*entry).max(offset);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The forwarded end of a partition, if the sink has seen it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.forwarded
            .lock()
            .ok()?
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// Resolves once everything before `offset` is forwarded.
    pub async fn wait_for(&self, topic: &str, partition: i32, offset: i64) {
        let mut changed = self.changed.subscribe();
        while self.get(topic, partition).is_none_or(|end| end < offset) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_wakes_once_the_offset_is_forwarded_and_progress_never_goes_back() {
        let progress = Arc::new(SinkProgress::default());
        progress.set("t", 0, 10);
        progress.wait_for("t", 0, 10).await;
        let waiter = {
            let progress = Arc::clone(&progress);
            tokio::spawn(async move { progress.wait_for("t", 0, 20).await })
        };
        progress.set("t", 0, 15);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        progress.set("t", 0, 20);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        progress.set("t", 0, 3);
        assert_eq!(progress.get("t", 0), Some(20));
        assert_eq!(progress.get("t", 1), None);
    }
}
