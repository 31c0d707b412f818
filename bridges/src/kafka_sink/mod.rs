//! The Kafka sink: tern topics forwarded into an external Kafka cluster (Apache Kafka,
//! Redpanda, another tern) with tern's own producer client — idempotent, acks=all,
//! stored batches sent as they are — and a durable cursor per partition.
//!
//! - `config`    `[[sinks.kafka]]` tables and their validation
//! - `ports`     the sink's view of tern (the root implements it)
//! - `batch`     stored batches and the header the sink stamps on them
//! - `cluster`   brokers, partition leaders, one connection per broker
//! - `producer`  producer id, sequences, Produce requests
//! - `admin`     ListOffsets, CreateTopics, CreatePartitions
//! - `forwarder` one sink's loop: read, send, acknowledge, store cursors, offset syncs
//! - `progress`  what the cluster has, per partition, for the hub's pass-through mode
//! - `metrics`, `status`

pub mod admin;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod forwarder;
pub mod metrics;
pub mod ports;
pub mod producer;
pub mod progress;
pub mod status;
