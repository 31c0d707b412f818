//! The Kafka-protocol listener: framing and connection handling (`server`, `connection`),
//! one handler per API (`api/`), and the mapping of tern errors to Kafka codes (`errors`).

pub mod api;
pub mod connection;
pub mod decode_guard;
#[cfg(test)]
mod decode_tests;
pub mod errors;
pub mod server;
