//! Heartbeat: keeps a member alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::access::Access;
use crate::acls::Operation;
use crate::kafka::errors::group_result_code;

pub fn handle(access: &Access, request: HeartbeatRequest) -> HeartbeatResponse {
    let broker = access.broker;
    if !access.group(Operation::Read, &request.group_id.0) {
        return HeartbeatResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let result = broker.groups.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(group_result_code(result))
}
