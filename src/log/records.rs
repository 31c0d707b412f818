//! Decoding the records inside batches, for the few places that need them (ListOffsets by
//! timestamp, the MQTT outbound bridge, the CLI consumer). The broker's data path never
//! decodes records.
//!
//! Every batch is checked before it is decoded — CRC, then its records streamed through a
//! bounded decompressor (`codec.rs`) — so a corrupt batch or a decompression bomb is an
//! error for that batch, never an unbounded allocation.

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

use super::batch::{self, BatchHeader, Codec, MAX_UNCOMPRESSED_BATCH};
use super::codec;
use super::record_check::Rules;

/// Why the records of a batch could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("malformed records: {0}")]
    Malformed(String),
}

/// One batch's records, or why they cannot be read.
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Result<Vec<Record>, RecordsError>,
}

fn codec_of(compression: Compression) -> Codec {
    match compression {
        Compression::None => Codec::None,
        Compression::Gzip => Codec::Gzip,
        Compression::Snappy => Codec::Snappy,
        Compression::Lz4 => Codec::Lz4,
        Compression::Zstd => Codec::Zstd,
    }
}

fn decompress(bytes: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    let codec = codec_of(compression);
    let out = codec::decompress(codec, bytes, MAX_UNCOMPRESSED_BATCH)?;
    Ok(Bytes::from(out))
}

fn decode_one(bytes: &[u8]) -> Result<Vec<Record>, RecordsError> {
    let malformed = |e: String| RecordsError::Malformed(e);
    let header = batch::validate(bytes).map_err(|e| malformed(e.to_string()))?;
    batch::validate_records(
        bytes,
        &header,
        MAX_UNCOMPRESSED_BATCH,
        Rules::stored(header.last_offset_delta),
    )
    .map_err(|e| malformed(e.to_string()))?;
    let mut buf = Bytes::copy_from_slice(bytes);
    RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
        .map(|set| set.records)
        .map_err(|e| malformed(format!("{e:#}")))
}

/// Decodes each batch in `bytes` separately, so that one bad batch does not hide the
/// others. Stops at bytes that are not a batch header (nothing after them is trusted).
pub fn decode_batches(bytes: &[u8]) -> Vec<DecodedBatch> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Ok(header) = BatchHeader::parse(rest) {
        let len = header.total_len();
        if len > rest.len() {
            break;
        }
        out.push(DecodedBatch {
            header,
            records: decode_one(&rest[..len]),
        });
        rest = &rest[len..];
    }
    out
}

/// Decodes every record of the batches in `bytes`; any bad batch is an error.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, RecordsError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header =
            BatchHeader::parse(rest).map_err(|e| RecordsError::Malformed(e.to_string()))?;
        let len = header.total_len();
        if len > rest.len() {
            return Err(RecordsError::Malformed(format!(
                "batch of {len} bytes, {} present",
                rest.len()
            )));
        }
        out.extend(decode_one(&rest[..len])?);
        rest = &rest[len..];
    }
    Ok(out)
}

/// Offset and timestamp of the first record in `batch` stamped at or after `timestamp`.
pub fn first_at_or_after(batch: &[u8], timestamp: i64) -> Option<(i64, i64)> {
    decode(batch)
        .ok()?
        .into_iter()
        .find(|r| r.timestamp >= timestamp)
        .map(|r| (r.offset, r.timestamp))
}
