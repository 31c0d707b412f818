//! Building record batches on the client side (the CLI producer, and tests).

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::ClientError;

/// One record as the CLI produces it.
pub struct Outgoing {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    pub timestamp: i64,
}

/// Encodes records as one uncompressed v2 batch from a non-idempotent producer.
pub fn encode_batch(records: &[Outgoing]) -> Result<Bytes, ClientError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let headers: IndexMap<StrBytes, Option<Bytes>> = r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), Some(v.clone())))
                .collect();
            plain_record(
                i,
                r.timestamp,
                r.key.clone(),
                Some(r.value.clone()),
                headers,
            )
        })
        .collect();
    encode_records(&records).map_err(ClientError::Encode)
}

/// Record `i` of a batch from a producer that is neither idempotent nor transactional.
pub fn plain_record(
    i: usize,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: IndexMap<StrBytes, Option<Bytes>>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        // offset - sequence stays constant (so all records share one batch) and the batch's
        // base sequence is -1: "no sequence", as non-idempotent producers send.
        sequence: i as i32 - 1,
        timestamp,
        key,
        value,
        headers,
    }
}

/// Encodes records (offsets 0..n) as one uncompressed v2 batch.
pub fn encode_records(records: &[Record]) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    Ok(buf.freeze())
}
