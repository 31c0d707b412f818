//! DeleteGroups: removes an empty group and its committed offsets (tombstones in
//! `__consumer_offsets`, answered once durable).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::Reply;
use crate::acls::Operation;

pub fn handle(access: &Access, request: DeleteGroupsRequest, version: i16) -> Reply {
    let broker = access.broker;
    let offsets = &broker.groups.offsets;
    let mut results = Vec::new();
    let mut pending = Vec::new();
    for id in &request.groups_names {
        let known = broker.groups.describe(&id.0).is_some() || offsets.has_offsets(&id.0);
        let code = if !access.group(Operation::Delete, &id.0) {
            ResponseError::GroupAuthorizationFailed.code()
        } else if !crate::groups::valid_group_id(&id.0) {
            ResponseError::InvalidGroupId.code()
        } else if !known {
            ResponseError::GroupIdNotFound.code()
        } else if !broker.groups.remove_if_empty(&id.0) {
            ResponseError::NonEmptyGroup.code()
        } else {
            match offsets.delete_group(&id.0) {
                Ok(p) => {
                    pending.push((results.len(), p));
                    0
                }
                Err(e) => {
                    tracing::error!(group = %id.0, error = %e, "cannot delete committed offsets");
                    ResponseError::KafkaStorageError.code()
                }
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code),
        );
    }
    Reply::later(version, async move {
        for (i, p) in pending {
            if let Err(e) = p.durable().await {
                tracing::error!(error = %e, "group deletion not durable");
                results[i].error_code = ResponseError::KafkaStorageError.code();
            }
        }
        DeleteGroupsResponse::default().with_results(results)
    })
}
