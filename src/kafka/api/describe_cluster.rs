//! DescribeCluster: one broker, which is also the controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS};
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    listener: &crate::kafka::listener::Listener,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let (host, port) = (listener.advertised.0.as_str(), listener.advertised.1);
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&broker.config.broker.cluster_id))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(broker.node_id()))
            .with_host(str_bytes(host))
            .with_port(port)])
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        })
}
