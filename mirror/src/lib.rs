//! Mirroring over QUIC: an edge ships its topics to a hub, which stores them as
//! `<edge>.<topic>` at the same offsets, exactly once (docs/MIRROR-PROTOCOL.md).
//!
//! - [`edge`]: the edge's link (connect, discover topics, one sender per partition).
//! - [`hub`]: the hub's listener (identify edges, append at the log end, acknowledge).
//! - [`wire`]: the frames; [`tls`]: certificates and QUIC settings; [`certs`]: `tern certs`.
//! - [`ports`]: what the mirror needs from tern's log, implemented by the root crate.

pub mod certs;
pub mod config;
pub mod ports;
pub mod tls;
pub mod wire;
