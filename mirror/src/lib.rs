//! Mirroring over QUIC: an edge ships its topics to a hub, which stores them as
//! `<edge>.<topic>` at the same offsets, exactly once, and the hub sends command topics
//! back down the connection the edge opened (docs/MIRROR-PROTOCOL.md).
//!
//! - [`edge`]: the edge's link (connect, discover topics, one sender per partition).
//! - [`hub`]: the hub's listener (identify edges, receive their topics, send command
//!   topics down the same connection).
//! - [`sender`] / [`receiver`]: the two halves of a partition stream, the same in both
//!   directions; [`link`]: what both ends share (frame I/O, the pool of senders).
//! - [`wire`]: the frames; [`tls`]: certificates and QUIC settings; [`certs`]: `tern certs`.
//! - [`ports`]: what the mirror needs from tern's log, implemented by the root crate.
//! - [`bandwidth`]: the cap of a metered link, live data before backlog.
//! - [`checkpoints`]: consumer group offsets carried from edge to hub.
//! - [`status`], [`metrics`], [`gaps`]: what users see of it.

pub mod bandwidth;
pub mod batches;
pub mod certs;
pub mod checkpoints;
pub mod config;
pub mod edge;
pub mod gaps;
pub mod hub;
pub mod link;
pub mod metrics;
pub mod ports;
pub mod receiver;
pub mod sender;
pub mod status;
pub mod tls;
pub mod wire;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MirrorError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
