//! Capped exponential backoff with full jitter for reconnects (forever, never giving up).

use std::time::Duration;

pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Backoff {
            min_ms,
            max_ms,
            attempt: 0,
            seed,
        }
    }

    /// The next wait: uniformly random in [min, min(max, min·2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min_ms
            .saturating_mul(1u64 << self.attempt.min(30))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let span = ceiling.saturating_sub(self.min_ms) + 1;
        Duration::from_millis(self.min_ms + self.seed % span)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(100, 1_000);
        let delays: Vec<u64> = (0..20).map(|_| b.next_delay().as_millis() as u64).collect();
        assert!(
            delays.iter().all(|d| (100..=1_000).contains(d)),
            "{delays:?}"
        );
        assert_eq!(delays[0], 100, "the first wait is the minimum");
        assert!(
            delays[10..].iter().any(|d| *d > 500),
            "later waits reach toward the cap"
        );
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
