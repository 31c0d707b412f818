//! The Kafka-protocol listeners: their security (`listener`: PLAINTEXT, SSL, SASL_*;
//! `sasl`), framing and connection handling (`server`, `connection`), one handler per API
//! (`api/`), and the mapping of tern errors to Kafka codes (`errors`).

pub mod api;
pub mod connection;
pub mod decode_guard;
#[cfg(test)]
mod decode_tests;
pub mod errors;
pub mod listener;
pub mod sasl;
pub mod server;
