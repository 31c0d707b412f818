//! Consumer groups (Kafka's classic protocol, tern as its own coordinator).
//!
//! `state` is the per-group state machine, pure and clock-free; `coordinator` drives it
//! from JoinGroup/SyncGroup/Heartbeat/LeaveGroup requests; `offsets` keeps committed
//! offsets as records of `__consumer_offsets` (`offset_records`) in tern's own log.

pub mod coordinator;
pub mod offset_records;
pub mod offsets;
pub mod sled_import;
pub mod state;

/// Longest group id tern accepts (Kafka's own limit is the 32,767 bytes of its offsets
/// record format; ids this long exist only to exhaust memory).
pub const MAX_GROUP_ID_BYTES: usize = 1024;

/// A group id tern accepts: not empty, at most [`MAX_GROUP_ID_BYTES`] (Kafka answers
/// INVALID_GROUP_ID otherwise).
pub fn valid_group_id(group: &str) -> bool {
    !group.is_empty() && group.len() <= MAX_GROUP_ID_BYTES
}
