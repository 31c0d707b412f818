//! tern's Kafka client, for the CLI and tests. The connection itself lives in
//! `tern_bridges::kafka_client` (the Kafka sink forwards with it too); this module adds
//! what only the CLI needs: building record batches and the Java client's partitioner.

pub mod partitioner;
pub mod records;

pub use tern_bridges::kafka_client::{check_partition, error_name, ClientError, KafkaClient};
