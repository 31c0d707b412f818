//! ListOffsets v0, which the `kafka-protocol` crate no longer knows (Kafka 4 dropped it)
//! but sarama-based tools still send — Burrow 1.2 asks every broker for its partitions'
//! log end this way. The format is small and fixed, so it is read and written here and
//! answered by the same handler as v1+:
//!
//! request  `replica_id int32, [topic string, [partition int32, timestamp int64,
//!          max_num_offsets int32]]`
//! response `[topic string, [partition int32, error_code int16, [offset int64]]]`
//!
//! Every count is checked against the bytes left before anything is reserved.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

/// Smallest encoding of one topic (name length + partition count) and one partition.
const MIN_TOPIC: usize = 2 + 4;
const PARTITION: usize = 4 + 8 + 4;

fn count(body: &mut Bytes, each: usize) -> Result<usize, String> {
    if body.remaining() < 4 {
        return Err("truncated array length".into());
    }
    let n = body.get_i32();
    let n = usize::try_from(n).map_err(|_| format!("negative array length {n}"))?;
    if n.saturating_mul(each) > body.remaining() {
        return Err(format!(
            "{n} elements cannot fit in {} bytes",
            body.remaining()
        ));
    }
    Ok(n)
}

fn string(body: &mut Bytes) -> Result<String, String> {
    if body.remaining() < 2 {
        return Err("truncated string".into());
    }
    let len = body.get_i16();
    let len = usize::try_from(len).map_err(|_| "null topic name".to_string())?;
    if len > body.remaining() {
        return Err("truncated string".into());
    }
    String::from_utf8(body.split_to(len).to_vec()).map_err(|_| "topic name is not UTF-8".into())
}

/// The v0 request as the v1 request the handler takes (max_num_offsets: tern answers
/// one offset, as Kafka does for the latest and earliest offsets).
pub fn decode(body: &mut Bytes) -> Result<ListOffsetsRequest, String> {
    if body.remaining() < 4 {
        return Err("truncated request".into());
    }
    let replica_id = body.get_i32();
    let topics = (0..count(body, MIN_TOPIC)?)
        .map(|_| {
            let name = string(body)?;
            let partitions = (0..count(body, PARTITION)?)
                .map(|_| {
                    let partition = body.get_i32();
                    let timestamp = body.get_i64();
                    let _max_num_offsets = body.get_i32();
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp)
                })
                .collect();
            Ok(ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ListOffsetsRequest::default()
        .with_replica_id(replica_id.into())
        .with_topics(topics))
}

/// The handler's answer in v0's layout.
pub fn encode(response: &ListOffsetsResponse) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(response.topics.len() as i32);
    for topic in &response.topics {
        let name = topic.name.0.as_bytes();
        out.put_i16(name.len() as i16);
        out.put_slice(name);
        out.put_i32(topic.partitions.len() as i32);
        for p in &topic.partitions {
            out.put_i32(p.partition_index);
            out.put_i16(p.error_code);
            if p.error_code == 0 && p.offset >= 0 {
                out.put_i32(1);
                out.put_i64(p.offset);
            } else {
                out.put_i32(0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };

    #[test]
    fn a_sarama_style_request_round_trips() {
        let mut req = BytesMut::new();
        req.put_i32(-1);
        req.put_i32(1);
        req.put_i16(8);
        req.put_slice(b"readings");
        req.put_i32(1);
        req.put_i32(0);
        req.put_i64(-1);
        req.put_i32(1);
        let decoded = decode(&mut req.freeze()).unwrap();
        assert_eq!(decoded.topics[0].name.0.as_str(), "readings");
        assert_eq!(decoded.topics[0].partitions[0].timestamp, -1);

        let response =
            ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("readings")))
                .with_partitions(vec![ListOffsetsPartitionResponse::default()
                    .with_partition_index(0)
                    .with_offset(1000)])]);
        let bytes = encode(&response);
        assert_eq!(
            &bytes[bytes.len() - 12..],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 232]
        );
    }

    #[test]
    fn hostile_counts_are_refused_before_any_allocation() {
        let mut req = BytesMut::new();
        req.put_i32(-1);
        req.put_i32(i32::MAX);
        assert!(decode(&mut req.freeze())
            .unwrap_err()
            .contains("cannot fit"));
        let mut neg = BytesMut::new();
        neg.put_i32(-1);
        neg.put_i32(-5);
        assert!(decode(&mut neg.freeze()).is_err());
        assert!(decode(&mut Bytes::from_static(&[0, 0])).is_err());
    }
}
