//! Decoding the records inside a batch, for the few places that need them (ListOffsets by
//! timestamp, the CLI consumer). The broker's data path never decodes records. zstd is not
//! decoded: it would pull a C library into the ARM build for a CLI convenience.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::compression::{Decompressor, Gzip, Snappy};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

/// Why the records of a batch could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("records compressed with {0:?} cannot be decoded by tern (it reads none, gzip, snappy and lz4)")]
    UnsupportedCodec(Compression),
    #[error("malformed records: {0}")]
    Malformed(String),
}

fn decompress(bytes: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    match compression {
        Compression::None => Ok(bytes.clone()),
        Compression::Lz4 => {
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&bytes[..]).read_to_end(&mut out)?;
            Ok(Bytes::from(out))
        }
        Compression::Gzip => Gzip::decompress(bytes, |b| Ok(b.copy_to_bytes(b.remaining()))),
        Compression::Snappy => Snappy::decompress(bytes, |b| Ok(b.copy_to_bytes(b.remaining()))),
        other => Err(RecordsError::UnsupportedCodec(other).into()),
    }
}

/// Decodes every record of the batches in `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, RecordsError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
            .map_err(|e| match e.downcast::<RecordsError>() {
                Ok(e) => e,
                Err(e) => RecordsError::Malformed(format!("{e:#}")),
            })?;
        out.extend(set.records);
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
