//! Kafka APIs: the versions tern advertises and one handler file per API. Handlers decode
//! nothing themselves (the `kafka-protocol` crate does) and call into topics and logs.
//!
//! A handler returns a [`Reply`]: a response ready now, one that completes later (produce
//! waiting for fsync, fetch long-polling), or nothing (acks=0). Work that must happen in
//! request order (appends) is done before the handler returns.

mod access;
mod acls;
mod alter_configs;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_offsets_v0;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
mod spliced;
mod sync_group;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::acls::Operation;
use crate::broker::Broker;

pub use api_versions::unsupported_version_response;

/// API versions tern handles, and therefore advertises. Non-flexible versions stay
/// supported for clients such as KafkaJS that never use flexible ones; versions that need
/// topic ids in requests (Fetch 13+, Produce 13) are left out on purpose.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    // v0 is read and written by list_offsets_v0.rs (sarama, Burrow).
    (ApiKey::ListOffsets, 0, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
    // Answered by the connection itself (kafka/sasl.rs). v0 is listed because librdkafka
    // 2.0 (Debian's kcat) looks for it before it uses SASL at all; a client that really
    // sends v0 (raw tokens after it, Kafka < 1.0) is refused with a reason.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Who sent a request (JoinGroup records it; DescribeGroups shows it), and the
/// connection's own limits.
pub struct RequestContext {
    /// The listener the client connected to (its advertised address answers Metadata).
    pub listener: Arc<crate::kafka::listener::Listener>,
    /// Who the client is (principal and address), for the ACLs.
    pub session: Arc<crate::acls::Session>,
    /// A slice of the request (no copy per request).
    pub client_id: kafka_protocol::protocol::StrBytes,
    pub peer: std::net::SocketAddr,
    /// One Fetch response of this connection is prepared or queued at a time: a client
    /// that pipelines fetches without reading the answers holds one response, not sixteen.
    pub fetch_queue: Arc<FetchQueue>,
}

pub use fetch::FetchQueue;

pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, min, max)| (*min, *max))
}

/// An encoded response body (without the response header), with what it holds until the
/// connection has written it (memory-budget permits, its connection's fetch turn).
pub struct Encoded {
    pub bytes: BytesMut,
    /// Further parts written after `bytes`, in order: stored records passed through by
    /// reference (`spliced`). Empty for all but large Fetch responses.
    pub more: Vec<Bytes>,
    pub hold: Vec<Box<dyn std::any::Any + Send>>,
}

