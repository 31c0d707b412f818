//! The bandwidth cap of a metered link (`mirror.max_bytes_per_sec`), shared by every
//! stream of one connection, and the rule that live data goes before a backlog.
//!
//! A token bucket that may go into debt: a frame takes its bytes at once, and the next
//! one waits until the debt is paid back. Frames are small under a cap (a quarter second
//! of it), so a live frame never waits behind more than that. While a live frame waits,
//! backlog frames do not take tokens: after a long outage, fresh records of quiet
//! partitions (alarms, heartbeats) reach the other side within a frame's time while the
//! backlog of busy ones drains at the cap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Tokens kept at most: a short burst after an idle period.
const BURST: Duration = Duration::from_millis(100);
/// Frame size under a cap: this much of a second's budget.
const FRAME_TIME: Duration = Duration::from_millis(250);
/// Smallest frame under a cap (one typical batch must fit).
const MIN_FRAME: usize = 16 * 1024;
/// How often a backlog frame looks again while a live one is waiting.
const YIELD: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub struct Bandwidth {
    /// Bytes per second; 0: unlimited.
    rate: u64,
    bucket: Mutex<Bucket>,
    live_waiting: AtomicUsize,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bandwidth {
    pub fn new(bytes_per_sec: u64) -> Bandwidth {
        Bandwidth {
            rate: bytes_per_sec,
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                refilled: Instant::now(),
            }),
            live_waiting: AtomicUsize::new(0),
        }
    }

    pub fn unlimited() -> Bandwidth {
        Bandwidth::new(0)
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The largest frame to send: `max_frame_bytes`, less under a cap.
    pub fn frame_bytes(&self, max_frame_bytes: usize) -> usize {
        if self.rate == 0 {
            return max_frame_bytes;
        }
        let budget = (self.rate as f64 * FRAME_TIME.as_secs_f64()) as usize;
        max_frame_bytes.min(budget.max(MIN_FRAME))
    }

    /// Unacknowledged bytes to allow: `window_bytes`, less under a cap (two seconds of
    /// it, at least two frames), so that a sender returns to its acknowledgements and its
    /// status often even on a slow link.
    pub fn window(&self, window_bytes: usize, frame_bytes: usize) -> usize {
        if self.rate == 0 {
            return window_bytes;
        }
        let two_seconds = usize::try_from(self.rate.saturating_mul(2)).unwrap_or(usize::MAX);
        window_bytes.min(two_seconds.max(2 * frame_bytes))
    }

    /// Waits until `bytes` may be sent; `live` frames go before backlog frames.
    pub async fn acquire(&self, bytes: usize, live: bool) {
        if self.rate == 0 {
            return;
        }
        if live {
            self.live_waiting.fetch_add(1, Ordering::SeqCst);
        }
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let earned = now.duration_since(bucket.refilled).as_secs_f64() * self.rate as f64;
                let burst = self.rate as f64 * BURST.as_secs_f64();
                bucket.tokens = (bucket.tokens + earned).min(burst);
                bucket.refilled = now;
                let others_first = !live && self.live_waiting.load(Ordering::SeqCst) > 0;
                if bucket.tokens >= 0.0 && !others_first {
                    bucket.tokens -= bytes as f64;
                    None
                } else if bucket.tokens < 0.0 {
                    Some(Duration::from_secs_f64(-bucket.tokens / self.rate as f64))
                } else {
                    Some(YIELD)
                }
            };
            match wait {
                None => break,
                Some(d) => tokio::time::sleep(d.max(Duration::from_millis(1))).await,
            }
        }
        if live {
            self.live_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_and_live_frames_overtake_the_backlog() {
        let cap = std::sync::Arc::new(Bandwidth::new(100_000));
        assert_eq!(cap.frame_bytes(1 << 20), 25_000);
        assert_eq!(cap.window(4 << 20, 25_000), 200_000);
        let start = tokio::time::Instant::now();
        // A backlog sender: 40 frames of 25 kB = 1 MB at 100 kB/s ≈ 10 s.
        let backlog = {
            let cap = std::sync::Arc::clone(&cap);
            tokio::spawn(async move {
                for _ in 0..40 {
                    cap.acquire(25_000, false).await;
                }
                start.elapsed()
            })
        };
        // A live frame arriving mid-way waits at most about one backlog frame.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let asked = tokio::time::Instant::now();
        cap.acquire(500, true).await;
        let waited = asked.elapsed();
        assert!(
            waited <= Duration::from_millis(300),
            "live frame waited {waited:?}"
        );
        let drained = backlog.await.expect("backlog task");
        let rate = 1_000_500.0 / drained.as_secs_f64();
        assert!(
            (90_000.0..=110_000.0).contains(&rate),
            "{rate} B/s for a 100 kB/s cap"
        );
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let cap = Bandwidth::unlimited();
        assert_eq!(cap.frame_bytes(1 << 20), 1 << 20);
        assert_eq!(cap.window(4 << 20, 1 << 20), 4 << 20);
        cap.acquire(1 << 30, false).await;
    }
}
