//! `tern groups`: list, describe (with lag), reset offsets and delete consumer groups,
//! like kafka-consumer-groups.sh.

use std::collections::BTreeMap;

use bytes::Buf;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::cluster::Cluster;
use super::consume::list_offsets;
use crate::client::{check_partition, error_name, ClientError};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub async fn list(cluster: &mut Cluster) -> Result<(), ClientError> {
    let (response, _) = cluster
        .controller()
        .await?
        .send(&ListGroupsRequest::default(), 0..=4)
        .await?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka(format!(
            "ListGroups failed: {}",
            error_name(response.error_code)
        )));
    }
    let mut ids: Vec<String> = response
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    ids.sort();
    for id in ids {
        println!("{id}");
    }
    Ok(())
}

/// Committed offsets of `group`: (topic, partition) -> offset.
async fn committed(
    cluster: &mut Cluster,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(None);
    let (response, _) = cluster.controller().await?.send(&request, 2..=7).await?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka(format!(
            "OffsetFetch failed: {}",
            error_name(response.error_code)
        )));
    }
    let mut out = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Group state and, per assigned partition, (member id, host, client id).
async fn members(
    cluster: &mut Cluster,
    group: &str,
) -> Result<(String, BTreeMap<(String, i32), (String, String, String)>), ClientError> {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
    let (response, _) = cluster.controller().await?.send(&request, 0..=5).await?;
    let mut owners = BTreeMap::new();
    let mut state = "Dead".to_string();
    for g in &response.groups {
        if g.error_code != 0 {
            return Err(ClientError::Kafka(format!(
                "DescribeGroups failed: {}",
                error_name(g.error_code)
            )));
        }
        state = g.group_state.to_string();
        for m in &g.members {
            let mut bytes = m.member_assignment.clone();
            if bytes.remaining() < 2 {
                continue;
            }
            let version = bytes.get_i16().clamp(0, 3);
            let Ok(assignment) = ConsumerProtocolAssignment::decode(&mut bytes, version) else {
                continue;
            };
            for tp in assignment.assigned_partitions {
                for p in tp.partitions {
                    owners.insert(
                        (tp.topic.0.to_string(), p),
                        (
                            m.member_id.to_string(),
                            m.client_host.to_string(),
                            m.client_id.to_string(),
                        ),
                    );
                }
            }
        }
    }
    Ok((state, owners))
}

pub async fn describe(cluster: &mut Cluster, group: &str) -> Result<(), ClientError> {
    let committed = committed(cluster, group).await?;
    let (state, owners) = members(cluster, group).await?;
    let mut rows: BTreeMap<(String, i32), (Option<i64>, i64)> = BTreeMap::new();
    let topics: std::collections::BTreeSet<String> = committed
        .keys()
        .chain(owners.keys())
        .map(|(t, _)| t.clone())
        .collect();
    for topic in topics {
        cluster.refresh(Some(std::slice::from_ref(&topic))).await?;
        let partitions = cluster.partitions(&topic)?;
        let ends = list_offsets(cluster, &topic, &partitions, -1).await?;
        for (p, end) in ends {
            let key = (topic.clone(), p);
            if committed.contains_key(&key) || owners.contains_key(&key) {
                rows.insert(key.clone(), (committed.get(&key).copied(), end));
            }
        }
    }
    println!("Consumer group '{group}' is {state}.\n");
    println!(
        "{:<20} {:<20} {:>9} {:>14} {:>14} {:>8} {:<40} {:<16} CLIENT-ID",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST"
    );
    for ((topic, partition), (current, end)) in rows {
        let (member, host, client) = owners
            .get(&(topic.clone(), partition))
            .cloned()
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        let (current_text, lag) = match current {
            Some(c) => (c.to_string(), (end - c).max(0).to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{group:<20} {topic:<20} {partition:>9} {current_text:>14} {end:>14} {lag:>8} {member:<40} {host:<16} {client}"
        );
    }
    Ok(())
}

/// Where `tern groups reset-offsets` moves a group.
#[derive(Debug, Clone, Copy)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Datetime(i64),
    ShiftBy(i64),
}

pub async fn reset_offsets(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    to: ResetTo,
    execute: bool,
) -> Result<(), ClientError> {
    let (state, _) = members(cluster, group).await?;
    if state != "Empty" && state != "Dead" {
        return Err(ClientError::Kafka(format!(
            "group '{group}' is {state}: stop its consumers first (offsets of an active group cannot be reset)"
        )));
    }
    cluster.refresh(Some(&[topic.to_string()])).await?;
    let partitions = cluster.partitions(topic)?;
    let earliest = list_offsets(cluster, topic, &partitions, -2).await?;
    let latest = list_offsets(cluster, topic, &partitions, -1).await?;
    let current = committed(cluster, group).await?;
    let by_time = match to {
        ResetTo::Datetime(ms) => Some(list_offsets(cluster, topic, &partitions, ms).await?),
        _ => None,
    };
    let mut targets = BTreeMap::new();
    for (p, _) in &partitions {
        let (low, high) = (earliest[p], latest[p]);
        let target = match to {
            ResetTo::Earliest => low,
            ResetTo::Latest => high,
            ResetTo::Offset(o) => o,
            ResetTo::Datetime(_) => by_time
                .as_ref()
                .and_then(|m| m.get(p).copied())
                .filter(|o| *o >= 0)
                .unwrap_or(high),
            ResetTo::ShiftBy(n) => {
                current
                    .get(&(topic.to_string(), *p))
                    .copied()
                    .unwrap_or(low)
                    + n
            }
        };
        targets.insert(*p, target.clamp(low, high));
    }
    println!(
        "{:<20} {:<20} {:>9} {:>14}",
        "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"
    );
    for (p, o) in &targets {
        println!("{group:<20} {topic:<20} {p:>9} {o:>14}");
    }
    if !execute {
        println!("\n(dry run: add --execute to commit these offsets)");
        return Ok(());
    }
    // Generation -1 and no member id: an administrative commit (the group has no members).
    let request = offset_commit_request(GroupId(s(group)), -1, s(""), topic, &targets);
    let (response, _) = cluster.controller().await?.send(&request, 2..=7).await?;
    for t in &response.topics {
        for p in &t.partitions {
            check_partition(p.partition_index, p.error_code)?;
        }
    }
    println!("\nOffsets of group '{group}' reset.");
    Ok(())
}

/// OffsetCommit of `offsets` (partition → next offset to read) of one topic.
pub fn offset_commit_request(
    group: GroupId,
    generation: i32,
    member_id: StrBytes,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group)
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member_id)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )])
}

pub async fn delete(cluster: &mut Cluster, group: &str) -> Result<(), ClientError> {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
    let (response, _) = cluster.controller().await?.send(&request, 0..=2).await?;
    for r in &response.results {
        if r.error_code != 0 {
            return Err(ClientError::Kafka(format!(
                "deleting group '{group}' failed: {}",
                error_name(r.error_code)
            )));
        }
    }
    println!("Deleted consumer group '{group}'.");
    Ok(())
}
