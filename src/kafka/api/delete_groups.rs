//! DeleteGroups: removes an empty group and its committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .iter()
        .map(|id| {
            let store = broker.groups.offsets.store();
            let known = broker.groups.describe(&id.0).is_some()
                || store.get(&id.0).map(|o| !o.is_empty()).unwrap_or(false);
            let code = if !known {
                ResponseError::GroupIdNotFound.code()
            } else if !broker.groups.remove_if_empty(&id.0) {
                ResponseError::NonEmptyGroup.code()
            } else if store
                .delete_group(&id.0)
                .and_then(|_| store.flush())
                .is_err()
            {
                ResponseError::KafkaStorageError.code()
            } else {
                0
            };
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
