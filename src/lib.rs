//! tern — an event broker for edge gateways.
//!
//! Layout (one concept per module; docs/ARCHITECTURE.md follows a record through them):
//! - `config`     the TOML configuration; the documented default is embedded.
//! - `log`        partition logs: record batches in segments, indexes, recovery,
//!   group-commit fsync, retention primitives.
//! - `topics`     topics, partitions and topic configs (Kafka names), on-disk registry.
//! - `broker`     shared state handed to every connection and task.
//! - `kafka`      the Kafka-protocol listener: framing, one handler per API.
//! - `acls`       who a connection is and what it may do (Kafka's ACL model).
//! - `groups`     consumer groups: state machine, coordinator, committed offsets.
//! - `lag`        Burrow's lag evaluation over sliding windows of commits.
//! - `producer_ids` ids for idempotent producers (InitProducerId).
//! - `retention`  background retention and the global disk budget.
//! - `log_cleaner` background log compaction of `cleanup.policy=compact` topics.
//! - `scrub`      background verification of sealed segments (damage is quarantined).
//! - `http`       `/healthz`, `/metrics`, `/v1/mirror` and `/v1/sinks`.
//! - `mirror_namespaces` the topics only the mirror may write (`<edge>.` prefixes on a
//!   hub, downlink topics on an edge).
//! - `mirror_log` the mirror's port into the log (the mirror itself is the `mirror/` crate).
//! - `bridge_log` the MQTT bridge's port into the log (the bridge is the `bridges/` crate).
//! - `sink_log`   the Kafka sink's port into the log (the sink is in the `bridges/` crate).
//! - `metrics`    Prometheus counters and gauges.
//! - `server`     wires the above together for `tern serve`.
//! - `client`     the CLI's Kafka client (its connection is `tern_bridges::kafka_client`).
//! - `alloc`      the global allocator (lazy backing for hostile allocation sizes).

pub mod acls;
pub mod alloc;
pub mod bridge_log;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod durable_file;
#[doc(hidden)]
pub mod fuzzing;
pub mod groups;
pub mod http;
pub mod kafka;
pub mod lag;
pub mod log;
pub mod log_cleaner;
pub mod metrics;
pub mod mirror_log;
pub mod mirror_namespaces;
pub mod producer_ids;
pub mod retention;
pub mod scrub;
pub mod server;
pub mod sink_log;
pub mod topics;
pub mod users;

#[global_allocator]
static ALLOCATOR: alloc::TernAllocator = alloc::TernAllocator;
