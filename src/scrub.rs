//! The background scrub: every sealed segment is read back and verified (CRC, structure)
//! at least once after tern starts, and each segment sealed later once it is synced, at a
//! low I/O rate (`storage.scrub_bytes_per_sec`) so that an SD card keeps serving clients.
//! Damage found is quarantined exactly as a read would (logged, counted, never served).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::log::{damage, Partition};

/// How often the scrub looks for segments sealed since its last pass.
const PASS_INTERVAL: Duration = Duration::from_secs(60);

pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let rate = broker.config.storage.scrub_bytes_per_sec;
    if rate == 0 {
        info!("scrub disabled (storage.scrub_bytes_per_sec = 0)");
        return;
    }
    loop {
        let pass = {
            let broker = Arc::clone(&broker);
            let shutdown = shutdown.clone();
            tokio::task::spawn_blocking(move || scrub_pass(&broker, rate, &shutdown))
        };
        let _ = pass.await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PASS_INTERVAL) => {}
        }
    }
}

/// Verifies every sealed segment not verified yet; returns the bytes read.
fn scrub_pass(broker: &Broker, rate: u64, shutdown: &CancellationToken) -> u64 {
    let partitions: Vec<Arc<Partition>> = broker
        .topics
        .list()
        .iter()
        .flat_map(|t| t.partitions())
        .collect();
    let mut total = 0u64;
    for partition in partitions {
        loop {
            if shutdown.is_cancelled() {
                return total;
            }
            let Some((base, file, size)) = partition.lock().next_unscrubbed() else {
                break;
            };
            let mut found = Vec::new();
            let verified = damage::verify(
                &file,
                0,
                size,
                |at, _, reason| found.push((at, reason.to_string())),
                |bytes| {
                    total += bytes;
                    // Pace: `bytes` at `rate` bytes per second.
                    std::thread::sleep(Duration::from_secs_f64(bytes as f64 / rate as f64));
                },
            );
            match verified {
                Ok(_) => {
                    for (at, reason) in found {
                        if let Err(e) = partition.quarantine(base, at, &reason) {
                            warn!(topic = %partition.topic, partition = partition.index, error = %e, "cannot quarantine");
                        }
                    }
                }
                Err(e) => warn!(topic = %partition.topic, partition = partition.index,
                    segment = base, error = %e, "scrub could not read a segment"),
            }
            partition.lock().mark_scrubbed(base);
        }
    }
    total
}
