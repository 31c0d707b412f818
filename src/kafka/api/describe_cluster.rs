//! DescribeCluster: one broker, which is also the controller. Needs DESCRIBE on the
//! cluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::{str_bytes, AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS};
use crate::acls::{Operation, ResourceType, CLUSTER_NAME};

pub fn handle(
    access: &Access,
    listener: &crate::kafka::listener::Listener,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let broker = access.broker;
    if !access.cluster(Operation::Describe) {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    }
    let (host, port) = (listener.advertised.0.as_str(), listener.advertised.1);
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&broker.config.broker.cluster_id))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(broker.node_id()))
            .with_host(str_bytes(host))
            .with_port(port)])
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            access.operations(ResourceType::Cluster, CLUSTER_NAME, CLUSTER_OPERATIONS)
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        })
}
