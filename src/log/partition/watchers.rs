//! Who waits for a partition's high watermark to move: long-polling fetches register a
//! wake-up here, and group commit wakes exactly those when it makes the partition's new
//! bytes durable. A produce to one partition no longer wakes every waiting fetch of the
//! broker.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Watchers {
    /// Weak: a fetch that gave up (answered, timed out, connection gone) drops its
    /// `Notify`, and the entry is pruned at the next registration or wake-up.
    waiting: Mutex<Vec<Weak<Notify>>>,
}

impl Watchers {
    /// Registers `waker` for the next move. Register before reading, then await
    /// `waker.notified()`: a move in between is not lost (`notify_one` keeps a permit).
    pub fn register(&self, waker: &Arc<Notify>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.retain(|w| w.strong_count() > 0);
        if !waiting.iter().any(|w| w.as_ptr() == Arc::as_ptr(waker)) {
            waiting.push(Arc::downgrade(waker));
        }
    }

    /// Wakes everyone registered (each once) and forgets them.
    pub fn wake(&self) {
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in waiting.iter().filter_map(Weak::upgrade) {
            waker.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_move_between_registration_and_waiting_is_not_lost() {
        let watchers = Watchers::default();
        let waker = Arc::new(Notify::new());
        watchers.register(&waker);
        watchers.register(&waker);
        watchers.wake();
        // The permit was kept: this returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), waker.notified())
            .await
            .expect("woken");
        // Woken once and forgotten: the next move does not wake it again.
        watchers.wake();
        let again =
            tokio::time::timeout(std::time::Duration::from_millis(50), waker.notified()).await;
        assert!(
            again.is_err(),
            "a wake-up after the first needs a new registration"
        );
    }

    #[test]
    fn dropped_waiters_are_pruned() {
        let watchers = Watchers::default();
        for _ in 0..100 {
            let gone = Arc::new(Notify::new());
            watchers.register(&gone);
        }
        let live = Arc::new(Notify::new());
        watchers.register(&live);
        assert_eq!(watchers.waiting.lock().expect("lock").len(), 1);
    }
}
