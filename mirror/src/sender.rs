//! The sending half of a partition stream, the same in both directions: the edge sends
//! its topics up, the hub sends command topics down over the edge's connection.
//!
//! A sender opens a stream, says which partition it carries (`Open`), learns where the
//! receiver's copy ends (`Position`), sends stored batches from there (never more than
//! `window_bytes` unacknowledged) and moves on as acknowledgements arrive. Nothing is
//! stored about progress on the sending side: after any failure the receiver's answer is
//! the truth. What it observes goes to a [`SendReport`] (status and metrics of its side).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::bandwidth::Bandwidth;
use crate::batches;
use crate::link::{closed_text, next_frame, send_frame};
use crate::ports::{MirrorLog, PortError, TopicInfo};
use crate::status::now_ms;
use crate::wire::{codec, Frame};

/// Why a sender stopped.
pub enum StreamEnd {
    /// The connection is gone; the connection loop reconnects.
    Connection(String),
    /// The receiver refused (or the logs disagree): retry much later.
    Refused(String),
    /// Anything else: retry soon.
    Failed(String),
    /// A retry wait is over: the next discovery starts the partition again.
    Retry,
}

/// Where a sender stands, reported after every step.
pub struct SendProgress {
    pub source_start: i64,
    pub source_end: i64,
    /// The receiver's durable end as last acknowledged.
    pub acked: i64,
    /// Age of the oldest record sent and not yet acknowledged.
    pub seconds_behind: Option<f64>,
}

/// What one side does with a sender's observations (status, metrics, logs).
pub trait SendReport: Send + Sync {
    fn progress(&self, progress: &SendProgress);
    /// Stored bytes not yet acknowledged (refreshed about once a second).
    fn bytes_behind(&self, bytes: u64);
    fn acknowledged(&self, records: u64, bytes: u64);
    /// The receiver jumped `[from, to)`: the source no longer held it.
    fn gap(&self, from: i64, to: i64);
    fn healthy(&self);
}

/// One partition's sender.
pub struct Sender<L> {
    pub log: Arc<L>,
    pub topic: TopicInfo,
    pub partition: i32,
    /// The topic name the receiver is told (it maps it to its own name).
    pub announce: String,
    pub window_bytes: usize,
    pub max_frame_bytes: usize,
    /// The connection's cap, shared by all its senders.
    pub bandwidth: Arc<Bandwidth>,
    /// Always live (a priority topic): never queued behind a backlog.
    pub priority: bool,
    pub report: Arc<dyn SendReport>,
}

/// A frame sent and not yet acknowledged.
struct InFlight {
    next_offset: i64,
    bytes: usize,
    records: i64,
    first_timestamp: i64,
}

fn stream_end(e: impl ToString, connection: &quinn::Connection) -> StreamEnd {
    match connection.close_reason() {
        Some(reason) => StreamEnd::Connection(closed_text(&reason)),
        None => StreamEnd::Failed(e.to_string()),
    }
}

/// A write failed because the receiver stopped the stream: it sends its reason (an
/// `Error` frame, after any acks) before it stops, so read that rather than report
/// "stopped by peer".
async fn why_stopped<R>(e: String, reader: &mut R, connection: &quinn::Connection) -> StreamEnd
where
    R: futures_util::Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, next_frame(reader)).await {
            Ok(Ok(Frame::Ack { .. })) => continue,
            Ok(Ok(Frame::Error {
                retriable: true,
                reason,
            })) => return StreamEnd::Failed(reason),
            Ok(Ok(Frame::Error { reason, .. })) => return StreamEnd::Refused(reason),
            _ => return stream_end(e, connection),
        }
    }
}

