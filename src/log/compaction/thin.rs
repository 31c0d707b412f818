//! Thinning one batch: dropping the records the cleaner does not keep, without touching
//! the ones it keeps (their bytes, offset deltas and timestamps are copied as stored).

use std::borrow::Cow;

use thiserror::Error;

use super::record_scan::{self, RecordView};
use crate::log::batch::{self, BatchError, BatchHeader, Codec, HEADER_LEN};
use crate::log::codec;

#[derive(Debug, Error)]
pub enum ThinError {
    #[error("cannot read the batch's records: {0}")]
    Records(String),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// What thinning did to a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Thinned {
    /// Every record is kept: the stored bytes are written again as they are.
    Unchanged,
    /// Some records are kept: the batch rebuilt around them (same codec, same header).
    Rewritten(Vec<u8>),
    /// No record is kept.
    Emptied,
}

/// The records section of `batch`, decompressed (with the bound every reader uses).
pub fn section<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<Cow<'a, [u8]>, ThinError> {
    let stored = batch
        .get(HEADER_LEN..header.total_len())
        .ok_or_else(|| ThinError::Records("batch shorter than its header says".to_string()))?;
    match header.codec() {
        Codec::None => Ok(Cow::Borrowed(stored)),
        codec => codec::decompress(codec, stored, batch::MAX_UNCOMPRESSED_BATCH)
            .map(Cow::Owned)
            .map_err(|e| ThinError::Records(e.to_string())),
    }
}

/// Visits every record of `batch` with its absolute offset.
pub fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    mut visit: impl FnMut(i64, &RecordView<'_>),
) -> Result<(), ThinError> {
    let plain = section(batch, header)?;
    let records = record_scan::records(&plain, header.record_count)
        .map_err(|e| ThinError::Records(e.to_string()))?;
    for record in &records {
        visit(header.base_offset + record.offset_delta as i64, record);
    }
    Ok(())
}

