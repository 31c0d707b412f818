//! Validation of the records inside a batch, as Kafka's broker does before it stores a
//! batch: the declared record count, sequential offset deltas, and lengths that fit.
//!
//! Streams over a reader (usually a bounded decompressor from `codec.rs`) and skips keys,
//! values and headers without buffering them, so validating a batch costs a few KiB of
//! memory whatever its records announce.

use std::io::{self, BufRead, BufReader, Read};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("record {index}: {reason}")]
    Malformed { index: i32, reason: String },
    #[error("the batch declares {declared} records but holds {found}")]
    CountMismatch { declared: i32, found: i32 },
    #[error("bytes after the last declared record")]
    Trailing,
    #[error(transparent)]
    Read(#[from] io::Error),
}

/// What a batch's records must satisfy beyond their structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `None`: offset deltas 0, 1, 2… as a producer sends them. `Some(last)`: a batch as
    /// stored or mirrored, which log compaction may have thinned: deltas strictly
    /// increasing and at most the batch's `last_offset_delta`.
    pub thinned_up_to: Option<i32>,
    /// A compacted topic: every record needs a key (Kafka refuses keyless records there).
    pub keys_required: bool,
}

impl Rules {
    /// What a producer's batch must satisfy.
    pub const PRODUCED: Rules = Rules {
        thinned_up_to: None,
        keys_required: false,
    };

    /// What a stored (or mirrored) batch with this `last_offset_delta` must satisfy.
    pub fn stored(last_offset_delta: i32) -> Rules {
        Rules {
            thinned_up_to: Some(last_offset_delta),
            keys_required: false,
        }
    }
}

/// Reads exactly `count` records from `records` and checks that nothing follows them.
pub fn validate(records: impl Read, count: i32, rules: Rules) -> Result<(), RecordError> {
    validate_buffered(BufReader::with_capacity(16 * 1024, records), count, rules)
}

/// [`validate`] over bytes already in memory (an uncompressed batch): nothing is copied.
pub fn validate_plain(records: &[u8], count: i32, rules: Rules) -> Result<(), RecordError> {
    validate_buffered(records, count, rules)
}

fn validate_buffered(records: impl BufRead, count: i32, rules: Rules) -> Result<(), RecordError> {
    let mut reader = Counting {
        inner: records,
        consumed: 0,
    };
    let mut previous_delta = -1i32;
    for index in 0..count.max(0) {
        let bad = |reason: String| RecordError::Malformed { index, reason };
        let length = match read_varint(&mut reader) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(RecordError::CountMismatch {
                    declared: count,
                    found: index,
                })
            }
            Err(e) => return Err(e.into()),
        };
        if length < 6 {
            return Err(bad(format!("length {length} is too small for a record")));
        }
        let start = reader.consumed;
        let _attributes = reader.read_u8()?;
        let _timestamp_delta = read_varlong(&mut reader)?;
        let offset_delta = read_varint(&mut reader)?;
        match rules.thinned_up_to {
            None if offset_delta != index => {
                return Err(bad(format!(
                    "offset delta {offset_delta}, expected {index} (records must be consecutive)"
                )));
            }
            Some(last) if offset_delta <= previous_delta || offset_delta > last => {
                return Err(bad(format!(
                    "offset delta {offset_delta} after {previous_delta} (deltas must increase up to {last})"
                )));
            }
            _ => {}
        }
        previous_delta = offset_delta;
        let key_len = read_varint(&mut reader)?;
        if key_len < 0 && rules.keys_required {
            return Err(bad(
                "a compacted topic (cleanup.policy=compact) cannot accept a record without a key"
                    .to_string(),
            ));
        }
        skip_bytes(&mut reader, key_len, true).map_err(|r| bad(format!("key: {r}")))?;
        let value_len = read_varint(&mut reader)?;
        skip_bytes(&mut reader, value_len, true).map_err(|r| bad(format!("value: {r}")))?;
        let headers = read_varint(&mut reader)?;
        if headers < 0 {
            return Err(bad(format!("negative header count {headers}")));
        }
        for _ in 0..headers {
            let key_len = read_varint(&mut reader)?;
            skip_bytes(&mut reader, key_len, false).map_err(|r| bad(format!("header key: {r}")))?;
            let value_len = read_varint(&mut reader)?;
            skip_bytes(&mut reader, value_len, true)
                .map_err(|r| bad(format!("header value: {r}")))?;
            if reader.consumed - start > length as u64 {
                return Err(bad(format!("headers run past the record length {length}")));
            }
        }
        if reader.consumed - start != length as u64 {
            return Err(bad(format!(
                "declared length {length}, fields take {}",
                reader.consumed - start
            )));
        }
    }
    if reader.fill_buf()?.is_empty() {
        Ok(())
    } else {
        Err(RecordError::Trailing)
    }
}

struct Counting<R> {
    inner: R,
    consumed: u64,
}

impl<R: BufRead> Counting<R> {
    fn read_u8(&mut self) -> io::Result<u8> {
        let b = *self
            .inner
            .fill_buf()?
            .first()
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        self.inner.consume(1);
        self.consumed += 1;
        Ok(b)
    }

    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
}

/// Skips a length-prefixed field (-1 is null where `nullable`), without copying it.
fn skip_bytes<R: BufRead>(
    reader: &mut Counting<R>,
    len: i32,
    nullable: bool,
) -> Result<(), String> {
    if len == -1 && nullable {
        return Ok(());
    }
    if len < 0 {
        return Err(format!("negative length {len}"));
    }
    let mut left = len as usize;
    while left > 0 {
        let available = reader.inner.fill_buf().map_err(|e| e.to_string())?.len();
        if available == 0 {
            return Err(format!(
                "{len} bytes announced, {} present",
                len as usize - left
            ));
        }
        let step = available.min(left);
        reader.inner.consume(step);
        reader.consumed += step as u64;
        left -= step;
    }
    Ok(())
}

fn read_varlong<R: BufRead>(reader: &mut Counting<R>) -> io::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = reader.read_u8()?;
        if shift == 63 && b > 1 {
            break;
        }
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "varint too long",
    ))
}

fn read_varint<R: BufRead>(reader: &mut Counting<R>) -> io::Result<i32> {
    let v = read_varlong(reader)?;
    i32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "varint overflows i32"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{tests::make_batch, HEADER_LEN};

    #[test]
    fn client_batches_validate() {
        let batch = make_batch(50, b"hello");
        validate(&batch[HEADER_LEN..], 50, Rules::PRODUCED).expect("valid");
    }

    #[test]
    fn wrong_counts_and_trailing_bytes_are_refused() {
        let batch = make_batch(5, b"x");
        assert!(matches!(
            validate(&batch[HEADER_LEN..], 6, Rules::PRODUCED),
            Err(RecordError::CountMismatch {
                declared: 6,
                found: 5
            })
        ));
        assert!(matches!(
            validate(&batch[HEADER_LEN..], 4, Rules::PRODUCED),
            Err(RecordError::Trailing)
        ));
    }

    #[test]
    fn a_length_announcing_more_than_present_is_refused() {
        let batch = make_batch(1, b"value");
        let mut records = batch[HEADER_LEN..].to_vec();
        records.truncate(records.len() - 3);
        assert!(validate(&records[..], 1, Rules::PRODUCED).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512), count in 0i32..2000) {
            let _ = validate(&bytes[..], count, Rules::PRODUCED);
            let _ = validate(&bytes[..], count, Rules::stored(count));
        }
    }
}
