//! ListGroups: groups with members, and groups that only have committed offsets (Empty).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use std::collections::BTreeMap;

use super::access::Access;
use super::str_bytes;
use crate::acls::Operation;

pub fn handle(access: &Access, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let broker = access.broker;
    // DESCRIBE on the cluster lists every group; otherwise the groups one may describe.
    let everything = access.cluster(Operation::Describe);
    let mut groups: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    for id in broker.groups.offsets.groups() {
        groups.insert(id, ("consumer".to_string(), "Empty"));
    }
    for id in broker.groups.active_groups() {
        if let Some(view) = broker.groups.describe(&id) {
            groups.insert(id, (view.protocol_type, view.state));
        }
    }
    let listed = groups
        .into_iter()
        .filter(|(id, _)| everything || access.group(Operation::Describe, id))
        .filter(|(_, (_, state))| {
            version < 4
                || request.states_filter.is_empty()
                || request.states_filter.iter().any(|s| s.as_str() == *state)
        })
        .map(|(id, (protocol_type, state))| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type));
            if version >= 4 {
                g.group_state = str_bytes(state);
            }
            g
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
