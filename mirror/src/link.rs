//! What both ends of a link share: frame I/O on a stream, the words for a closed
//! connection, and the pool that keeps one sender running per partition (restarting
//! failed ones after a wait), used by the edge for its topics and by the hub for the
//! command topics it sends down.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ports::{MirrorLog, TopicInfo};
use crate::sender::{Sender, StreamEnd};
use crate::tls;
use crate::wire::{close, Frame};

/// How long a partition whose stream failed waits before the next try.
const PARTITION_RETRY: Duration = Duration::from_secs(2);
/// How long a partition the receiver refused waits (the cause needs a person).
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// The next frame of a stream.
pub async fn next_frame<R>(reader: &mut R) -> Result<Frame, String>
where
    R: Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
{
    match reader.next().await {
        Some(Ok(bytes)) => Frame::decode(bytes.freeze()).map_err(|e| e.to_string()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the peer closed the stream".into()),
    }
}

pub async fn send_frame<W>(writer: &mut W, frame: Frame) -> Result<(), String>
where
    W: Sink<Bytes, Error = std::io::Error> + Unpin,
{
    let bytes = frame.encode().map_err(|e| e.to_string())?;
    writer.send(bytes).await.map_err(|e| e.to_string())
}

/// Why a connection closed, with the peer's own words when it closed it on purpose.
pub fn closed_text(error: &quinn::ConnectionError) -> String {
    match error {
        quinn::ConnectionError::ApplicationClosed(closed) => {
            let reason = String::from_utf8_lossy(&closed.reason);
            let code = u64::from(closed.error_code);
            if code == u64::from(close::REFUSED) {
                format!("the hub refused this edge: {reason}")
            } else {
                format!("the peer closed the connection: {reason}")
            }
        }
        other => tls::explain(other),
    }
}

/// A sender that stopped, for its side to show.
pub struct Ended {
    pub topic: String,
    pub partition: i32,
    pub reason: String,
}

/// One sender per partition on one connection.
#[derive(Default)]
pub struct SenderPool {
    tasks: JoinSet<((String, i32), StreamEnd)>,
    running: HashSet<(String, i32)>,
    /// The configs each topic's partition-0 stream announced, and how to stop it: a
    /// config change reopens that stream, and the receiver syncs configs on `Open`.
    announced: HashMap<String, (Vec<(String, String)>, AbortHandle)>,
}

impl SenderPool {
    /// Starts a sender for each partition of `topic` that has none; `make` builds it.
    pub fn discover<L: MirrorLog>(
        &mut self,
        topic: &TopicInfo,
        make: impl Fn(i32) -> Sender<L>,
        connection: &quinn::Connection,
        shutdown: &CancellationToken,
    ) {
        if let Some((configs, handle)) = self.announced.get(&topic.name) {
            if *configs != topic.configs {
                handle.abort();
                self.running.remove(&(topic.name.clone(), 0));
                self.announced.remove(&topic.name);
                info!(topic = %topic.name, "topic configs changed; announcing them to the receiver");
            }
        }
        for partition in 0..topic.partitions {
            let key = (topic.name.clone(), partition);
            if !self.running.insert(key.clone()) {
                continue;
            }
            let sender = make(partition);
            let connection = connection.clone();
            let shutdown = shutdown.clone();
            let handle = self.tasks.spawn(async move {
                let end = sender.run(connection, shutdown).await;
                (key, end)
            });
            if partition == 0 {
                self.announced
                    .insert(topic.name.clone(), (topic.configs.clone(), handle));
            }
        }
    }

    /// Waits for a sender to stop and schedules its restart: at once after a lost
    /// connection (the next one restarts everything), after a wait otherwise. `None`
    /// when no sender runs.
    pub async fn next_end(&mut self) -> Option<Ended> {
        loop {
            let Ok(((topic, partition), end)) = self.tasks.join_next().await? else {
                continue; // aborted for a config change: discovery restarts it
            };
            let (reason, retry) = match end {
                StreamEnd::Retry => {
                    self.running.remove(&(topic, partition));
                    continue;
                }
                StreamEnd::Connection(why) => (why, Duration::ZERO),
                StreamEnd::Refused(why) => {
                    error!(%topic, partition, reason = %why, "the receiver refused this partition; retrying in 30 s");
                    (why, REFUSED_RETRY)
                }
                StreamEnd::Failed(why) => {
                    warn!(%topic, partition, reason = %why, "mirror stream failed; retrying");
                    (why, PARTITION_RETRY)
                }
            };
            // Out of `running` only after the wait: the next discovery restarts it.
            let key = (topic.clone(), partition);
            if retry.is_zero() {
                self.running.remove(&key);
            } else {
                self.tasks.spawn(async move {
                    tokio::time::sleep(retry).await;
                    (key, StreamEnd::Retry)
                });
            }
            return Some(Ended {
                topic,
                partition,
                reason,
            });
        }
    }
}

/// `Open`'s fields: the partition a stream carries.
pub struct Opened {
    pub topic: String,
    pub partition: i32,
    pub partition_count: i32,
    pub configs: Vec<(String, String)>,
}

/// What a stream the peer opened carries, from its first frame.
pub enum Incoming {
    Partition(Opened),
    /// Group checkpoints; the first `Checkpoint` frame.
    Checkpoints(Frame),
}

/// Reads the first frame of a stream the peer opened; `None` if it closed it at once.
pub async fn incoming<R>(reader: &mut R) -> Result<Option<Incoming>, String>
where
    R: Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
{
    let first = match reader.next().await {
        Some(Ok(bytes)) => Frame::decode(bytes.freeze()).map_err(|e| e.to_string())?,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Ok(None),
    };
    match first {
        Frame::Open {
            topic,
            partition,
            partition_count,
            configs,
        } => Ok(Some(Incoming::Partition(Opened {
            topic,
            partition,
            partition_count,
            configs,
        }))),
        first @ Frame::Checkpoint { .. } => Ok(Some(Incoming::Checkpoints(first))),
        other => Err(format!("expected Open or Checkpoint, got {other:?}")),
    }
}
