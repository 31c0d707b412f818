//! `/v1/topics` and `/v1/topics/{topic}`: partitions, log start and end, bytes on disk,
//! config overrides.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use crate::broker::Broker;
use crate::topics::Topic;

#[derive(Serialize)]
pub struct PartitionView {
    pub partition: i32,
    pub log_start: i64,
    pub log_end: i64,
    pub bytes: u64,
    pub segments: usize,
    /// Compacted topics: the cleaner's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleaner: Option<crate::log::CleanerStats>,
}

#[derive(Serialize)]
pub struct TopicView {
    pub name: String,
    pub internal: bool,
    pub partitions: i32,
    /// Records currently held (log end − log start, summed; gaps of compacted or
    /// mirrored logs make it an upper bound).
    pub records: i64,
    pub log_end_total: i64,
    pub bytes: u64,
    pub configs: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partition_details: Vec<PartitionView>,
}

pub fn view(topic: &Topic, details: bool) -> TopicView {
    let partitions: Vec<PartitionView> = topic
        .partitions()
        .iter()
        .map(|p| {
            let log = p.lock();
            PartitionView {
                partition: p.index,
                log_start: log.log_start_offset(),
                log_end: log.high_watermark(),
                bytes: log.size_bytes(),
                segments: log.segment_count(),
                cleaner: log
                    .config()
                    .cleanup
                    .compacts()
                    .then(|| log.cleaner_stats(crate::log::now_ms())),
            }
        })
        .collect();
    TopicView {
        name: topic.name.clone(),
        internal: crate::topics::is_internal(&topic.name),
        partitions: topic.partition_count(),
        records: partitions.iter().map(|p| p.log_end - p.log_start).sum(),
        log_end_total: partitions.iter().map(|p| p.log_end).sum(),
        bytes: partitions.iter().map(|p| p.bytes).sum(),
        configs: topic.overrides(),
        partition_details: if details { partitions } else { Vec::new() },
    }
}

pub async fn list(State(broker): State<Arc<Broker>>) -> Json<serde_json::Value> {
    let mut topics: Vec<TopicView> = broker
        .topics
        .list()
        .iter()
        .map(|t| view(t, false))
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Json(serde_json::json!({ "topics": topics }))
}

pub async fn detail(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
) -> Result<Json<TopicView>, ApiError> {
    let topic = broker
        .topics
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no topic named {name:?}")))?;
    Ok(Json(view(&topic, true)))
}