/// Keeps the records of `batch` for which `keep(offset, record)` is true.
pub fn thin(
    batch: &[u8],
    header: &BatchHeader,
    mut keep: impl FnMut(i64, &RecordView<'_>) -> bool,
) -> Result<Thinned, ThinError> {
    let plain = section(batch, header)?;
    let records = record_scan::records(&plain, header.record_count)
        .map_err(|e| ThinError::Records(e.to_string()))?;
    let kept: Vec<&RecordView<'_>> = records
        .iter()
        .filter(|r| keep(header.base_offset + r.offset_delta as i64, r))
        .collect();
    if kept.len() == records.len() {
        return Ok(Thinned::Unchanged);
    }
    if kept.is_empty() {
        return Ok(Thinned::Emptied);
    }
    let mut section = Vec::with_capacity(kept.iter().map(|r| r.raw.len()).sum());
    for record in &kept {
        section.extend_from_slice(record.raw);
    }
    let rebuilt = batch::with_records(batch, &section, kept.len() as i32, header.codec())?;
    Ok(Thinned::Rewritten(rebuilt))
}

/// A thinned batch as a producer would have written it (what a Kafka broker accepts):
/// its records renumbered 0, 1, 2… from the same base offset, the last offset delta set to
/// match, same codec and timestamps. Returns the batch and the offset after it.
pub fn renumbered(batch: &[u8], header: &BatchHeader) -> Result<(Vec<u8>, i64), ThinError> {
    let plain = section(batch, header)?;
    let records = record_scan::records(&plain, header.record_count)
        .map_err(|e| ThinError::Records(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len());
    for (index, record) in records.iter().enumerate() {
        let body = renumber_record(record.raw, index as i64)
            .ok_or_else(|| ThinError::Records(format!("record {index} cannot be renumbered")))?;
        put_varint(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    let count = records.len() as i32;
    let mut rebuilt = batch::with_records(batch, &out, count, header.codec())?;
    batch::set_last_offset_delta(&mut rebuilt, (count - 1).max(0));
    Ok((rebuilt, header.base_offset + count as i64))
}

/// The body of a record (`raw` with its length prefix) with offset delta `delta`.
fn renumber_record(raw: &[u8], delta: i64) -> Option<Vec<u8>> {
    let mut at = 0;
    skip_varint(raw, &mut at)?; // length
    let body_start = at;
    let attributes = *raw.get(at)?;
    at += 1;
    let timestamp_start = at;
    skip_varint(raw, &mut at)?;
    let timestamp = raw.get(timestamp_start..at)?;
    skip_varint(raw, &mut at)?; // the old offset delta
    let rest = raw.get(at..)?;
    let mut body = Vec::with_capacity(raw.len() - body_start + 2);
    body.push(attributes);
    body.extend_from_slice(timestamp);
    put_varint(&mut body, delta);
    body.extend_from_slice(rest);
    Some(body)
}

fn skip_varint(bytes: &[u8], at: &mut usize) -> Option<()> {
    for _ in 0..10 {
        let b = *bytes.get(*at)?;
        *at += 1;
        if b & 0x80 == 0 {
            return Some(());
        }
    }
    None
}

/// Kafka's zigzag varint.
fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The header of `batch` alone, with no records: what Kafka keeps of an emptied batch
/// that must stay (a producer's last batch, a segment's last batch). It spans the same
/// offsets, so a reader positioned in the gap moves past it.
pub fn emptied(batch: &[u8]) -> Result<Vec<u8>, BatchError> {
    batch::with_records(batch, &[], 0, Codec::None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use crate::log::records;

    /// An lz4 batch of 10 records thinned to those at offsets 0, 3, 6 and 9.
    fn thinned_batch() -> Vec<u8> {
        let batch = crate::log::batch::compress_lz4(&make_batch(10, b"payload-payload"))
            .expect("compress")
            .expect("smaller");
        let header = batch::validate(&batch).expect("valid");
        match thin(&batch, &header, |offset, _| offset % 3 == 0).expect("thin") {
            Thinned::Rewritten(thinned) => thinned,
            other => panic!("some records kept, some dropped: {other:?}"),
        }
    }

    #[test]
    fn thinning_keeps_offsets_and_bytes_of_kept_records() {
        let thinned = thinned_batch();
        let new_header = batch::validate(&thinned).expect("a valid batch");
        assert_eq!(new_header.record_count, 4);
        assert_eq!(
            new_header.last_offset_delta, 9,
            "still spans the same offsets"
        );
        assert_eq!(new_header.codec(), Codec::Lz4);
        let decoded = records::decode(&thinned).expect("clients can decode it");
        let offsets: Vec<i64> = decoded.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 3, 6, 9]);
        assert_eq!(decoded[1].key.as_deref(), Some(&b"key-3"[..]));
    }

    #[test]
    fn renumbering_gives_a_batch_a_producer_could_have_sent() {
        let thinned = thinned_batch();
        let thinned_header = batch::validate(&thinned).expect("valid");
        let (dense, next) = renumbered(&thinned, &thinned_header).expect("renumber");
        assert_eq!(next, 4);
        // It passes a producer's checks: consecutive deltas, count = last delta + 1.
        let split = batch::split_batches(&dense).expect("a producer's batch");
        let h = split[0].0;
        batch::validate_records(
            &dense,
            &h,
            1 << 20,
            crate::log::record_check::Rules::PRODUCED,
        )
        .expect("consecutive records");
        let decoded = records::decode(&dense).expect("decodes");
        let keys: Vec<_> = decoded
            .iter()
            .map(|r| r.key.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            ["key-0", "key-3", "key-6", "key-9"].map(bytes::Bytes::from)
        );
        assert_eq!(decoded[3].offset, 3);
        assert_eq!(decoded[3].timestamp, 1_767_225_600_009, "timestamps kept");
        let filler =
            batch::control_filler(&thinned, next, thinned_header.next_offset()).expect("filler");
        let f = batch::validate(&filler).expect("valid filler");
        assert!(f.is_control());
        assert_eq!((f.base_offset, f.next_offset(), f.record_count), (4, 10, 0));
    }

    #[test]
    fn all_or_nothing_outcomes() {
        let batch = make_batch(3, b"v");
        let header = batch::validate(&batch).expect("valid");
        assert_eq!(
            thin(&batch, &header, |_, _| true).expect("thin"),
            Thinned::Unchanged
        );
        assert_eq!(
            thin(&batch, &header, |_, _| false).expect("thin"),
            Thinned::Emptied
        );
        let empty = emptied(&batch).expect("emptied");
        let h = batch::validate(&empty).expect("valid empty batch");
        assert_eq!(
            (h.record_count, h.last_offset_delta, h.total_len()),
            (0, 2, HEADER_LEN)
        );
        assert!(records::decode(&empty).expect("decodes").is_empty());
    }
}
