//! Walks the records of a decompressed records section without decoding them into owned
//! values: the cleaner needs each record's offset delta, key and whether its value is
//! null, and the record's raw bytes to copy into a thinned batch unchanged.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed record at byte {at}: {reason}")]
pub struct ScanError {
    pub at: usize,
    pub reason: &'static str,
}

/// One record, borrowed from the section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone in a compacted topic.
    pub is_tombstone: bool,
    /// The whole record as stored, its length prefix included.
    pub raw: &'a [u8],
}

/// The records of `section`, at most `count` of them (the batch's record count).
pub fn records(section: &[u8], count: i32) -> Result<Vec<RecordView<'_>>, ScanError> {
    let mut out = Vec::with_capacity(count.clamp(0, 4096) as usize);
    let mut at = 0usize;
    for _ in 0..count.max(0) {
        let start = at;
        let bad = |reason| ScanError { at: start, reason };
        let length = varint(section, &mut at).ok_or(bad("length"))?;
        let length = usize::try_from(length).map_err(|_| bad("negative length"))?;
        let body_start = at;
        let end = body_start
            .checked_add(length)
            .filter(|e| *e <= section.len())
            .ok_or(bad("length runs past the section"))?;
        let body = &section[..end];
        at += 1; // attributes
        varint(body, &mut at).ok_or(bad("timestamp delta"))?;
        let offset_delta = varint(body, &mut at).ok_or(bad("offset delta"))?;
        let offset_delta = i32::try_from(offset_delta).map_err(|_| bad("offset delta"))?;
        let key = nullable_bytes(body, &mut at).ok_or(bad("key"))?;
        let value_len = varint(body, &mut at).ok_or(bad("value length"))?;
        if at > end {
            return Err(bad("fields run past the record length"));
        }
        out.push(RecordView {
            offset_delta,
            key,
            is_tombstone: value_len < 0,
            raw: &section[start..end],
        });
        at = end;
    }
    if at != section.len() {
        return Err(ScanError {
            at,
            reason: "bytes after the last record",
        });
    }
    Ok(out)
}

/// A zigzag varint (Kafka's varint and varlong share the encoding).
fn varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

fn nullable_bytes<'a>(bytes: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varint(bytes, at)?;
    if len < 0 {
        return Some(None);
    }
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let out = bytes.get(*at..end)?;
    *at = end;
    Some(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{tests::make_batch, HEADER_LEN};

    #[test]
    fn walks_a_client_batch() {
        let batch = make_batch(3, b"value");
        let records = records(&batch[HEADER_LEN..], 3).expect("valid");
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].offset_delta, 2);
        assert_eq!(records[1].key, Some(&b"key-1"[..]));
        assert!(!records[0].is_tombstone);
        let total: usize = records.iter().map(|r| r.raw.len()).sum();
        assert_eq!(
            total,
            batch.len() - HEADER_LEN,
            "raw slices tile the section"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256), count in 0i32..64) {
            let _ = records(&bytes, count);
        }
    }
}
