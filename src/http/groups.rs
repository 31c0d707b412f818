//! `/v1/groups` and `/v1/groups/{group}`: state, members (client id, host, assignment)
//! and, per partition, committed offset, lag and Burrow's status over the window.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use serde::Serialize;

use super::error::ApiError;
use crate::broker::Broker;
use crate::lag::{GroupLag, Status};

#[derive(Serialize)]
pub struct GroupSummary {
    group: String,
    state: String,
    members: usize,
    status: Status,
    total_lag: i64,
    partitions: usize,
}

#[derive(Serialize)]
pub struct Assigned {
    topic: String,
    partitions: Vec<i32>,
}

#[derive(Serialize)]
pub struct MemberDetail {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    /// Decoded from the consumer protocol; empty for other protocols.
    assignment: Vec<Assigned>,
}

#[derive(Serialize)]
pub struct GroupDetail {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberDetail>,
    lag: Option<GroupLag>,
}

/// A consumer-protocol assignment (version, then the assignment), or nothing.
fn assignment(bytes: &Bytes) -> Vec<Assigned> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut body = bytes.slice(2..);
    let decoded: Result<ConsumerProtocolAssignment, String> =
        crate::kafka::decode_guard::decode(&mut body, version.clamp(0, 3));
    decoded
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .map(|t| Assigned {
                    topic: t.topic.to_string(),
                    partitions: t.partitions,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn all_groups(broker: &Broker) -> BTreeSet<String> {
    let mut groups: BTreeSet<String> = broker.groups.offsets.groups().into_iter().collect();
    groups.extend(broker.groups.active_groups());
    groups
}

pub async fn list(State(broker): State<Arc<Broker>>) -> Json<serde_json::Value> {
    let now = crate::log::now_ms();
    let groups: Vec<GroupSummary> = all_groups(&broker)
        .into_iter()
        .map(|group| {
            let view = broker.groups.describe(&group);
            let lag = broker.lag.evaluate(&broker, &group, now);
            GroupSummary {
                state: view
                    .as_ref()
                    .map(|v| v.state.to_string())
                    .unwrap_or_else(|| "Empty".into()),
                members: view.as_ref().map(|v| v.members.len()).unwrap_or(0),
                status: lag.as_ref().map(|l| l.status).unwrap_or(Status::Ok),
                total_lag: lag.as_ref().map(|l| l.total_lag).unwrap_or(0),
                partitions: lag.as_ref().map(|l| l.partitions.len()).unwrap_or(0),
                group,
            }
        })
        .collect();
    Json(serde_json::json!({ "groups": groups }))
}

pub async fn detail(
    State(broker): State<Arc<Broker>>,
    Path(group): Path<String>,
) -> Result<Json<GroupDetail>, ApiError> {
    let view = broker.groups.describe(&group);
    let lag = broker.lag.evaluate(&broker, &group, crate::log::now_ms());
    if view.is_none() && lag.is_none() {
        return Err(ApiError::not_found(format!(
            "no group {group:?} (no members, no committed offsets)"
        )));
    }
    let members = view
        .as_ref()
        .map(|v| {
            v.members
                .iter()
                .map(|m| MemberDetail {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.client_host.clone(),
                    assignment: assignment(&m.assignment),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(GroupDetail {
        state: view
            .as_ref()
            .map(|v| v.state.to_string())
            .unwrap_or_else(|| "Empty".into()),
        protocol_type: view
            .as_ref()
            .map(|v| v.protocol_type.clone())
            .unwrap_or_default(),
        protocol: view
            .as_ref()
            .map(|v| v.protocol.clone())
            .unwrap_or_default(),
        members,
        lag,
        group,
    }))
}
