//! MirrorMaker's consumer group checkpoints: committed offsets of edge groups appear on
//! the hub for `<edge><separator><topic>` — the same numbers, since offsets are
//! preserved — so a consumer moved from the edge to the hub continues where it stopped.
//!
//! The edge sends a group's offsets only once the hub holds the records below them, and
//! only what changed since the hub last confirmed. The hub commits them unless the group
//! has members there (a group active on the hub is never overwritten) and only forward.
//! The same runs the other way for consumers moving back: the hub sends its groups'
//! offsets on `<edge>.<topic>` to the edge, which commits them on `<topic>` by the same
//! rules.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Edge;
use crate::link::{next_frame, send_frame};
use crate::ports::{CheckpointOutcome, GroupOffset, MirrorLog};
use crate::status::{now_ms, SharedStatus};
use crate::wire::{codec, Frame};

/// Offsets per `Checkpoint` frame (a frame's count is a u16).
const OFFSETS_PER_FRAME: usize = 4096;

/// The sending side of checkpoints, either way: which offsets are ready to go, named as
/// on the edge, and what to do with what the other side applied.
pub trait CheckpointSource: Send + Sync {
    /// Selected groups' committed offsets whose records the other side holds.
    fn ready(&self) -> Vec<(String, Vec<GroupOffset>)>;
    fn applied(&self, count: u32);
}

