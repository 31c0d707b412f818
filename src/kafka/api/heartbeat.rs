//! Heartbeat: keeps a member alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;
use crate::kafka::errors::group_result_code;

pub fn handle(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = broker.groups.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(group_result_code(result))
}