impl<L: MirrorLog> Sender<L> {
    pub async fn run(
        &self,
        connection: quinn::Connection,
        shutdown: CancellationToken,
    ) -> StreamEnd {
        let (topic, partition) = (self.topic.name.as_str(), self.partition);
        let (send, recv) = match connection.open_bi().await {
            Ok(s) => s,
            Err(e) => return StreamEnd::Connection(closed_text(&e)),
        };
        let mut writer = FramedWrite::new(send, codec());
        let mut reader = FramedRead::new(recv, codec());
        let open = Frame::Open {
            topic: self.announce.clone(),
            partition,
            partition_count: self.topic.partitions,
            configs: self.topic.configs.clone(),
        };
        if let Err(e) = send_frame(&mut writer, open).await {
            return stream_end(e, &connection);
        }
        let (receiver_start, receiver_end) = match next_frame(&mut reader).await {
            Ok(Frame::Position { log_start, log_end }) => (log_start, log_end),
            Ok(Frame::Error {
                retriable: true,
                reason,
            }) => return StreamEnd::Failed(reason),
            Ok(Frame::Error { reason, .. }) => return StreamEnd::Refused(reason),
            Ok(other) => return StreamEnd::Failed(format!("expected Position, got {other:?}")),
            Err(e) => return stream_end(e, &connection),
        };
        let (source_start, source_end) = match self.log.offsets(topic, partition) {
            Ok(o) => o,
            Err(e) => return StreamEnd::Failed(e.to_string()),
        };
        if receiver_end > source_end {
            return StreamEnd::Refused(format!(
                "the receiving side holds offsets up to {receiver_end} but {topic}-{partition} \
                 here ends at {source_end} (was a data directory replaced?); not mirroring \
                 this partition"
            ));
        }
        tracing::debug!(
            topic,
            partition,
            receiver_start,
            receiver_end,
            source_start,
            source_end,
            "mirror stream open"
        );
        let mut acked = receiver_end;
        let mut next = receiver_end;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        let mut events = self.log.durable_events();
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        let mut bytes_checked = Instant::now() - Duration::from_secs(2);
        loop {
            // Fill the window with whatever is durable beyond what was sent.
            let (start, end) = match self.log.offsets(topic, partition) {
                Ok(o) => o,
                Err(e) => return StreamEnd::Failed(e.to_string()),
            };
            if next < start {
                next = start;
            }
            let frame_bytes = self.bandwidth.frame_bytes(self.max_frame_bytes);
            let window = self.bandwidth.window(self.window_bytes, frame_bytes);
            while in_flight_bytes < window && next < end {
                let bytes = match self.log.read(topic, partition, next, frame_bytes) {
                    Ok(b) => b,
                    Err(PortError::OutOfRange { start, .. }) => {
                        next = start.max(next);
                        continue;
                    }
                    Err(e) => return StreamEnd::Failed(e.to_string()),
                };
                let Some(spans) = batches::spans(&bytes) else {
                    return StreamEnd::Failed(format!(
                        "unreadable stored batches at {topic}-{partition} offset {next}"
                    ));
                };
                let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
                    break;
                };
                // Live: this frame reaches the end of the log (a quiet partition, or one
                // that has caught up). Live frames go first, on the wire (QUIC stream
                // priority) and under the cap; within a partition, order never changes.
                let live = self.priority || last.next_offset >= end;
                let _ = writer.get_ref().set_priority(i32::from(live));
                let frame = Frame::Batches {
                    edge_end: end,
                    batches: bytes.clone(),
                };
                let sent = if self.bandwidth.rate() == 0 {
                    send_frame(&mut writer, frame).await
                } else {
                    send_paced(writer.get_mut(), frame, &self.bandwidth, live).await
                };
                if let Err(e) = sent {
                    return why_stopped(e, &mut reader, &connection).await;
                }
                in_flight.push_back(InFlight {
                    next_offset: last.next_offset,
                    bytes: bytes.len(),
                    records: last.next_offset - first.base_offset.max(next),
                    first_timestamp: first.first_timestamp,
                });
                in_flight_bytes += bytes.len();
                next = last.next_offset;
            }
            if bytes_checked.elapsed() >= Duration::from_secs(1) {
                bytes_checked = Instant::now();
                if let Ok(bytes) = self.log.bytes_from(topic, partition, acked) {
                    self.report.bytes_behind(bytes);
                }
            }
            let oldest = in_flight.front().map(|f| f.first_timestamp);
            self.report.progress(&SendProgress {
                source_start: start,
                source_end: end,
                acked,
                seconds_behind: match (end > acked, oldest) {
                    (true, Some(ts)) => Some(((now_ms() - ts).max(0)) as f64 / 1000.0),
                    _ => None,
                },
            });
            tokio::select! {
                frame = next_frame(&mut reader) => match frame {
                    Ok(Frame::Ack { log_end, duplicates: _, gaps }) => {
                        while in_flight.front().is_some_and(|f| f.next_offset <= log_end) {
                            if let Some(done) = in_flight.pop_front() {
                                in_flight_bytes -= done.bytes;
                                self.report.acknowledged(done.records.max(0) as u64, done.bytes as u64);
                            }
                        }
                        for (from, to) in gaps {
                            self.report.gap(from, to);
                        }
                        acked = acked.max(log_end);
                        self.report.healthy();
                    }
                    Ok(Frame::Error { retriable: true, reason }) => return StreamEnd::Failed(reason),
                    Ok(Frame::Error { reason, .. }) => return StreamEnd::Refused(reason),
                    Ok(other) => return StreamEnd::Failed(format!("unexpected frame {other:?}")),
                    Err(e) => return stream_end(e, &connection),
                },
                changed = events.changed(), if in_flight_bytes < window => {
                    if changed.is_err() {
                        return StreamEnd::Failed("the log is closing".into());
                    }
                }
                _ = recheck.tick() => {}
                _ = shutdown.cancelled() => return StreamEnd::Connection("shutting down".into()),
            }
        }
    }
}

/// Writes one frame under the cap in pieces of [`PACED_CHUNK`] bytes, each waiting for
/// its tokens: a stored batch can be large (a megabyte) and must travel whole, but a live
/// frame on another stream then waits behind one piece, not the whole batch. The peer
/// reads an ordinary frame.
async fn send_paced(
    stream: &mut quinn::SendStream,
    frame: Frame,
    bandwidth: &Bandwidth,
    live: bool,
) -> Result<(), String> {
    let body = frame.encode().map_err(|e| e.to_string())?;
    let length = u32::try_from(body.len()).map_err(|_| "frame too large".to_string())?;
    stream
        .write_all(&length.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    for piece in body.chunks(PACED_CHUNK) {
        bandwidth.acquire(piece.len(), live).await;
        stream.write_all(piece).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Bytes written per token wait under a cap (64 ms at 2 Mbit/s).
const PACED_CHUNK: usize = 16 * 1024;
