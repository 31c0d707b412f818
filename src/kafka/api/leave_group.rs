//! LeaveGroup: one member (v0-2) or a batch of members by id or instance id (v3+).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::access::Access;
use crate::acls::Operation;
use crate::kafka::errors::group_result_code;

pub fn handle(access: &Access, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let broker = access.broker;
    if !access.group(Operation::Read, &request.group_id.0) {
        return LeaveGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    if version < 3 {
        let results = broker.groups.leave(
            &request.group_id.0,
            &[(request.member_id.to_string(), None)],
        );
        let code = results
            .into_iter()
            .next()
            .map(group_result_code)
            .unwrap_or(0);
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|s| s.to_string()),
            )
        })
        .collect();
    let results = broker.groups.leave(&request.group_id.0, &members);
    LeaveGroupResponse::default().with_members(
        request
            .members
            .iter()
            .zip(results)
            .map(|(m, r)| {
                MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(group_result_code(r))
            })
            .collect(),
    )
}
