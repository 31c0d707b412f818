//! Encoding a response around large byte fields without copying them.
//!
//! A Fetch response is mostly stored record batches, already in Kafka's wire format. The
//! `kafka-protocol` encoder writes a `Bytes` field with `put_slice`, which would copy every
//! batch into the response buffer. [`SplicingBuf`] is the buffer the encoder writes into:
//! when it is handed one of the registered payloads (recognised by address and length), it
//! keeps a reference to that payload instead of copying it. The result is a list of parts
//! (encoded fields, payload, encoded fields, payload …) that the connection writes in
//! order: the stored bytes are copied once (from the file), not twice.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use super::{Body, Encoded};

/// Payloads shorter than this are copied: a separate part costs more than the copy.
pub const SPLICE_MIN_BYTES: usize = 1024;

/// A response buffer that passes registered payloads through by reference.
struct SplicingBuf {
    /// What the encoder writes now.
    current: BytesMut,
    /// Finished parts, in order.
    parts: Vec<Bytes>,
    /// Bytes in `parts`.
    parts_len: usize,
    /// The payloads to pass through, in the order the encoder meets them.
    payloads: Vec<Bytes>,
    /// The next payload expected.
    next: usize,
}

impl SplicingBuf {
    fn splice(&mut self, src: &[u8]) -> bool {
        let Some(payload) = self.payloads.get(self.next) else {
            return false;
        };
        if payload.as_ptr() != src.as_ptr() || payload.len() != src.len() {
            return false;
        }
        let payload = payload.clone();
        self.next += 1;
        if !self.current.is_empty() {
            let head = self.current.split().freeze();
            self.parts_len += head.len();
            self.parts.push(head);
        }
        self.parts_len += payload.len();
        self.parts.push(payload);
        true
    }
}

// SAFETY: every method delegates to `current`, a correct `BufMut`; `put_slice` either
// delegates too or takes the slice by reference without touching `current`'s memory.
unsafe impl BufMut for SplicingBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.current.advance_mut(cnt)
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() < SPLICE_MIN_BYTES || !self.splice(src) {
            self.current.put_slice(src);
        }
    }
}

impl ByteBufMut for SplicingBuf {
    fn offset(&self) -> usize {
        self.parts_len + self.current.len()
    }

    /// Gaps (length fields written after their content) only ever lie within the part
    /// being written: the encoder fills a gap before it writes another `Bytes` field.
    fn seek(&mut self, offset: usize) {
        let local = offset.saturating_sub(self.parts_len);
        self.current.resize(local, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r.start.saturating_sub(self.parts_len);
        let end = r.end.saturating_sub(self.parts_len);
        &mut self.current[start..end]
    }
}

/// Encodes `message`, passing `payloads` (byte fields of the message, in the order the
/// encoder writes them) through by reference. A payload the encoder does not meet in that
/// order is copied like any other field: the output is the same bytes either way.
pub fn encode_spliced<T: Encodable>(message: &T, version: i16, mut payloads: Vec<Bytes>) -> Body {
    // Small payloads are copied (`put_slice`), so they must not hold the queue up.
    payloads.retain(|p| p.len() >= SPLICE_MIN_BYTES);
    let size = message
        .compute_size(version)
        .map_err(|e| format!("cannot size response: {e:#}"))?;
    let spliced: usize = payloads.iter().map(Bytes::len).sum();
    let mut buf = SplicingBuf {
        current: BytesMut::with_capacity(size.saturating_sub(spliced)),
        parts: Vec::with_capacity(2 * payloads.len() + 1),
        parts_len: 0,
        payloads,
        next: 0,
    };
    message
        .encode(&mut buf, version)
        .map_err(|e| format!("cannot encode response: {e:#}"))?;
    let SplicingBuf {
        current, mut parts, ..
    } = buf;
    if parts.is_empty() {
        // Nothing was passed through: one buffer, as `encode` makes it.
        return Ok(Encoded {
            bytes: current,
            more: Vec::new(),
            hold: Vec::new(),
        });
    }
    if !current.is_empty() {
        parts.push(current.freeze());
    }
    Ok(Encoded {
        bytes: BytesMut::new(),
        more: parts,
        hold: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn response(records: &[Option<Bytes>]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(7)
                    .with_records(r.clone())
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("events")))
            .with_partitions(partitions)])
    }

    fn joined(encoded: &Encoded) -> Vec<u8> {
        let mut all = encoded.bytes.to_vec();
        for part in &encoded.more {
            all.extend_from_slice(part);
        }
        all
    }

    #[test]
    fn spliced_output_is_byte_for_byte_the_plain_encoding() {
        let big = |n: usize, fill: u8| Some(Bytes::from(vec![fill; n]));
        let records = vec![big(5000, 1), None, big(10, 2), big(70_000, 3), big(1024, 4)];
        let message = response(&records);
        // Every version tern serves: fixed-width and compact (varint) length prefixes.
        for version in 4..=13 {
            let plain = super::super::encode(&message, version).unwrap_or_else(|e| panic!("{e}"));
            let payloads: Vec<Bytes> = records.iter().flatten().cloned().collect();
            let spliced =
                encode_spliced(&message, version, payloads).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(joined(&spliced), plain.bytes.to_vec(), "version {version}");
            // The three payloads of at least SPLICE_MIN_BYTES are passed by reference.
            let passed: Vec<usize> = spliced
                .more
                .iter()
                .filter(|p| {
                    records
                        .iter()
                        .flatten()
                        .any(|r| r.as_ptr() == p.as_ptr() && r.len() == p.len())
                })
                .map(Bytes::len)
                .collect();
            assert_eq!(passed, vec![5000, 70_000, 1024], "version {version}");
        }
    }

    #[test]
    fn payloads_out_of_order_or_foreign_are_copied() {
        let a = Bytes::from(vec![1u8; 4096]);
        let b = Bytes::from(vec![2u8; 4096]);
        let message = response(&[Some(a.clone()), Some(b.clone())]);
        let plain = super::super::encode(&message, 12).unwrap_or_else(|e| panic!("{e}"));
        let foreign = Bytes::from(vec![1u8; 4096]);
        for payloads in [vec![b.clone(), a.clone()], vec![foreign], Vec::new()] {
            let spliced = encode_spliced(&message, 12, payloads).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(joined(&spliced), plain.bytes.to_vec());
        }
    }
}
