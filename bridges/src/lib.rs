//! tern-bridges: MQTT topics in and out of tern topics, at least once; and the Kafka
//! sink, which forwards tern topics into an external Kafka cluster.
//!
//! The crate knows nothing of the broker: it reaches tern's log and metadata store only
//! through [`ports::TernLog`] and [`kafka_sink::ports::SinkLog`], which the root crate
//! implements.
//!
//! - `config`   `[[bridges.mqtt]]` tables and their validation
//! - `filter`   MQTT topic filters and matching
//! - `template` record keys from MQTT topics, MQTT topics from records
//! - `mqtt`     one connection, MQTT 3.1.1 or 5 (rumqttc)
//! - `inbound`  MQTT → durable append → PUBACK
//! - `outbound` tern topic → MQTT publish → PUBACK → durable cursor
//! - `kafka_sink`   tern topics → an external Kafka cluster, exactly once
//! - `kafka_client` one connection to a Kafka broker (the sink's and the CLI's), TLS, SASL
//! - `scram`        SCRAM-SHA-256/512 credentials, server and client (the listener's and the sink's)
//! - `backoff`, `tls`, `metrics`

pub mod backoff;
pub mod config;
pub mod filter;
pub mod inbound;
pub mod kafka_client;
pub mod kafka_sink;
pub mod metrics;
pub mod mqtt;
pub mod outbound;
pub mod ports;
pub mod scram;
pub mod template;
pub mod tls;
