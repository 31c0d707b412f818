//! The receiving half of a partition stream, the same in both directions: the hub receives
//! edge topics, the edge receives the command topics the hub sends down.
//!
//! After the `Open` (read by the caller, which maps the announced topic to its own name),
//! the receiver creates or syncs the topic, answers where its copy ends (`Position`), then
//! appends each frame of batches at its log end — below it a duplicate, skipped; above it
//! a gap, recorded — and acknowledges in order, each `Ack` only once what it covers is
//! durable. That is what makes delivery exactly-once however often either side restarts.

use bytes::Bytes;
use futures_util::{Sink, Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::warn;

use crate::link::send_frame;
use crate::ports::{Appended, MirrorLog, PortError};
use crate::wire::Frame;

/// Appends of one stream waiting for durability before the receiver stops reading it
/// (QUIC flow control then holds the sender back).
const PENDING_ACKS: usize = 32;

/// Why a receiver ends a stream, and whether the sender should try again soon.
pub struct Refusal {
    pub retriable: bool,
    pub reason: String,
}

impl Refusal {
    pub fn from_port(context: &str, e: PortError) -> Refusal {
        Refusal {
            retriable: !matches!(e, PortError::Refused(_)),
            reason: format!("{context}{e}"),
        }
    }

    pub fn permanent(reason: String) -> Refusal {
        Refusal {
            retriable: false,
            reason,
        }
    }

    pub fn frame(&self) -> Frame {
        Frame::Error {
            retriable: self.retriable,
            reason: self.reason.clone(),
        }
    }
}

/// What one side does with a receiver's observations (status, metrics, journals).
pub trait ReceiveReport: Send + Sync {
    /// Where the local copy ended when the stream opened.
    fn opened(&self, log_end: i64);
    /// The sender's end when it read the batches that just arrived.
    fn source_end(&self, end: i64);
    /// Batches about to be appended (the hub reads heartbeats here).
    fn batches(&self, _batches: &Bytes) {}
    fn appended(&self, appended: &Appended);
    /// A gap was jumped: record it durably before it is acknowledged.
    fn gap(&self, from: i64, to: i64) -> Result<(), String>;
    fn durable(&self, appended: &Appended);
}

/// Where an opened stream's batches go.
pub struct Target<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub partition_count: i32,
    pub configs: &'a [(String, String)],
    /// Topic configs that keep this side's value.
    pub keep_local: &'a (dyn Fn(&str) -> bool + Sync),
}

enum ToAck {
    Ack(Appended),
    Fail(Refusal),
}

/// Serves one opened stream until the sender closes it or something fails.
pub async fn receive<L, R, W>(
    log: &L,
    target: Target<'_>,
    report: &dyn ReceiveReport,
    mut reader: R,
    mut writer: W,
) -> Result<(), String>
where
    L: MirrorLog,
    R: Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
    W: Sink<Bytes, Error = std::io::Error> + Unpin,
{
    let (topic, partition) = (target.topic, target.partition);
    let position = (|| {
        if !(0..target.partition_count).contains(&partition) {
            return Err(Refusal::permanent(format!(
                "partition {partition} outside the {} partitions announced",
                target.partition_count
            )));
        }
        log.ensure_topic(
            topic,
            target.partition_count,
            target.configs,
            target.keep_local,
        )
        .map_err(|e| Refusal::from_port(&format!("cannot create {topic}: "), e))?;
        log.offsets(topic, partition)
            .map_err(|e| Refusal::from_port("", e))
    })();
    let (log_start, log_end) = match position {
        Ok(p) => p,
        Err(refusal) => {
            warn!(topic, partition, reason = %refusal.reason,
                retriable = refusal.retriable, "mirror stream refused");
            send_frame(&mut writer, refusal.frame()).await?;
            return Err(refusal.reason);
        }
    };
    report.opened(log_end);
    send_frame(&mut writer, Frame::Position { log_start, log_end }).await?;

    let (tx, mut rx) = mpsc::channel::<ToAck>(PENDING_ACKS);
    // `receive` owns the sender: when it ends, the acknowledger drains and ends too.
    let receive = async move {
        while let Some(frame) = reader.next().await {
            let bytes = frame.map_err(|e| e.to_string())?;
            let Frame::Batches { edge_end, batches } =
                Frame::decode(bytes.freeze()).map_err(|e| e.to_string())?
            else {
                return Err("expected Batches".to_string());
            };
            report.source_end(edge_end);
            report.batches(&batches);
            let appended = match append(log, report, topic, partition, &batches) {
                Ok(a) => a,
                Err(refusal) => {
                    // Stop reading; the acknowledger sends the error after the acks before it.
                    warn!(topic, partition, reason = %refusal.reason,
                        retriable = refusal.retriable, "mirror append refused");
                    let _ = tx.send(ToAck::Fail(refusal)).await;
                    return Ok(());
                }
            };
            report.appended(&appended);
            if tx.send(ToAck::Ack(appended)).await.is_err() {
                return Err("acknowledgements stopped".to_string());
            }
        }
        Ok(())
    };
    let acknowledge = async {
        while let Some(next) = rx.recv().await {
            let appended = match next {
                ToAck::Ack(a) => a,
                ToAck::Fail(refusal) => {
                    send_frame(&mut writer, refusal.frame()).await?;
                    return Err(refusal.reason);
                }
            };
            log.wait_durable(topic, partition, &appended)
                .await
                .map_err(|e| e.to_string())?;
            report.durable(&appended);
            send_frame(
                &mut writer,
                Frame::Ack {
                    log_end: appended.log_end,
                    duplicates: appended.duplicates,
                    gaps: appended.gaps.clone(),
                },
            )
            .await?;
        }
        Ok(())
    };
    tokio::try_join!(receive, acknowledge).map(|_| ())
}

/// Appends one frame of batches and records any gap it jumped.
fn append<L: MirrorLog>(
    log: &L,
    report: &dyn ReceiveReport,
    topic: &str,
    partition: i32,
    batches: &Bytes,
) -> Result<Appended, Refusal> {
    let appended = log
        .append_mirrored(topic, partition, batches)
        .map_err(|e| Refusal::from_port("", e))?;
    for (from, to) in &appended.gaps {
        report.gap(*from, *to).map_err(|reason| Refusal {
            retriable: true,
            reason,
        })?;
    }
    Ok(appended)
}
