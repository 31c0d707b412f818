//! FindCoordinator: tern coordinates every group (and would every transaction) itself.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::str_bytes;
use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::Operation;

pub fn handle(
    access: &Access,
    listener: &crate::kafka::listener::Listener,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = (listener.advertised.0.as_str(), listener.advertised.1);
    let node = BrokerId(access.broker.node_id());
    // Groups (key type 0) need DESCRIBE on the group.
    let denied = |key: &str| request.key_type == 0 && !access.group(Operation::Describe, key);
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                if denied(key) {
                    return Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(BrokerId(-1))
                        .with_host(str_bytes(""))
                        .with_port(-1)
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code());
                }
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(node)
                    .with_host(str_bytes(host))
                    .with_port(port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    if denied(&request.key) {
        return FindCoordinatorResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code())
            .with_node_id(BrokerId(-1))
            .with_host(str_bytes(""))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(node)
        .with_host(str_bytes(host))
        .with_port(port)
}