impl Encoded {
    /// Bytes on the wire (without the response header).
    pub fn len(&self) -> usize {
        self.bytes.len() + self.more.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub type Body = Result<Encoded, String>;

pub enum Reply {
    Now(Body),
    /// Work that needs polling to progress (long polls, group joins): runs as its own task.
    Later(Pin<Box<dyn Future<Output = Body> + Send>>),
    /// An answer whose work is already under way elsewhere (a produce registered with
    /// group commit): the connection's writer awaits it in order, without a task of its own.
    Awaiting(Pin<Box<dyn Future<Output = Body> + Send>>),
    /// acks=0 produce: the client expects no response at all.
    Nothing,
}

impl Reply {
    fn now<T: Encodable>(message: T, version: i16) -> Reply {
        Reply::Now(encode(&message, version))
    }

    fn later<T, F>(version: i16, future: F) -> Reply
    where
        T: Encodable,
        F: Future<Output = T> + Send + 'static,
    {
        Reply::Later(Box::pin(async move { encode(&future.await, version) }))
    }

    fn awaiting<T, F>(version: i16, future: F) -> Reply
    where
        T: Encodable,
        F: Future<Output = T> + Send + 'static,
    {
        Reply::Awaiting(Box::pin(async move { encode(&future.await, version) }))
    }
}

pub fn encode<T: Encodable>(message: &T, version: i16) -> Body {
    // Sized up front: a large Fetch response must not pass through doubling copies.
    let size = message
        .compute_size(version)
        .map_err(|e| format!("cannot size response: {e:#}"))?;
    let mut buf = BytesMut::with_capacity(size);
    message
        .encode(&mut buf, version)
        .map_err(|e| format!("cannot encode response: {e:#}"))?;
    Ok(Encoded {
        bytes: buf,
        more: Vec::new(),
        hold: Vec::new(),
    })
}

/// Why a request could not be handled at all (the connection is then closed, as Kafka does).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

fn decode<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, RequestError> {
    crate::kafka::decode_guard::decode(body, version).map_err(|reason| RequestError::Malformed {
        api,
        version,
        reason,
    })
}

/// Decodes a request body as `api` at `version` and throws it away: what the fuzz targets
/// and the decoder tests drive (the handlers decode the same types in `handle`).
pub fn decode_only(api: ApiKey, version: i16, body: &mut Bytes) -> Result<(), RequestError> {
    if api == ApiKey::ListOffsets && version == 0 {
        return list_offsets_v0::decode(body).map(|_| ()).map_err(|reason| {
            RequestError::Malformed {
                api,
                version,
                reason,
            }
        });
    }
    macro_rules! as_type {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match api {
                $(ApiKey::$key => decode::<$ty>(api, version, body).map(|_| ()),)*
                other => Err(RequestError::Malformed {
                    api: other,
                    version,
                    reason: "API not supported by tern".to_string(),
                }),
            }
        };
    }
    as_type! {
        Produce => m::ProduceRequest,
        Fetch => m::FetchRequest,
        ListOffsets => m::ListOffsetsRequest,
        Metadata => m::MetadataRequest,
        ApiVersions => m::ApiVersionsRequest,
        CreateTopics => m::CreateTopicsRequest,
        DeleteTopics => m::DeleteTopicsRequest,
        DeleteRecords => m::DeleteRecordsRequest,
        DescribeConfigs => m::DescribeConfigsRequest,
        AlterConfigs => m::AlterConfigsRequest,
        CreatePartitions => m::CreatePartitionsRequest,
        IncrementalAlterConfigs => m::IncrementalAlterConfigsRequest,
        DescribeCluster => m::DescribeClusterRequest,
        FindCoordinator => m::FindCoordinatorRequest,
        JoinGroup => m::JoinGroupRequest,
        SyncGroup => m::SyncGroupRequest,
        Heartbeat => m::HeartbeatRequest,
        LeaveGroup => m::LeaveGroupRequest,
        OffsetCommit => m::OffsetCommitRequest,
        OffsetFetch => m::OffsetFetchRequest,
        ListGroups => m::ListGroupsRequest,
        DescribeGroups => m::DescribeGroupsRequest,
        DeleteGroups => m::DeleteGroupsRequest,
        InitProducerId => m::InitProducerIdRequest,
        OffsetDelete => m::OffsetDeleteRequest,
        DescribeAcls => m::DescribeAclsRequest,
        CreateAcls => m::CreateAclsRequest,
        DeleteAcls => m::DeleteAclsRequest,
        SaslHandshake => m::SaslHandshakeRequest,
        SaslAuthenticate => m::SaslAuthenticateRequest,
    }
}

/// Decodes and handles one request whose version is known to be supported.
///
/// Admin requests create, delete or resize files and fsync them: they run with
/// `block_in_place`, so that the runtime moves other connections off this worker while
/// this connection's requests still take effect in order.
pub fn dispatch(
    broker: &Arc<Broker>,
    context: &RequestContext,
    api: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<Reply, RequestError> {
    let does_file_io = matches!(
        api,
        ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::CreatePartitions
            | ApiKey::AlterConfigs
            | ApiKey::IncrementalAlterConfigs
            | ApiKey::DeleteRecords
            | ApiKey::CreateAcls
            | ApiKey::DeleteAcls
    );
    if does_file_io {
        tokio::task::block_in_place(|| handle(broker, context, api, version, body))
    } else {
        handle(broker, context, api, version, body)
    }
}

fn handle(
    broker: &Arc<Broker>,
    context: &RequestContext,
    api: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<Reply, RequestError> {
    let access = &access::Access {
        broker,
        session: &context.session,
    };
    Ok(match api {
        ApiKey::ApiVersions => {
            let _: m::ApiVersionsRequest = decode(api, version, body)?;
            Reply::now(api_versions::response(), version)
        }
        ApiKey::Metadata => Reply::now(
            metadata::handle(
                access,
                &context.listener,
                decode(api, version, body)?,
                version,
            ),
            version,
        ),
        ApiKey::Produce => produce::handle(access, decode(api, version, body)?, version),
        ApiKey::Fetch => fetch::handle(
            access,
            decode(api, version, body)?,
            version,
            context.fetch_queue.ticket(),
        ),
        ApiKey::ListOffsets if version == 0 => {
            let request =
                list_offsets_v0::decode(body).map_err(|reason| RequestError::Malformed {
                    api,
                    version,
                    reason,
                })?;
            let response = list_offsets::handle(access, request);
            Reply::Now(Ok(Encoded {
                bytes: list_offsets_v0::encode(&response),
                more: Vec::new(),
                hold: Vec::new(),
            }))
        }
        ApiKey::ListOffsets => Reply::now(
            list_offsets::handle(access, decode(api, version, body)?),
            version,
        ),
        ApiKey::CreateTopics => Reply::now(
            create_topics::handle(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::DeleteTopics => Reply::now(
            delete_topics::handle(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::CreatePartitions => Reply::now(
            create_partitions::handle(access, decode(api, version, body)?),
            version,
        ),
        ApiKey::DescribeConfigs => Reply::now(
            describe_configs::handle(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::AlterConfigs => Reply::now(
            alter_configs::alter(access, decode(api, version, body)?),
            version,
        ),
        ApiKey::IncrementalAlterConfigs => Reply::now(
            alter_configs::incremental(access, decode(api, version, body)?),
            version,
        ),
        ApiKey::DeleteRecords => Reply::now(
            delete_records::handle(access, decode(api, version, body)?),
            version,
        ),
        ApiKey::DescribeCluster => {
            let request: m::DescribeClusterRequest = decode(api, version, body)?;
            Reply::now(
                describe_cluster::handle(access, &context.listener, request),
                version,
            )
        }
        ApiKey::OffsetDelete => offset_delete::handle(access, decode(api, version, body)?, version),
        ApiKey::InitProducerId => Reply::now(
            init_producer_id::handle(access, decode(api, version, body)?),
            version,
        ),
        ApiKey::FindCoordinator => Reply::now(
            find_coordinator::handle(
                access,
                &context.listener,
                decode(api, version, body)?,
                version,
            ),
            version,
        ),
        ApiKey::JoinGroup => join_group::handle(
            access,
            decode(api, version, body)?,
            version,
            context.client_id.to_string(),
            format!("/{}", context.peer.ip()),
        ),
        ApiKey::SyncGroup => sync_group::handle(access, decode(api, version, body)?, version),
        ApiKey::Heartbeat => Reply::now(
            heartbeat::handle(access, decode(api, version, body)?),
            version,
        ),
        ApiKey::LeaveGroup => Reply::now(
            leave_group::handle(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::OffsetCommit => offset_commit::handle(access, decode(api, version, body)?, version),
        ApiKey::OffsetFetch => Reply::now(
            offset_fetch::handle(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::ListGroups => Reply::now(
            list_groups::handle(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::DescribeGroups => Reply::now(
            describe_groups::handle(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::DeleteGroups => delete_groups::handle(access, decode(api, version, body)?, version),
        ApiKey::CreateAcls => Reply::now(
            acls::create(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::DescribeAcls => Reply::now(
            acls::describe(access, decode(api, version, body)?, version),
            version,
        ),
        ApiKey::DeleteAcls => Reply::now(
            acls::delete(access, decode(api, version, body)?, version),
            version,
        ),
        other => {
            return Err(RequestError::Malformed {
                api: other,
                version,
                reason: "API not supported by tern".to_string(),
            })
        }
    })
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> m::TopicName {
    m::TopicName(str_bytes(s))
}

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// The operations each resource type has, for authorized-operations fields.
const TOPIC_OPERATIONS: &[Operation] = &[
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];
const CLUSTER_OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];
const GROUP_OPERATIONS: &[Operation] = &[Operation::Read, Operation::Delete, Operation::Describe];

/// DescribeConfigs / AlterConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
