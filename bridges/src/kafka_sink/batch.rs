//! Stored batches as the sink forwards them: the bytes on disk are a Kafka record batch
//! v2, so a batch goes to the cluster as it is (still lz4) with only its header changed —
//! offset 0 (the cluster assigns offsets), the sink's producer id, epoch and sequence —
//! and its CRC recomputed. Nothing is decompressed or recompressed.

/// Byte positions in the v2 batch header (Kafka's DefaultRecordBatch).
const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
pub const HEADER_BYTES: usize = 61;

const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// One stored batch within a read.
#[derive(Debug, Clone, Copy)]
pub struct StoredBatch<'a> {
    pub bytes: &'a [u8],
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub control: bool,
}

impl StoredBatch<'_> {
    /// Offsets the batch covers (and so the offsets it takes in the target).
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// The offset after the batch.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.offset_count()
    }
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(x)
}

/// The whole batches at the front of `bytes`; stops at anything that is not a complete
/// v2 batch (a read never ends mid-batch, so that is the end).
pub fn batches(bytes: &[u8]) -> Vec<StoredBatch<'_>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= HEADER_BYTES {
        let length = i32_at(rest, BATCH_LENGTH);
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let total = length + 12;
        if total < HEADER_BYTES || total > rest.len() || rest[MAGIC] != 2 {
            break;
        }
        let (batch, tail) = rest.split_at(total);
        let attributes = i16::from_be_bytes([batch[ATTRIBUTES], batch[ATTRIBUTES + 1]]);
        let last_offset_delta = i32_at(batch, LAST_OFFSET_DELTA);
        if last_offset_delta < 0 {
            break;
        }
        out.push(StoredBatch {
            bytes: batch,
            base_offset: i64_at(batch, BASE_OFFSET),
            last_offset_delta,
            control: attributes & CONTROL != 0,
        });
        rest = tail;
    }
    out
}

/// The sink's identity in the cluster: an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Appends `batch` to `out` as the sink's producer sends it.
pub fn append_stamped(out: &mut Vec<u8>, batch: &StoredBatch<'_>, stamp: ProducerStamp) {
    let start = out.len();
    out.extend_from_slice(batch.bytes);
    let b = &mut out[start..];
    b[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&0i64.to_be_bytes());
    b[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&(-1i32).to_be_bytes());
    let attributes = i16::from_be_bytes([b[ATTRIBUTES], b[ATTRIBUTES + 1]]) & !TRANSACTIONAL;
    b[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&stamp.producer_id.to_be_bytes());
    b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
    b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The sequence after a batch of `count` offsets (Kafka wraps at i32::MAX).
pub fn next_sequence(sequence: i32, count: i64) -> i32 {
    ((i64::from(sequence) + count) % (i64::from(i32::MAX) + 1)) as i32
}

/// A stored batch for tests: `values` at offsets from `base`.
#[cfg(test)]
pub(crate) fn stored(
    base: i64,
    values: &[&str],
    compression: kafka_protocol::records::Compression,
) -> Vec<u8> {
    tests::stored(base, values, compression)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    pub(super) fn stored(base: i64, values: &[&str], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 3,
                producer_id: 77,
                producer_epoch: 2,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: 10 + i as i32,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(bytes::Bytes::from(v.to_string())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn a_stamped_batch_keeps_its_records_and_passes_the_crc_check() {
        let mut bytes = stored(100, &["a", "b", "c"], Compression::Gzip);
        bytes.extend(stored(103, &["d"], Compression::None));
        let found = batches(&bytes);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].base_offset, found[0].offset_count()), (100, 3));
        assert_eq!(found[1].next_offset(), 104);
        let mut out = Vec::new();
        let stamp = ProducerStamp {
            producer_id: 5,
            producer_epoch: 1,
            base_sequence: 42,
        };
        append_stamped(&mut out, &found[0], stamp);
        let mut buf = bytes::Bytes::from(out);
        let set = RecordBatchDecoder::decode(&mut buf).unwrap();
        let records = set.records;
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].offset, 0);
        assert_eq!(records[2].offset, 2);
        assert_eq!(records[0].producer_id, 5);
        assert_eq!(records[0].sequence, 42);
        assert_eq!(records[2].sequence, 44);
        assert_eq!(records[1].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(records[1].timestamp, 1_700_000_000_001);
    }

    #[test]
    fn a_truncated_read_ends_at_the_last_whole_batch() {
        let mut bytes = stored(0, &["a"], Compression::None);
        let second = stored(1, &["b"], Compression::None);
        bytes.extend_from_slice(&second[..second.len() - 1]);
        assert_eq!(batches(&bytes).len(), 1);
        assert!(batches(&bytes[..10]).is_empty());
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(next_sequence(5, 3), 8);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
    }
}
