//! SyncGroup: the leader hands in every member's assignment; everyone gets theirs.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{str_bytes, Reply};
use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::Operation;
use crate::kafka::errors::group_error_code;

pub fn handle(access: &Access, request: SyncGroupRequest, version: i16) -> Reply {
    let broker = access.broker;
    if !access.group(Operation::Read, &request.group_id.0) {
        return Reply::now(
            SyncGroupResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            version,
        );
    }
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    // Takes effect now, in request order; the answer may wait for the leader.
    let result = broker.groups.sync(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
        assignments,
    );
    Reply::later(version, async move {
        let result = result.await;
        let mut response = SyncGroupResponse::default()
            .with_error_code(
                result
                    .error
                    .map(|e| group_error_code(e).code())
                    .unwrap_or(0),
            )
            .with_assignment(result.assignment);
        if version >= 5 {
            response.protocol_type = result.protocol_type.as_deref().map(str_bytes);
            response.protocol_name = result.protocol_name.as_deref().map(str_bytes);
        }
        response
    })
}
