//! What the console (and any HTTP client) may change: create a topic, change a topic's
//! configs, delete records, reset a group's offsets. Off unless `http.actions = true`;
//! refused by the API itself when off (403), not merely hidden on the page. Each goes
//! through the same code as the Kafka APIs that do the same thing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use crate::broker::Broker;
use crate::groups::offset_records::{Committed, OffsetKey};
use crate::kafka::errors::code_and_message;
use crate::topics::TopicError;

fn allowed(broker: &Broker) -> Result<(), ApiError> {
    if broker.config.http.actions {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "actions are off: set `actions = true` in [http] to enable them".into(),
        })
    }
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn topic_error(e: TopicError) -> ApiError {
    let status = match e {
        TopicError::Unknown(_) => StatusCode::NOT_FOUND,
        TopicError::AlreadyExists(_) => StatusCode::CONFLICT,
        TopicError::Io { .. } | TopicError::Log(_) | TopicError::BadMetadata { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let (_, message) = code_and_message(&e);
    ApiError {
        status,
        message: message
            .map(|m| m.to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTopic {
    name: String,
    #[serde(default)]
    partitions: Option<i32>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// `POST /v1/topics` `{"name", "partitions", "configs"}`.
pub async fn create_topic(
    State(broker): State<Arc<Broker>>,
    json: Result<Json<NewTopic>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    allowed(&broker)?;
    let new = body(json)?;
    let partitions = new
        .partitions
        .unwrap_or(broker.config.kafka.default_partitions);
    let name = new.name.clone();
    blocking(move || {
        if broker.mirror_namespaces.owns(&new.name) {
            return Err(topic_error(TopicError::Mirrored(new.name)));
        }
        broker
            .topics
            .create(&new.name, partitions, new.configs)
            .map_err(topic_error)
    })
    .await?;
    tracing::info!(topic = %name, partitions, "topic created from the HTTP API");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "created": name, "partitions": partitions })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
}

/// `PATCH /v1/topics/{topic}/configs` `{"set": {key: value}, "delete": [key]}`.
pub async fn alter_configs(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
    json: Result<Json<ConfigChange>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    allowed(&broker)?;
    let change = body(json)?;
    blocking(move || {
        broker
            .topics
            .alter_configs(
                &name,
                |overrides| {
                    for key in &change.delete {
                        overrides.remove(key);
                    }
                    overrides.extend(change.set);
                },
                false,
            )
            .map_err(topic_error)?;
        let topic = broker
            .topics
            .get(&name)
            .ok_or_else(|| ApiError::not_found(format!("no topic named {name:?}")))?;
        Ok(Json(
            serde_json::json!({ "topic": name, "configs": topic.overrides() }),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRecords {
    partition: i32,
    /// Records before this offset go (-1: all records).
    before_offset: i64,
}

/// `POST /v1/topics/{topic}/delete-records` `{"partition", "before_offset"}`.
pub async fn delete_records(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
    json: Result<Json<DeleteRecords>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    allowed(&broker)?;
    let request = body(json)?;
    if crate::topics::is_internal(&name) {
        return Err(ApiError::bad_request(format!(
            "{name} is internal: only tern removes its records"
        )));
    }
    let partition = broker
        .topics
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no topic named {name:?}")))?
        .partition(request.partition)
        .ok_or_else(|| {
            ApiError::not_found(format!("{name:?} has no partition {}", request.partition))
        })?;
    blocking(move || {
        let start = partition
            .lock()
            .delete_records_before(request.before_offset)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Json(serde_json::json!({ "topic": name, "partition": request.partition, "log_start": start })))
    })
    .await
}

/// Where to move a group's committed offsets.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetOffsets {
    topic: String,
    /// One partition, or every partition of the topic.
    #[serde(default)]
    partition: Option<i32>,
    to: ResetTo,
}

/// `POST /v1/groups/{group}/reset-offsets` `{"topic", "partition"?, "to": "earliest" |
/// "latest" | {"offset": n} | {"timestamp": ms}}` — only while the group has no members,
/// as `kafka-consumer-groups --reset-offsets` requires.
pub async fn reset_offsets(
    State(broker): State<Arc<Broker>>,
    Path(group): Path<String>,
    json: Result<Json<ResetOffsets>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    allowed(&broker)?;
    let request = body(json)?;
    if !crate::groups::valid_group_id(&group) {
        return Err(ApiError::bad_request(format!(
            "{group:?} is not a valid group id"
        )));
    }
    if broker
        .groups
        .describe(&group)
        .is_some_and(|g| !g.members.is_empty())
    {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("group {group:?} has members: stop its consumers first"),
        });
    }
    let topic = broker
        .topics
        .get(&request.topic)
        .ok_or_else(|| ApiError::not_found(format!("no topic named {:?}", request.topic)))?;
    let partitions: Vec<i32> = match request.partition {
        Some(p) if topic.partition(p).is_none() => {
            return Err(ApiError::not_found(format!(
                "{:?} has no partition {p}",
                request.topic
            )))
        }
        Some(p) => vec![p],
        None => (0..topic.partition_count()).collect(),
    };
    let now = crate::log::now_ms();
    let pending = {
        let broker = Arc::clone(&broker);
        let topic = Arc::clone(&topic);
        let group = group.clone();
        blocking(move || {
            let mut entries = Vec::new();
            let mut moved = Vec::new();
            for p in partitions {
                let Some(partition) = topic.partition(p) else {
                    continue;
                };
                let (start, end) = partition.bounds();
                let target = match request.to {
                    ResetTo::Earliest => start,
                    ResetTo::Latest => end,
                    ResetTo::Offset(o) => o.clamp(start, end),
                    ResetTo::Timestamp(ts) => match partition.offset_for_timestamp(ts) {
                        Ok(Some((offset, _))) => offset,
                        Ok(None) => end,
                        Err(e) => return Err(ApiError::internal(e.to_string())),
                    },
                };
                moved.push(serde_json::json!({ "partition": p, "offset": target }));
                entries.push((
                    OffsetKey {
                        group: group.clone(),
                        topic: topic.name.clone(),
                        partition: p,
                    },
                    Some(Committed {
                        offset: target,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_ms: now,
                    }),
                ));
            }
            let pending = broker
                .groups
                .offsets
                .append(entries)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok((pending, moved))
        })
        .await?
    };
    let (pending, moved) = pending;
    pending
        .durable()
        .await
        .map_err(|e| ApiError::internal(format!("offsets not durable: {e}")))?;
    tracing::info!(%group, topic = %topic.name, "group offsets reset from the HTTP API");
    Ok(Json(
        serde_json::json!({ "group": group, "topic": topic.name, "partitions": moved }),
    ))
}
