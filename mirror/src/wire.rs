//! The mirror protocol's frames (version 1, ALPN `tern-mirror/1`), byte by byte in
//! docs/MIRROR-PROTOCOL.md. Every QUIC stream carries length-prefixed frames: a u32
//! big-endian length, then the frame: one type byte and its fields (integers big-endian,
//! strings as a u16 length and UTF-8 bytes).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::LengthDelimitedCodec;

/// The ALPN protocol id of this version. A peer that offers no version we speak fails the
/// TLS handshake with `no_application_protocol`.
pub const ALPN: &[u8] = b"tern-mirror/1";

/// Largest frame either side accepts: a frame of batches carries at most one read of
/// `max_frame_bytes` (or one batch, if a single batch is larger), well below this.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// QUIC application error codes used to close a connection.
pub mod close {
    /// The hub refused the edge (identity, name); the reason says why.
    pub const REFUSED: u32 = 1;
    /// A newer connection of the same edge replaced this one.
    pub const REPLACED: u32 = 2;
    /// The peer broke the protocol.
    pub const PROTOCOL: u32 = 3;
    /// Shutting down.
    pub const SHUTDOWN: u32 = 4;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Edge → hub, first frame of the control stream: the edge's name, which its
    /// certificate must be valid for, and the cap of its link (bytes per second, 0: none),
    /// which the hub keeps to when sending down. The cap is optional on the wire (absent:
    /// 0), so a hub reads Hellos of edges that predate it.
    Hello {
        edge: String,
        max_bytes_per_sec: u64,
    },
    /// Hub → edge: accepted; hub topics for this edge are `<prefix><topic>`.
    Welcome { prefix: String },
    /// Edge → hub, first frame of a partition stream.
    Open {
        topic: String,
        partition: i32,
        partition_count: i32,
        configs: Vec<(String, String)>,
    },
    /// Hub → edge, answer to `Open`: where the hub's copy starts and ends. The edge sends
    /// from `log_end`: the hub's log is the truth, the edge's cursor only a hint.
    Position { log_start: i64, log_end: i64 },
    /// Edge → hub: stored batches, exactly as the edge holds them, starting at a batch
    /// boundary; `edge_end` is the edge's durable end when they were read (for lag).
    Batches { edge_end: i64, batches: Bytes },
    /// Hub → edge: everything below `log_end` is durable on the hub. `duplicates` counts
    /// batches the hub already had; `gaps` are ranges the hub jumped over because the edge
    /// no longer had them.
    Ack {
        log_end: i64,
        duplicates: u64,
        gaps: Vec<(i64, i64)>,
    },
    /// Either side: the stream ends because of this error. `retriable`: worth trying again
    /// soon (a busy or failing disk); otherwise only a person can fix it.
    Error { retriable: bool, reason: String },
    /// Edge → hub, on a checkpoint stream: a consumer group's committed offsets on the
    /// edge, for the hub to commit on `<edge><separator><topic>` (offsets are the same).
    Checkpoint {
        group: String,
        offsets: Vec<GroupOffset>,
    },
    /// Hub → edge: what became of a `Checkpoint`: `applied` entries committed durably, or
    /// none and the reason (e.g. the group is active on the hub).
    Checkpointed {
        group: String,
        applied: u32,
        skipped: String,
    },
}

