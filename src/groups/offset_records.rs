//! Committed offsets as records of the internal topic `__consumer_offsets`, in Kafka's own
//! key/value format, so that tools that read Kafka's offsets topic (Burrow, monitoring
//! agents) read tern's too.
//!
//! Key, version 1 (Kafka's `OffsetCommitKey`): `int16 version, string group, string topic,
//! int32 partition`. Value, version 3 (`OffsetCommitValue`): `int16 version, int64 offset,
//! int32 leader epoch, string metadata, int64 commit timestamp`. A null value (tombstone)
//! deletes the key. Strings are `int16 length` + UTF-8, all big-endian. Keys of other
//! versions (Kafka's group metadata, version 2) are recognised and ignored.

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::records::Record;
use thiserror::Error;

/// The internal topic's name, as in Kafka.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Longest group id, topic name and metadata a record can carry (Kafka's int16 strings).
pub const MAX_STRING: usize = i16::MAX as usize;

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// A committed position of one group for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// (group, topic, partition).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("a string of {0} bytes does not fit Kafka's offsets record format")]
    TooLong(usize),
    #[error("malformed offsets record: {0}")]
    Malformed(&'static str),
    #[error("cannot encode offsets records: {0}")]
    Encode(String),
}

fn put_string(out: &mut Vec<u8>, s: &str) -> Result<(), RecordError> {
    if s.len() > MAX_STRING {
        return Err(RecordError::TooLong(s.len()));
    }
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Err(RecordError::Malformed("null string"));
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Malformed("not UTF-8"))
    }
}

pub fn encode_key(key: &OffsetKey) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(8 + key.group.len() + key.topic.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_string(&mut out, &key.group)?;
    put_string(&mut out, &key.topic)?;
    out.extend_from_slice(&key.partition.to_be_bytes());
    Ok(out)
}

/// The offset-commit key in `bytes`; `Ok(None)` for keys of other kinds (group metadata).
pub fn decode_key(bytes: &[u8]) -> Result<Option<OffsetKey>, RecordError> {
    let mut r = Reader(bytes);
    match r.i16()? {
        0 | 1 => {}
        _ => return Ok(None),
    }
    let key = OffsetKey {
        group: r.string()?,
        topic: r.string()?,
        partition: r.i32()?,
    };
    if !r.0.is_empty() {
        return Err(RecordError::Malformed("bytes after the key"));
    }
    Ok(Some(key))
}

pub fn encode_value(c: &Committed) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(26 + c.metadata.len());
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.leader_epoch.to_be_bytes());
    put_string(&mut out, &c.metadata)?;
    out.extend_from_slice(&c.commit_ms.to_be_bytes());
    Ok(out)
}

/// Reads value versions 0 to 3 (what any Kafka version wrote).
pub fn decode_value(bytes: &[u8]) -> Result<Committed, RecordError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_ms = r.i64()?;
    if version == 1 {
        let _expire = r.i64()?;
    }
    if !(0..=3).contains(&version) {
        return Err(RecordError::Malformed("unknown value version"));
    }
    Ok(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_ms,
    })
}

/// The commit a stored record holds: `Ok(None)` for records of other kinds.
pub fn decode_record(
    record: &Record,
) -> Result<Option<(OffsetKey, Option<Committed>)>, RecordError> {
    let key = record
        .key
        .as_ref()
        .ok_or(RecordError::Malformed("record without a key"))?;
    let Some(key) = decode_key(key)? else {
        return Ok(None);
    };
    let value = record.value.as_deref().map(decode_value).transpose()?;
    Ok(Some((key, value)))
}

/// One uncompressed record batch of offset commits (`None`: a tombstone).
pub fn encode_batch(
    entries: &[(OffsetKey, Option<Committed>)],
    now_ms: i64,
) -> Result<Bytes, RecordError> {
    let mut records = Vec::with_capacity(entries.len());
    for (i, (key, value)) in entries.iter().enumerate() {
        let value = value
            .as_ref()
            .map(encode_value)
            .transpose()?
            .map(Bytes::from);
        let key = Some(Bytes::from(encode_key(key)?));
        records.push(crate::client::records::plain_record(
            i,
            now_ms,
            key,
            value,
            IndexMap::new(),
        ));
    }
    crate::client::records::encode_records(&records).map_err(RecordError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keys_and_values_round_trip_losslessly(
            group in "\\PC{0,40}", topic in "[a-z._-]{1,40}", partition in any::<i32>(),
            offset in any::<i64>(), epoch in any::<i32>(), metadata in "\\PC{0,60}", ts in any::<i64>(),
        ) {
            let key = OffsetKey { group, topic, partition };
            prop_assert_eq!(decode_key(&encode_key(&key).unwrap()).unwrap(), Some(key));
            let value = Committed { offset, leader_epoch: epoch, metadata, commit_ms: ts };
            prop_assert_eq!(decode_value(&encode_value(&value).unwrap()).unwrap(), value);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_key(&bytes);
            let _ = decode_value(&bytes);
        }
    }

    #[test]
    fn a_group_id_too_long_for_the_format_is_an_error_not_a_wrapped_length() {
        // The old store wrote `len as u16`: 65,536 + 7 bytes became a 7-byte group.
        let key = OffsetKey {
            group: "x".repeat(65_543),
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(encode_key(&key), Err(RecordError::TooLong(65_543)));
    }

    #[test]
    fn group_metadata_keys_are_recognised_and_skipped() {
        let mut key = 2i16.to_be_bytes().to_vec();
        key.extend_from_slice(&3i16.to_be_bytes());
        key.extend_from_slice(b"grp");
        assert_eq!(decode_key(&key), Ok(None));
    }
}