/// Every `every`, sends the offsets `source` has ready that changed since the other side
/// last confirmed them, on one stream of `connection`, until it closes.
pub async fn send(
    source: impl CheckpointSource,
    every: Duration,
    connection: quinn::Connection,
    shutdown: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    let (send, recv) = match connection.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "no checkpoint stream");
            return;
        }
    };
    let mut writer = FramedWrite::new(send, codec());
    let mut reader = FramedRead::new(recv, codec());
    // What the other side confirmed on this connection: (group, topic, partition) → offset.
    let mut confirmed: HashMap<(String, String, i32), i64> = HashMap::new();
    // Groups the other side refused because they are active there (logged once).
    let mut kept: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for (group, offsets) in source.ready() {
            let changed: Vec<GroupOffset> = offsets
                .into_iter()
                .filter(|o| {
                    confirmed.get(&(group.clone(), o.topic.clone(), o.partition)) != Some(&o.offset)
                })
                .collect();
            for chunk in changed.chunks(OFFSETS_PER_FRAME) {
                match exchange(&mut writer, &mut reader, &group, chunk).await {
                    Ok(CheckpointOutcome::Applied(n)) => {
                        kept.remove(&group);
                        for o in chunk {
                            confirmed
                                .insert((group.clone(), o.topic.clone(), o.partition), o.offset);
                        }
                        source.applied(n);
                    }
                    Ok(CheckpointOutcome::Skipped(why)) => {
                        // Asked again every interval: the group may leave the other side.
                        if kept.insert(group.clone()) {
                            info!(%group, reason = %why, "the other side keeps its own offsets for this group");
                        }
                    }
                    Err(Failure::Other(why)) => {
                        // It could not commit (its disk): sent again next interval.
                        warn!(%group, reason = %why, "a checkpoint could not be applied");
                    }
                    Err(Failure::Stream(e)) => {
                        if connection.close_reason().is_none() {
                            warn!(%group, error = %e, "checkpoint stream failed");
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// The edge's checkpoints to the hub: its selected groups, for mirrored topics, once the
/// hub acknowledged the records below each offset.
pub struct FromEdge<L> {
    pub edge: Arc<Edge>,
    pub log: Arc<L>,
    pub status: SharedStatus,
}

impl<L: MirrorLog> CheckpointSource for FromEdge<L> {
    fn ready(&self) -> Vec<(String, Vec<GroupOffset>)> {
        self.log
            .committed_offsets()
            .into_iter()
            .filter(|(group, _)| self.edge.selects_group(group))
            .map(|(group, offsets)| {
                let ready = offsets
                    .into_iter()
                    .filter(|o| self.edge.selects(&o.topic) && o.offset >= 0)
                    .filter(|o| hub_end(&self.status, &o.topic, o.partition) >= o.offset)
                    .collect();
                (group, ready)
            })
            .collect()
    }

    fn applied(&self, count: u32) {
        self.status.edge(|s| {
            s.checkpoints += u64::from(count);
            s.last_checkpoint_ms = Some(now_ms());
        });
    }
}

/// The hub's checkpoints back to an edge (consumers moving from the hub to the edge): its
/// selected groups' offsets on `<edge><separator><topic>`, named as on the edge. The edge
/// holds every record the hub has of its own topics.
pub struct FromHub<L> {
    pub hub: crate::config::Hub,
    pub log: Arc<L>,
    pub edge: String,
    pub status: SharedStatus,
}

impl<L: MirrorLog> CheckpointSource for FromHub<L> {
    fn ready(&self) -> Vec<(String, Vec<GroupOffset>)> {
        let prefix = format!("{}{}", self.edge, self.hub.config.separator);
        self.log
            .committed_offsets()
            .into_iter()
            .filter(|(group, _)| self.hub.selects_group(group))
            .map(|(group, offsets)| {
                let mine = offsets
                    .into_iter()
                    .filter(|o| o.offset >= 0)
                    .filter_map(|o| {
                        let topic = o.topic.strip_prefix(&prefix)?.to_string();
                        Some(GroupOffset { topic, ..o })
                    })
                    .collect();
                (group, mine)
            })
            .filter(|(_, offsets): &(String, Vec<GroupOffset>)| !offsets.is_empty())
            .collect()
    }

    fn applied(&self, count: u32) {
        self.status.hub(|h| {
            let e = h.edges.entry(self.edge.clone()).or_default();
            e.checkpoints_to_edge += u64::from(count);
        });
    }
}

fn hub_end(status: &SharedStatus, topic: &str, partition: i32) -> i64 {
    status.edge(|s| {
        s.partitions
            .get(&format!("{topic}/{partition}"))
            .map_or(-1, |p| p.hub_end)
    })
}

enum Failure {
    /// The other side answered with an error: try again later on the same stream.
    Other(String),
    /// The stream broke.
    Stream(String),
}

async fn exchange<W, R>(
    writer: &mut W,
    reader: &mut R,
    group: &str,
    offsets: &[GroupOffset],
) -> Result<CheckpointOutcome, Failure>
where
    W: Sink<bytes::Bytes, Error = std::io::Error> + Unpin,
    R: Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
{
    let frame = Frame::Checkpoint {
        group: group.to_string(),
        offsets: offsets.to_vec(),
    };
    send_frame(writer, frame).await.map_err(Failure::Stream)?;
    match next_frame(reader).await.map_err(Failure::Stream)? {
        Frame::Checkpointed {
            applied, skipped, ..
        } if skipped.is_empty() => Ok(CheckpointOutcome::Applied(applied)),
        Frame::Checkpointed { skipped, .. } => Ok(CheckpointOutcome::Skipped(skipped)),
        Frame::Error { reason, .. } => Err(Failure::Other(reason)),
        other => Err(Failure::Stream(format!(
            "expected Checkpointed, got {other:?}"
        ))),
    }
}

/// The receiving side of a checkpoint stream.
pub struct Receiving<'a, L> {
    pub log: &'a L,
    /// Prepended to the edge's topic names (`<edge><separator>` on a hub, empty on an edge).
    pub prefix: String,
    /// What to do with the offsets committed (status, metrics).
    pub on_applied: &'a (dyn Fn(&str, u32) + Sync),
}

/// Serves a checkpoint stream whose first frame was `first`: commits each group's offsets
/// here unless the group has members here, and only forward.
pub async fn serve<L, R, W>(
    side: Receiving<'_, L>,
    first: Frame,
    mut reader: R,
    mut writer: W,
) -> Result<(), String>
where
    L: MirrorLog,
    R: Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
    W: Sink<bytes::Bytes, Error = std::io::Error> + Unpin,
{
    let mut frame = first;
    loop {
        let Frame::Checkpoint { group, offsets } = frame else {
            return Err("expected Checkpoint".into());
        };
        let renamed: Vec<GroupOffset> = offsets
            .into_iter()
            .map(|o| GroupOffset {
                topic: format!("{}{}", side.prefix, o.topic),
                ..o
            })
            .collect();
        let answer = match side.log.commit_checkpoint(&group, &renamed).await {
            Ok(CheckpointOutcome::Applied(applied)) => {
                if applied > 0 {
                    debug!(%group, applied, "checkpoint applied");
                    (side.on_applied)(&group, applied);
                }
                Frame::Checkpointed {
                    group,
                    applied,
                    skipped: String::new(),
                }
            }
            Ok(CheckpointOutcome::Skipped(why)) => Frame::Checkpointed {
                group,
                applied: 0,
                skipped: why,
            },
            Err(e) => Frame::Error {
                retriable: true,
                reason: e.to_string(),
            },
        };
        send_frame(&mut writer, answer).await?;
        frame = next_frame(&mut reader).await?;
    }
}
