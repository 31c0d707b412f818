//! The request decode path driven with hostile bytes: nothing may panic, abort or hold
//! on to memory, whatever the length fields claim.

use bytes::Bytes;
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::Decodable;
use proptest::prelude::*;

use super::api::SUPPORTED;
use super::decode_guard::decode;

fn try_decode<T: Decodable>(bytes: &[u8], version: i16) -> bool {
    decode::<T>(&mut Bytes::copy_from_slice(bytes), version).is_ok()
}

/// Decodes `bytes` as the body of `api` at `version`; true if it decoded.
fn decode_any(api: ApiKey, version: i16, bytes: &[u8]) -> bool {
    match api {
        ApiKey::Produce => try_decode::<m::ProduceRequest>(bytes, version),
        ApiKey::Fetch => try_decode::<m::FetchRequest>(bytes, version),
        ApiKey::ListOffsets => try_decode::<m::ListOffsetsRequest>(bytes, version),
        ApiKey::Metadata => try_decode::<m::MetadataRequest>(bytes, version),
        ApiKey::ApiVersions => try_decode::<m::ApiVersionsRequest>(bytes, version),
        ApiKey::CreateTopics => try_decode::<m::CreateTopicsRequest>(bytes, version),
        ApiKey::DeleteTopics => try_decode::<m::DeleteTopicsRequest>(bytes, version),
        ApiKey::DeleteRecords => try_decode::<m::DeleteRecordsRequest>(bytes, version),
        ApiKey::DescribeConfigs => try_decode::<m::DescribeConfigsRequest>(bytes, version),
        ApiKey::AlterConfigs => try_decode::<m::AlterConfigsRequest>(bytes, version),
        ApiKey::CreatePartitions => try_decode::<m::CreatePartitionsRequest>(bytes, version),
        ApiKey::IncrementalAlterConfigs => {
            try_decode::<m::IncrementalAlterConfigsRequest>(bytes, version)
        }
        ApiKey::DescribeCluster => try_decode::<m::DescribeClusterRequest>(bytes, version),
        ApiKey::FindCoordinator => try_decode::<m::FindCoordinatorRequest>(bytes, version),
        ApiKey::JoinGroup => try_decode::<m::JoinGroupRequest>(bytes, version),
        ApiKey::SyncGroup => try_decode::<m::SyncGroupRequest>(bytes, version),
        ApiKey::Heartbeat => try_decode::<m::HeartbeatRequest>(bytes, version),
        ApiKey::LeaveGroup => try_decode::<m::LeaveGroupRequest>(bytes, version),
        ApiKey::OffsetCommit => try_decode::<m::OffsetCommitRequest>(bytes, version),
        ApiKey::OffsetFetch => try_decode::<m::OffsetFetchRequest>(bytes, version),
        ApiKey::ListGroups => try_decode::<m::ListGroupsRequest>(bytes, version),
        ApiKey::DescribeGroups => try_decode::<m::DescribeGroupsRequest>(bytes, version),
        ApiKey::DeleteGroups => try_decode::<m::DeleteGroupsRequest>(bytes, version),
        ApiKey::InitProducerId => try_decode::<m::InitProducerIdRequest>(bytes, version),
        ApiKey::OffsetDelete => try_decode::<m::OffsetDeleteRequest>(bytes, version),
        _ => false,
    }
}

#[test]
fn huge_array_counts_are_an_error_not_an_abort() {
    // Metadata v0 declaring 2^31-1 topics in a 4-byte body; and the 8-byte frame reported
    // against the kafka-protocol crate (54 million topics).
    assert!(!try_decode::<m::MetadataRequest>(
        &[0x7f, 0xff, 0xff, 0xff],
        0
    ));
    assert!(!try_decode::<m::MetadataRequest>(
        &[0x03, 0x3c, 0x0c, 0x00, 0xb6],
        0
    ));
    // Produce v3: null transactional id, acks, timeout, then 2^31-1 topics.
    let produce = [
        0xff, 0xff, 0x00, 0x01, 0x00, 0x00, 0x75, 0x30, 0x7f, 0xff, 0xff, 0xff,
    ];
    assert!(!try_decode::<m::ProduceRequest>(&produce, 3));
    // Flexible (compact) arrays: an unsigned varint of 2^32-1 elements.
    let compact = [0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(!try_decode::<m::MetadataRequest>(&compact, 12));
    for (api, min, max) in SUPPORTED {
        for version in *min..=*max {
            for body in [&[0x7f, 0xff, 0xff, 0xff][..], &compact[..], &[0xff; 64][..]] {
                decode_any(*api, version, body);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_or_abort(
        which in 0usize..SUPPORTED.len(),
        version_pick in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let (api, min, max) = SUPPORTED[which];
        let version = min + (version_pick as i16 % (max - min + 1));
        decode_any(api, version, &body);
    }
}