/// One committed offset of a group: topic (the edge's name), partition, offset, metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const OPEN: u8 = 10;
const POSITION: u8 = 11;
const BATCHES: u8 = 12;
const ACK: u8 = 13;
const ERROR: u8 = 14;
const CHECKPOINT: u8 = 20;
const CHECKPOINTED: u8 = 21;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame ends early (reading {0})")]
    Short(&'static str),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("string field is not UTF-8")]
    NotUtf8,
    #[error("{0} too long to encode")]
    TooLong(&'static str),
    #[error("{0} bytes left over after the frame")]
    Trailing(usize),
}

/// The length-delimited codec every stream uses.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

fn put_str(out: &mut BytesMut, s: &str, what: &'static str) -> Result<(), WireError> {
    let len = u16::try_from(s.len()).map_err(|_| WireError::TooLong(what))?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

impl Frame {
    pub fn encode(&self) -> Result<Bytes, WireError> {
        let mut out = BytesMut::with_capacity(64);
        match self {
            Frame::Hello {
                edge,
                max_bytes_per_sec,
            } => {
                out.put_u8(HELLO);
                put_str(&mut out, edge, "edge name")?;
                out.put_u64(*max_bytes_per_sec);
            }
            Frame::Welcome { prefix } => {
                out.put_u8(WELCOME);
                put_str(&mut out, prefix, "prefix")?;
            }
            Frame::Open {
                topic,
                partition,
                partition_count,
                configs,
            } => {
                out.put_u8(OPEN);
                put_str(&mut out, topic, "topic")?;
                out.put_i32(*partition);
                out.put_i32(*partition_count);
                let count =
                    u16::try_from(configs.len()).map_err(|_| WireError::TooLong("configs"))?;
                out.put_u16(count);
                for (k, v) in configs {
                    put_str(&mut out, k, "config name")?;
                    put_str(&mut out, v, "config value")?;
                }
            }
            Frame::Position { log_start, log_end } => {
                out.put_u8(POSITION);
                out.put_i64(*log_start);
                out.put_i64(*log_end);
            }
            Frame::Batches { edge_end, batches } => {
                out.reserve(9 + batches.len());
                out.put_u8(BATCHES);
                out.put_i64(*edge_end);
                out.put_slice(batches);
            }
            Frame::Ack {
                log_end,
                duplicates,
                gaps,
            } => {
                out.put_u8(ACK);
                out.put_i64(*log_end);
                out.put_u64(*duplicates);
                let count = u16::try_from(gaps.len()).map_err(|_| WireError::TooLong("gaps"))?;
                out.put_u16(count);
                for (from, to) in gaps {
                    out.put_i64(*from);
                    out.put_i64(*to);
                }
            }
            Frame::Error { retriable, reason } => {
                out.put_u8(ERROR);
                out.put_u8(u8::from(*retriable));
                let cut = reason
                    .char_indices()
                    .nth(1000)
                    .map_or(reason.len(), |(i, _)| i);
                put_str(&mut out, &reason[..cut], "reason")?;
            }
            Frame::Checkpoint { group, offsets } => {
                out.put_u8(CHECKPOINT);
                put_str(&mut out, group, "group")?;
                let count =
                    u16::try_from(offsets.len()).map_err(|_| WireError::TooLong("offsets"))?;
                out.put_u16(count);
                for o in offsets {
                    put_str(&mut out, &o.topic, "topic")?;
                    out.put_i32(o.partition);
                    out.put_i64(o.offset);
                    put_str(&mut out, &o.metadata, "metadata")?;
                }
            }
            Frame::Checkpointed {
                group,
                applied,
                skipped,
            } => {
                out.put_u8(CHECKPOINTED);
                put_str(&mut out, group, "group")?;
                out.put_u32(*applied);
                put_str(&mut out, skipped, "reason")?;
            }
        }
        Ok(out.freeze())
    }

    pub fn decode(mut buf: Bytes) -> Result<Frame, WireError> {
        let kind = get_u8(&mut buf, "type")?;
        let frame = match kind {
            HELLO => Frame::Hello {
                edge: get_str(&mut buf, "edge name")?,
                max_bytes_per_sec: if buf.has_remaining() {
                    get_u64(&mut buf, "bandwidth cap")?
                } else {
                    0
                },
            },
            WELCOME => Frame::Welcome {
                prefix: get_str(&mut buf, "prefix")?,
            },
            OPEN => {
                let topic = get_str(&mut buf, "topic")?;
                let partition = get_i32(&mut buf, "partition")?;
                let partition_count = get_i32(&mut buf, "partition count")?;
                let count = get_u16(&mut buf, "config count")?;
                // Each entry takes at least 4 bytes: the count cannot outgrow the frame.
                if usize::from(count) * 4 > buf.remaining() {
                    return Err(WireError::Short("configs"));
                }
                let mut configs = Vec::with_capacity(count.into());
                for _ in 0..count {
                    let k = get_str(&mut buf, "config name")?;
                    let v = get_str(&mut buf, "config value")?;
                    configs.push((k, v));
                }
                Frame::Open {
                    topic,
                    partition,
                    partition_count,
                    configs,
                }
            }
            POSITION => Frame::Position {
                log_start: get_i64(&mut buf, "log start")?,
                log_end: get_i64(&mut buf, "log end")?,
            },
            BATCHES => {
                let edge_end = get_i64(&mut buf, "edge end")?;
                let batches = buf.split_to(buf.remaining());
                Frame::Batches { edge_end, batches }
            }
            ACK => {
                let log_end = get_i64(&mut buf, "log end")?;
                let duplicates = get_u64(&mut buf, "duplicates")?;
                let count = get_u16(&mut buf, "gap count")?;
                if usize::from(count) * 16 > buf.remaining() {
                    return Err(WireError::Short("gaps"));
                }
                let mut gaps = Vec::with_capacity(count.into());
                for _ in 0..count {
                    gaps.push((get_i64(&mut buf, "gap")?, get_i64(&mut buf, "gap")?));
                }
                Frame::Ack {
                    log_end,
                    duplicates,
                    gaps,
                }
            }
            ERROR => Frame::Error {
                retriable: get_u8(&mut buf, "retriable")? != 0,
                reason: get_str(&mut buf, "reason")?,
            },
            CHECKPOINT => {
                let group = get_str(&mut buf, "group")?;
                let count = get_u16(&mut buf, "offset count")?;
                // Each entry takes at least 16 bytes: the count cannot outgrow the frame.
                if usize::from(count) * 16 > buf.remaining() {
                    return Err(WireError::Short("offsets"));
                }
                let mut offsets = Vec::with_capacity(count.into());
                for _ in 0..count {
                    offsets.push(GroupOffset {
                        topic: get_str(&mut buf, "topic")?,
                        partition: get_i32(&mut buf, "partition")?,
                        offset: get_i64(&mut buf, "offset")?,
                        metadata: get_str(&mut buf, "metadata")?,
                    });
                }
                Frame::Checkpoint { group, offsets }
            }
            CHECKPOINTED => Frame::Checkpointed {
                group: get_str(&mut buf, "group")?,
                applied: get_u32(&mut buf, "applied")?,
                skipped: get_str(&mut buf, "reason")?,
            },
            other => return Err(WireError::UnknownType(other)),
        };
        if buf.has_remaining() {
            return Err(WireError::Trailing(buf.remaining()));
        }
        Ok(frame)
    }
}

fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), WireError> {
    if buf.remaining() < n {
        Err(WireError::Short(what))
    } else {
        Ok(())
    }
}

fn get_u8(buf: &mut Bytes, what: &'static str) -> Result<u8, WireError> {
    need(buf, 1, what)?;
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut Bytes, what: &'static str) -> Result<u16, WireError> {
    need(buf, 2, what)?;
    Ok(buf.get_u16())
}

fn get_u32(buf: &mut Bytes, what: &'static str) -> Result<u32, WireError> {
    need(buf, 4, what)?;
    Ok(buf.get_u32())
}

fn get_i32(buf: &mut Bytes, what: &'static str) -> Result<i32, WireError> {
    need(buf, 4, what)?;
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut Bytes, what: &'static str) -> Result<i64, WireError> {
    need(buf, 8, what)?;
    Ok(buf.get_i64())
}

fn get_u64(buf: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    need(buf, 8, what)?;
    Ok(buf.get_u64())
}

fn get_str(buf: &mut Bytes, what: &'static str) -> Result<String, WireError> {
    let len = usize::from(get_u16(buf, what)?);
    need(buf, len, what)?;
    let bytes = buf.split_to(len);
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                edge: "gw-017".into(),
                max_bytes_per_sec: 250_000,
            },
            Frame::Welcome {
                prefix: "gw-017.".into(),
            },
            Frame::Open {
                topic: "sensors".into(),
                partition: 2,
                partition_count: 3,
                configs: vec![("retention.ms".into(), "86400000".into())],
            },
            Frame::Position {
                log_start: 10,
                log_end: 200,
            },
            Frame::Batches {
                edge_end: 300,
                batches: Bytes::from_static(b"stored batch bytes"),
            },
            Frame::Ack {
                log_end: 250,
                duplicates: 1,
                gaps: vec![(200, 240)],
            },
            Frame::Error {
                retriable: true,
                reason: "no".into(),
            },
            Frame::Checkpoint {
                group: "analytics".into(),
                offsets: vec![GroupOffset {
                    topic: "sensors".into(),
                    partition: 1,
                    offset: 4711,
                    metadata: "m".into(),
                }],
            },
            Frame::Checkpointed {
                group: "analytics".into(),
                applied: 1,
                skipped: String::new(),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in all_frames() {
            let bytes = frame.encode().expect("encode");
            assert_eq!(Frame::decode(bytes).expect("decode"), frame);
        }
    }

    #[test]
    fn truncated_and_hostile_frames_are_errors_not_panics() {
        for frame in all_frames() {
            let bytes = frame.encode().expect("encode");
            for cut in 0..bytes.len() {
                let short = bytes.slice(..cut);
                // A Batches frame cut inside its payload is still a (shorter) valid frame,
                // and so is a Hello cut exactly before its optional cap.
                match Frame::decode(short.clone()) {
                    Ok(Frame::Batches { .. }) => continue,
                    Ok(Frame::Hello {
                        max_bytes_per_sec: 0,
                        ..
                    }) if cut == bytes.len() - 8 => continue,
                    _ => {}
                }
                assert!(Frame::decode(short).is_err(), "{frame:?} cut at {cut}");
            }
        }
        // A count that promises more entries than the frame holds.
        let hostile = Bytes::from_static(&[
            ACK, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
        ]);
        assert_eq!(Frame::decode(hostile), Err(WireError::Short("gaps")));
        assert_eq!(
            Frame::decode(Bytes::from_static(&[99])),
            Err(WireError::UnknownType(99))
        );
    }
}
