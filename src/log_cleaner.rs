//! The background cleaner: every `storage.cleaner_interval_ms`, each compacted partition
//! whose dirty ratio (or max compaction lag) calls for it gets one cleaning pass, on a
//! blocking thread, one partition at a time (a Pi has few cores and one SD card).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::broker::Broker;
use crate::log::compaction::cleaner::CleanError;
use crate::log::compaction::swap::Step;
use crate::log::compaction::CleanerLimits;
use crate::log::{self, Partition};

/// Test hook for the crash tests: `TERN_TEST_CLEANER_ABORT_AT=<step>` makes the process
/// abort (as a kill -9 would stop it) when a swap reaches that step (`compaction::swap`).
const ABORT_AT_ENV: &str = "TERN_TEST_CLEANER_ABORT_AT";

fn limits(broker: &Broker) -> CleanerLimits {
    let storage = &broker.config.storage;
    CleanerLimits {
        key_map_bytes: usize::try_from(storage.cleaner_key_map_bytes).unwrap_or(usize::MAX),
        io_max_bytes_per_second: storage.cleaner_io_max_bytes_per_second,
    }
}

pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    if let Some(step) = abort_at() {
        warn!(
            ?step,
            "{ABORT_AT_ENV} is set: the process aborts at that cleaner step"
        );
    }
    let period = Duration::from_millis(broker.config.storage.cleaner_interval_ms);
    crate::retention::every(period, broker, shutdown, |b| {
        clean_all(b, abort_at(), false)
    })
    .await
}

fn abort_at() -> Option<Step> {
    std::env::var(ABORT_AT_ENV)
        .ok()
        .and_then(|s| Step::parse(&s))
}

/// One round over every compacted partition (`force`: clean even below the dirty ratio).
pub fn clean_all(broker: &Broker, abort_at: Option<Step>, force: bool) {
    let partitions: Vec<Arc<Partition>> = broker
        .topics
        .list()
        .iter()
        .flat_map(|t| t.partitions())
        .filter(|p| p.lock().config().cleanup.compacts())
        .collect();
    let limits = limits(broker);
    for partition in partitions {
        match partition.clean(&limits, log::now_ms(), force, abort_at) {
            Ok(Some(report)) => {
                broker.metrics.cleaner_passes.inc();
                broker
                    .metrics
                    .cleaner_reclaimed_bytes
                    .inc_by(report.bytes_before.saturating_sub(report.bytes_after));
            }
            Ok(None) => {}
            Err(CleanError::Stopped(step)) => {
                error!(topic = %partition.topic, partition = partition.index, ?step,
                    "{ABORT_AT_ENV}: aborting the process at this cleaner step");
                std::process::abort();
            }
            Err(e) => {
                broker.metrics.cleaner_errors.inc();
                error!(topic = %partition.topic, partition = partition.index, error = %e,
                    "log cleaning failed; the partition stays as it was and is tried again");
            }
        }
    }
}
