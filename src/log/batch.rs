//! Kafka RecordBatch v2, the unit tern stores, serves and mirrors.
//!
//! tern never re-encodes records: it reads the fixed 61-byte batch header, checks the CRC,
//! stamps the base offset (which lies outside the CRC) and, for uncompressed batches on an
//! lz4 topic, compresses the records section once. Byte layout: docs/FORMAT.md.

use thiserror::Error;

use super::{codec, record_check};

/// Bytes before the records section: the whole v2 batch header.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` (8) + `batchLength` (4): the part of the header not counted in `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The only batch format tern accepts (Kafka 0.11+ clients all produce it).
pub const MAGIC_V2: u8 = 2;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const CONTROL_FLAG: i16 = 0x20;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;

/// Compression codecs as numbered in the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The attribute bits that name this codec.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    fn from_attributes(attributes: i16) -> Option<Codec> {
        match attributes & COMPRESSION_MASK {
            0 => Some(Codec::None),
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Why a byte range is not a valid v2 record batch.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("truncated batch: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("batch length {0} is out of range")]
    BadLength(i32),
    #[error("unsupported record batch magic {0} (tern stores only v2 batches, Kafka 0.11+)")]
    BadMagic(i8),
    #[error("CRC32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("unknown compression codec in attributes {0:#06x}")]
    BadCodec(i16),
    #[error("record count {count} does not match last offset delta {delta}")]
    BadRecordCount { count: i32, delta: i32 },
    #[error("compression failed: {0}")]
    Compress(String),
    #[error("invalid records: {0}")]
    Records(String),
}

/// The fixed header of one batch, decoded (big-endian, as on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Decodes the 61-byte header at the start of `bytes` and checks its shape (not the CRC).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                have: bytes.len(),
                need: HEADER_LEN,
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(bytes, OFF_BASE_OFFSET),
            batch_length: be_i32(bytes, OFF_LENGTH),
            magic: bytes[OFF_MAGIC] as i8,
            crc: be_i32(bytes, OFF_CRC) as u32,
            attributes: be_i16(bytes, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(bytes, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(bytes, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(bytes, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(bytes, OFF_PRODUCER_ID),
            producer_epoch: be_i16(bytes, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, OFF_BASE_SEQUENCE),
            record_count: be_i32(bytes, OFF_RECORD_COUNT),
        };
        if header.magic != MAGIC_V2 as i8 {
            return Err(BatchError::BadMagic(header.magic));
        }
        if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::BadLength(header.batch_length));
        }
        if Codec::from_attributes(header.attributes).is_none() {
            return Err(BatchError::BadCodec(header.attributes));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::BadRecordCount {
                count: header.record_count,
                delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Bytes the whole batch occupies, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn codec(&self) -> Codec {
        Codec::from_attributes(self.attributes).unwrap_or(Codec::None)
    }

    /// Written by an idempotent producer: its sequence numbers must be checked.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.base_sequence >= 0
    }

    /// Sequence number of the batch's last record (sequences wrap at i32::MAX, as in Kafka).
    pub fn last_sequence(&self) -> i32 {
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
}

/// CRC32C as Kafka computes it: from `attributes` to the end of the batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Parses the header and verifies the CRC of one complete batch.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() != header.total_len() {
        return Err(BatchError::Truncated {
            have: batch.len(),
            need: header.total_len(),
        });
    }
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(header)
}

/// Kafka's LogAppendTime: sets the timestamp-type attribute and the batch's max timestamp
/// to `now_ms`, and recomputes the CRC (both lie inside it).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, OFF_ATTRIBUTES) | TIMESTAMP_TYPE_FLAG;
    batch[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Sets the last offset delta (and the CRC, which covers it).
pub fn set_last_offset_delta(batch: &mut [u8], delta: i32) {
    batch[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&delta.to_be_bytes());
    let crc = compute_crc(batch);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A record-less batch marked as a control batch spanning `[base_offset, next_offset)`,
/// built from `batch`'s header: what a reader that skips control batches steps over.
pub fn control_filler(
    batch: &[u8],
    base_offset: i64,
    next_offset: i64,
) -> Result<Vec<u8>, BatchError> {
    let mut out = with_records(batch, &[], 0, Codec::None)?;
    set_base_offset(&mut out, base_offset);
    let attributes = be_i16(&out, OFF_ATTRIBUTES) | CONTROL_FLAG;
    out[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let delta = i32::try_from(next_offset - base_offset - 1)
        .map_err(|_| BatchError::BadLength(i32::MAX))?;
    set_last_offset_delta(&mut out, delta.max(0));
    Ok(out)
}

/// Re-stamps a client-built batch for another send (`tern bench` reuses one batch): moves
/// its timestamps to start at `base_timestamp` (record deltas are relative, so they stay
/// valid), sets the producer's base sequence, and recomputes the CRC.
pub fn restamp(batch: &mut [u8], base_timestamp: i64, base_sequence: i32) {
    let span = be_i64(batch, OFF_MAX_TIMESTAMP) - be_i64(batch, OFF_BASE_TIMESTAMP);
    batch[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8]
        .copy_from_slice(&base_timestamp.to_be_bytes());
    batch[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8]
        .copy_from_slice(&(base_timestamp + span).to_be_bytes());
    batch[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Stamps the offset the log assigns; the CRC stays valid because it does not cover it.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Splits a produce request's `records` field into validated batches.
///
/// A producer must send whole batches; anything left over is an error, not something to
/// store (Kafka answers CORRUPT_MESSAGE).
pub fn split_batches(records: &[u8]) -> Result<Vec<(BatchHeader, &[u8])>, BatchError> {
    split(records, true)
}

/// Splits batches as stored or mirrored: log compaction may have thinned them, so a batch
/// may hold fewer records than its offsets span (none at all for a kept, emptied batch).
pub fn split_stored_batches(records: &[u8]) -> Result<Vec<(BatchHeader, &[u8])>, BatchError> {
    split(records, false)
}

fn split(records: &[u8], produced: bool) -> Result<Vec<(BatchHeader, &[u8])>, BatchError> {
    let mut out = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let header = BatchHeader::parse(rest)?;
        let len = header.total_len();
        if rest.len() < len {
            return Err(BatchError::Truncated {
                have: rest.len(),
                need: len,
            });
        }
        let (batch, tail) = rest.split_at(len);
        let header = validate(batch)?;
        let span = header.last_offset_delta.saturating_add(1);
        let count_fits = if produced {
            header.record_count == span
        } else {
            (0..=span).contains(&header.record_count)
        };
        if !count_fits {
            return Err(BatchError::BadRecordCount {
                count: header.record_count,
                delta: header.last_offset_delta,
            });
        }
        out.push((header, batch));
        rest = tail;
    }
    Ok(out)
}

/// Most bytes the records of one batch may decompress to: the declared record count times
/// `max.message.bytes`, never more than [`MAX_UNCOMPRESSED_BATCH`]. A batch whose records
/// expand beyond that is refused at produce and skipped by readers.
pub fn uncompressed_limit(header: &BatchHeader, max_message_bytes: usize) -> u64 {
    (header.record_count.max(1) as u64)
        .saturating_mul(max_message_bytes.max(1) as u64)
        .min(MAX_UNCOMPRESSED_BATCH)
}

/// The cap of [`uncompressed_limit`]: Kafka clients batch at most about 1 MB before
/// compression by default (librdkafka `batch.size`, the Java client's `max.request.size`).
pub const MAX_UNCOMPRESSED_BATCH: u64 = 32 * 1024 * 1024;

/// A reader of the records section of `batch`, decompressed, at most `limit` bytes.
pub fn records_reader<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    limit: u64,
) -> Result<Box<dyn std::io::Read + Send + 'a>, BatchError> {
    codec::decoder(header.codec(), &batch[HEADER_LEN..], limit)
        .map_err(|e| BatchError::Records(e.to_string()))
}

/// Checks the records inside `batch` (count, offsets, lengths) against `rules`,
/// decompressing with a bound.
pub fn validate_records(
    batch: &[u8],
    header: &BatchHeader,
    limit: u64,
    rules: record_check::Rules,
) -> Result<(), BatchError> {
    let checked = if header.codec() == Codec::None {
        let section = &batch[HEADER_LEN..];
        if section.len() as u64 > limit {
            let codec = Codec::None;
            return Err(BatchError::Records(
                codec::CodecError::TooLarge { codec, limit }.to_string(),
            ));
        }
        // Already in memory: read in place rather than through a copying buffer.
        record_check::validate_plain(section, header.record_count, rules)
    } else {
        let reader = records_reader(batch, header, limit)?;
        record_check::validate(reader, header.record_count, rules)
    };
    checked.map_err(|e| match e {
        record_check::RecordError::Read(io) => {
            BatchError::Records(codec::from_io(header.codec(), io).to_string())
        }
        other => BatchError::Records(other.to_string()),
    })
}

/// Rewrites `batch` with its records compressed by `target` (`Codec::None`: uncompressed),
/// updating length, attributes and CRC. `limit` bounds the decompression of the source.
pub fn recompress(batch: &[u8], target: Codec, limit: u64) -> Result<Vec<u8>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let section = &batch[HEADER_LEN..];
    let plain = match header.codec() {
        Codec::None => std::borrow::Cow::Borrowed(section),
        source => std::borrow::Cow::Owned(
            codec::decompress(source, section, limit)
                .map_err(|e| BatchError::Records(e.to_string()))?,
        ),
    };
    with_records(batch, &plain, header.record_count, target)
}

/// A batch with the header of `batch` (offsets, timestamps, producer) around other
/// records: `plain` (an uncompressed records section of `record_count` records), stored
/// compressed by `codec`. Length, count, codec attribute and CRC are set anew; the last
/// offset delta is kept, so a thinned batch still spans the offsets it did.
pub fn with_records(
    batch: &[u8],
    plain: &[u8],
    record_count: i32,
    codec: Codec,
) -> Result<Vec<u8>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let records = match codec {
        Codec::None => std::borrow::Cow::Borrowed(plain),
        _ => std::borrow::Cow::Owned(
            codec::compress(codec, plain).map_err(|e| BatchError::Compress(e.to_string()))?,
        ),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&records);
    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| BatchError::BadLength(i32::MAX))?;
    out[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !COMPRESSION_MASK) | codec.attribute_bits();
    out[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&record_count.to_be_bytes());
    let crc = compute_crc(&out);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Rewrites an uncompressed batch as an lz4-compressed one (LZ4 frame, 64 KiB independent
/// blocks: what the Java client's KafkaLZ4BlockInputStream and librdkafka both read).
///
/// Returns `None` when compression would not make the batch smaller.
pub fn compress_lz4(batch: &[u8]) -> Result<Option<Vec<u8>>, BatchError> {
    let out = recompress(batch, Codec::Lz4, batch.len() as u64)?;
    Ok((out.len() < batch.len()).then_some(out))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::records::{encode_batch, Outgoing};
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    /// Encodes `count` keyed records with headers as one batch, as a client would.
    pub(crate) fn make_batch(count: usize, payload: &[u8]) -> Vec<u8> {
        let records: Vec<Outgoing> = (0..count)
            .map(|i| Outgoing {
                key: Some(bytes::Bytes::from(format!("key-{i}"))),
                value: bytes::Bytes::copy_from_slice(payload),
                headers: vec![("h".to_string(), bytes::Bytes::from("v"))],
                timestamp: 1_767_225_600_000 + i as i64,
            })
            .collect();
        encode_batch(&records).expect("encode test batch").to_vec()
    }

    #[test]
    fn parses_and_validates_a_client_batch() {
        let batch = make_batch(3, b"hello");
        let header = validate(&batch).expect("valid");
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.total_len(), batch.len());
        assert_eq!(header.codec(), Codec::None);
    }

    #[test]
    fn rebasing_keeps_the_crc_valid() {
        let mut batch = make_batch(2, b"x");
        set_base_offset(&mut batch, 1234);
        let header = validate(&batch).expect("still valid");
        assert_eq!(header.base_offset, 1234);
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut batch = make_batch(2, b"payload");
        let last = batch.len() - 1;
        batch[last] ^= 0x01;
        assert!(matches!(
            validate(&batch),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn split_rejects_trailing_garbage() {
        let mut bytes = make_batch(1, b"a");
        bytes.extend_from_slice(&[0u8; 10]);
        assert!(split_batches(&bytes).is_err());
    }

    #[test]
    fn lz4_compressed_batch_decodes_to_the_same_records() {
        let payload = br#"{"device":"sensor-17","temperature":21.5,"humidity":40}"#;
        let batch = make_batch(200, payload);
        let compressed = compress_lz4(&batch).expect("compress").expect("smaller");
        assert!(compressed.len() < batch.len() / 3);
        let header = validate(&compressed).expect("valid after compression");
        assert_eq!(header.codec(), Codec::Lz4);
        let mut buf = bytes::Bytes::from(compressed);
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(|bytes: &mut bytes::Bytes, _c: Compression| {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut lz4_flex::frame::FrameDecoder::new(&bytes[..]),
                    &mut out,
                )?;
                Ok(bytes::Bytes::from(out))
            }),
        )
        .expect("decode");
        assert_eq!(set.records.len(), 200);
        assert_eq!(
            set.records[199].value.as_deref(),
            Some(&payload[..]),
            "payload survives the round trip"
        );
    }
}
