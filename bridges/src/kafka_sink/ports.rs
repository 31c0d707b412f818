//! The sink's view of tern: a small trait the root crate implements over its log and
//! its committed offsets, so this crate never depends on the broker.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::watch;

pub use crate::ports::PortError;

/// Where a sink got to in one source partition: the next source offset to forward, and
/// the target partition's end offset right after the last forwarded batch (-1 when not
/// known). The pair is stored together, so a restart can tell what the cluster received
/// after the last save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkCursor {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub target_end: i64,
}

pub trait SinkLog: Send + Sync + 'static {
    /// Every local topic that is not internal, with its partition count.
    fn topics(&self) -> Vec<(String, i32)>;

    /// (log start, durable end) of one partition.
    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PortError>;

    /// Whole stored batches (Kafka record batch v2, as on disk) from the one holding
    /// `offset`, up to about `max_bytes` (at least one batch), never past the durable end.
    /// May block on disk reads.
    fn read_batches(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, PortError>;

    /// Changes whenever new records became durable somewhere.
    fn durable_events(&self) -> watch::Receiver<u64>;

    /// The stored cursors of a sink.
    fn load_cursors(&self, sink: &str) -> Result<Vec<SinkCursor>, PortError>;

    /// Stores cursors durably (resolves after they are).
    fn save_cursors(
        &self,
        sink: &str,
        cursors: Vec<SinkCursor>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}
