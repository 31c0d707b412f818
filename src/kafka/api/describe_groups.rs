//! DescribeGroups: state, protocol and members with their metadata and assignments.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use kafka_protocol::ResponseError;

use super::access::Access;
use crate::acls::{Operation, ResourceType};

pub fn handle(
    access: &Access,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let broker = access.broker;
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let mut described = DescribedGroup::default().with_group_id(id.clone());
            if !access.group(Operation::Describe, &id.0) {
                return described
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code())
                    .with_group_state(str_bytes("Dead"));
            }
            if version >= 3 && request.include_authorized_operations {
                described.authorized_operations =
                    access.operations(ResourceType::Group, &id.0, super::GROUP_OPERATIONS);
            }
            match broker.groups.describe(&id.0) {
                Some(view) => described
                    .with_group_state(str_bytes(view.state))
                    .with_protocol_type(str_bytes(&view.protocol_type))
                    .with_protocol_data(str_bytes(&view.protocol))
                    .with_members(
                        view.members
                            .iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_group_instance_id(if version >= 4 {
                                        m.instance_id.as_deref().map(str_bytes)
                                    } else {
                                        None
                                    })
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(m.metadata.clone())
                                    .with_member_assignment(m.assignment.clone())
                            })
                            .collect(),
                    ),
                None => {
                    let has_offsets = broker.groups.offsets.has_offsets(&id.0);
                    described
                        .with_group_state(str_bytes(if has_offsets { "Empty" } else { "Dead" }))
                        .with_protocol_type(str_bytes(if has_offsets { "consumer" } else { "" }))
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
