//! MirrorMaker's consumer group checkpoints: committed offsets of edge groups appear on
//! the hub for `<edge><separator><topic>` — the same numbers, since offsets are
//! preserved — so a consumer moved from the edge to the hub continues where it stopped.
//!
//! The edge sends a group's offsets only once the hub holds the records below them, and
//! only what changed since the hub last confirmed. The hub commits them unless the group
//! has members there (a group active on the hub is never overwritten) and only forward.

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

/// Edge side: every `checkpoint_interval_ms`, sends the selected groups' offsets that
/// changed, on one stream of `connection`, until it closes.
pub async fn send<L: MirrorLog>(
    edge: Arc<Edge>,
    log: Arc<L>,
    status: SharedStatus,
    connection: quinn::Connection,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis(edge.config.checkpoint_interval_ms);
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
    // What the hub confirmed on this connection: (group, topic, partition) → offset.
    let mut confirmed: HashMap<(String, String, i32), i64> = HashMap::new();
    // Groups the hub refused because they are active there (logged once).
    let mut kept: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for (group, offsets) in log.committed_offsets() {
            if !edge.selects_group(&group) {
                continue;
            }
            let ready: Vec<GroupOffset> = offsets
                .into_iter()
                .filter(|o| edge.selects(&o.topic) && o.offset >= 0)
                // Only once the hub holds the records below it.
                .filter(|o| hub_end(&status, &o.topic, o.partition) >= o.offset)
                .filter(|o| {
                    confirmed.get(&(group.clone(), o.topic.clone(), o.partition)) != Some(&o.offset)
                })
                .collect();
            for chunk in ready.chunks(OFFSETS_PER_FRAME) {
                match exchange(&mut writer, &mut reader, &group, chunk).await {
                    Ok(CheckpointOutcome::Applied(n)) => {
                        kept.remove(&group);
                        for o in chunk {
                            confirmed
                                .insert((group.clone(), o.topic.clone(), o.partition), o.offset);
                        }
                        status.edge(|s| {
                            s.checkpoints += u64::from(n);
                            s.last_checkpoint_ms = Some(now_ms());
                        });
                    }
                    Ok(CheckpointOutcome::Skipped(why)) => {
                        // Asked again every interval: the group may leave the hub.
                        if kept.insert(group.clone()) {
                            info!(%group, reason = %why, "the hub keeps its own offsets for this group");
                        }
                    }
                    Err(Failure::Hub(why)) => {
                        // The hub could not commit (its disk): sent again next interval.
                        warn!(%group, reason = %why, "the hub could not apply a checkpoint");
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

fn hub_end(status: &SharedStatus, topic: &str, partition: i32) -> i64 {
    status.edge(|s| {
        s.partitions
            .get(&format!("{topic}/{partition}"))
            .map_or(-1, |p| p.hub_end)
    })
}

enum Failure {
    /// The hub answered with an error: try again later on the same stream.
    Hub(String),
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
        Frame::Error { reason, .. } => Err(Failure::Hub(reason)),
        other => Err(Failure::Stream(format!(
            "expected Checkpointed, got {other:?}"
        ))),
    }
}

/// What the hub needs to apply an edge's checkpoints.
pub struct HubSide<'a, L> {
    pub log: &'a L,
    pub edge: &'a str,
    /// `<edge><separator>`: the hub's name of the edge's topic `t` is `prefix + t`.
    pub prefix: String,
    pub status: &'a SharedStatus,
    pub metrics: &'a crate::metrics::MirrorMetrics,
}

/// Hub side: serves a checkpoint stream whose first frame was `first`.
pub async fn serve<L, R, W>(
    hub: HubSide<'_, L>,
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
                topic: format!("{}{}", hub.prefix, o.topic),
                ..o
            })
            .collect();
        let answer = match hub.log.commit_checkpoint(&group, &renamed).await {
            Ok(CheckpointOutcome::Applied(applied)) => {
                if applied > 0 {
                    debug!(edge = hub.edge, %group, applied, "checkpoint applied");
                    hub.metrics
                        .checkpoints
                        .get_or_create(&crate::metrics::labels(&[("edge", hub.edge)]))
                        .inc_by(u64::from(applied));
                    hub.status.hub(|h| {
                        let e = h.edges.entry(hub.edge.to_string()).or_default();
                        e.checkpoints += u64::from(applied);
                        e.last_checkpoint_ms = Some(now_ms());
                    });
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
