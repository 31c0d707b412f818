//! JoinGroup: parks until the group's rebalance completes (see groups::state).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{str_bytes, Reply};
use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::Operation;
use crate::groups::state::JoinArgs;
use crate::kafka::errors::group_error_code;

pub fn handle(
    access: &Access,
    request: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> Reply {
    let broker = access.broker;
    if !access.group(Operation::Read, &request.group_id.0) {
        let mut response = JoinGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id.clone());
        if version >= 7 {
            response.protocol_name = None;
        } else {
            response.protocol_name = Some(str_bytes(""));
        }
        return Reply::now(response, version);
    }
    let session = request.session_timeout_ms.max(0) as u64;
    // v0 has no rebalance timeout: the session timeout serves for both.
    let rebalance = if version >= 1 {
        request.rebalance_timeout_ms.max(0) as u64
    } else {
        session
    };
    let args = JoinArgs {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id,
        client_host,
        session_timeout_ms: session,
        rebalance_timeout_ms: rebalance,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    // Takes effect now, in request order; the answer comes when the rebalance completes.
    let result = broker.groups.join(&request.group_id.0, args);
    Reply::later(version, async move {
        let result = result.await;
        let mut response = JoinGroupResponse::default()
            .with_error_code(
                result
                    .error
                    .map(|e| group_error_code(e).code())
                    .unwrap_or(0),
            )
            .with_generation_id(result.generation)
            .with_protocol_name(Some(str_bytes(
                result.protocol_name.as_deref().unwrap_or(""),
            )))
            .with_leader(str_bytes(&result.leader))
            .with_member_id(str_bytes(&result.member_id))
            .with_members(
                result
                    .members
                    .iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_group_instance_id(if version >= 5 {
                                m.instance_id.as_deref().map(str_bytes)
                            } else {
                                None
                            })
                            .with_metadata(m.metadata.clone())
                    })
                    .collect(),
            );
        if version >= 7 {
            response.protocol_type = result.protocol_type.as_deref().map(str_bytes);
        }
        response
    })
}
