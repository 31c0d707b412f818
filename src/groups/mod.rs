//! Consumer groups (Kafka's classic protocol, tern as its own coordinator).
//!
//! `state` is the per-group state machine, pure and clock-free. The coordinator that
//! drives it from JoinGroup/SyncGroup/Heartbeat/LeaveGroup requests, the durable offset
//! store (sled) and the API handlers come next (issue: consumer groups).

pub mod coordinator;
pub mod offsets;
pub mod state;
