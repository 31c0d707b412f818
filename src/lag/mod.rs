//! Consumer lag, judged the way LinkedIn's Burrow judges it: per partition, a sliding
//! window of the group's commits (offset, lag, time), evaluated by rules rather than
//! thresholds (`evaluator`); the windows are filled by a background sampler
//! (`tracker`). `/v1/groups`, the console and `/metrics` show the result.

pub mod evaluator;
pub mod tracker;

use serde::Deserialize;

pub use evaluator::{Sample, Status};
pub use tracker::{GroupLag, LagTracker, PartitionLag};

/// `[lag]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LagConfig {
    /// Commits kept per partition (Burrow's `intervals`).
    pub window: usize,
    /// Commits closer together than this replace the newest sample instead of adding one
    /// (Burrow's `min-distance`).
    pub min_distance_ms: u64,
    /// How often committed offsets and log ends are sampled.
    pub sample_interval_ms: u64,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            window: 10,
            min_distance_ms: 1_000,
            sample_interval_ms: 5_000,
        }
    }
}

impl LagConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(2..=100).contains(&self.window) {
            return Err(("lag.window".into(), "must be between 2 and 100".into()));
        }
        if self.sample_interval_ms < 100 {
            return Err(("lag.sample_interval_ms".into(), "must be >= 100".into()));
        }
        Ok(())
    }
}
