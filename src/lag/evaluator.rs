//! Burrow's lag evaluation rules, over one partition's window of commits. No thresholds:
//! a consumer is judged by how its committed offsets and lag moved over the window.
//!
//! With lag now, and lag in every sample of the window, the checks run from the worst:
//! 1. REWIND — a committed offset went backwards between two samples;
//! 2. STOP   — no commit for longer than the window spans (now − last > last − first);
//! 3. STALL  — commits keep coming but the offset never moves;
//! 4. WARN   — the offset moves but the lag never shrinks between two samples (slow);
//!
//! otherwise OK. A partition whose lag is zero now, or was zero at any sample of the
//! window, is OK. A group takes its worst partition, with STOP, STALL and REWIND
//! reported as ERR at group level (as Burrow's group status does).

use serde::Serialize;

/// Burrow's status names and order (worse is greater).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Err,
    Stop,
    Stall,
    Rewind,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Err => "ERR",
            Status::Stop => "STOP",
            Status::Stall => "STALL",
            Status::Rewind => "REWIND",
        }
    }

    /// Burrow's numeric code (NOTFOUND is 0), for `/metrics`.
    pub fn code(self) -> i64 {
        match self {
            Status::Ok => 1,
            Status::Warn => 2,
            Status::Err => 3,
            Status::Stop => 4,
            Status::Stall => 5,
            Status::Rewind => 6,
        }
    }
}

/// One commit of a partition as the window keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub offset: i64,
    /// The log end minus `offset` when the sample was taken.
    pub lag: i64,
    /// When the group committed it.
    pub time_ms: i64,
}

/// The status of one partition: `window` oldest first, `lag_now` against the log end now.
pub fn partition_status(window: &[Sample], lag_now: i64, now_ms: i64) -> Status {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return Status::Ok;
    };
    if lag_now <= 0 || window.iter().any(|s| s.lag <= 0) {
        return Status::Ok;
    }
    let pairs = || window.windows(2).map(|p| (p[0], p[1]));
    if pairs().any(|(a, b)| b.offset < a.offset) {
        return Status::Rewind;
    }
    if now_ms - last.time_ms > last.time_ms - first.time_ms {
        return Status::Stop;
    }
    if pairs().all(|(a, b)| b.offset == a.offset) {
        return Status::Stall;
    }
    if pairs().all(|(a, b)| b.lag >= a.lag) {
        return Status::Warn;
    }
    Status::Ok
}

/// The status of a group from its partitions' statuses.
pub fn group_status(partitions: impl IntoIterator<Item = Status>) -> Status {
    partitions
        .into_iter()
        .map(|s| s.min(Status::Err))
        .max()
        .unwrap_or(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples one second apart, starting at t = 100 s: (offset, lag) pairs.
    fn window(points: &[(i64, i64)]) -> Vec<Sample> {
        points
            .iter()
            .enumerate()
            .map(|(i, &(offset, lag))| Sample {
                offset,
                lag,
                time_ms: 100_000 + 1_000 * i as i64,
            })
            .collect()
    }

    /// One second after the last sample: not stopped.
    const SOON: i64 = 100_000 + 10_000;

    #[test]
    fn zero_lag_now_or_anywhere_in_the_window_is_ok() {
        let caught_up = window(&[(10, 5), (20, 0), (30, 3)]);
        assert_eq!(partition_status(&caught_up, 3, SOON), Status::Ok);
        let behind = window(&[(10, 5), (20, 6), (30, 7)]);
        assert_eq!(partition_status(&behind, 0, SOON), Status::Ok);
        assert_eq!(partition_status(&[], 100, SOON), Status::Ok);
    }

    #[test]
    fn an_offset_going_back_is_a_rewind_whatever_else() {
        let w = window(&[(100, 5), (120, 5), (40, 90), (60, 80)]);
        assert_eq!(partition_status(&w, 80, SOON), Status::Rewind);
        // Even when the consumer has also stopped committing.
        assert_eq!(partition_status(&w, 80, SOON + 3_600_000), Status::Rewind);
    }

    #[test]
    fn no_commit_for_longer_than_the_window_is_stop() {
        // Ten samples over 9 s; the last one 9 s ago is not yet stopped, 9.001 s is.
        let w = window(&[
            (10, 5),
            (20, 6),
            (30, 4),
            (40, 5),
            (50, 3),
            (60, 4),
            (70, 2),
            (80, 3),
            (90, 2),
            (100, 2),
        ]);
        let last = w[9].time_ms;
        assert_eq!(partition_status(&w, 2, last + 9_000), Status::Ok);
        assert_eq!(partition_status(&w, 2, last + 9_001), Status::Stop);
    }

    #[test]
    fn commits_that_never_move_with_lag_are_a_stall() {
        let w = window(&[(50, 10), (50, 20), (50, 30)]);
        assert_eq!(partition_status(&w, 30, w[2].time_ms + 500), Status::Stall);
    }

    #[test]
    fn moving_offsets_with_lag_never_shrinking_is_warn() {
        let slow = window(&[(10, 5), (20, 5), (30, 9), (40, 12)]);
        assert_eq!(
            partition_status(&slow, 12, slow[3].time_ms + 500),
            Status::Warn
        );
        let recovering = window(&[(10, 5), (20, 8), (30, 4), (40, 6)]);
        assert_eq!(
            partition_status(&recovering, 6, recovering[3].time_ms + 500),
            Status::Ok
        );
    }

    #[test]
    fn a_group_takes_its_worst_partition_with_errors_as_err() {
        assert_eq!(group_status([]), Status::Ok);
        assert_eq!(group_status([Status::Ok, Status::Warn]), Status::Warn);
        assert_eq!(
            group_status([Status::Ok, Status::Stall, Status::Warn]),
            Status::Err
        );
        assert_eq!(group_status([Status::Rewind]), Status::Err);
        assert!(Status::Rewind > Status::Stall && Status::Stall > Status::Stop);
        assert_eq!(Status::Stop.code(), 4);
    }
}
