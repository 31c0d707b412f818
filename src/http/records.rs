//! `/v1/topics/{topic}/records`: the record browser. One partition, from an offset or a
//! time (default: the newest `limit` records), at most `MAX_LIMIT` records and
//! `MAX_READ_BYTES` of log read per request. Keys and values are shown as JSON when they
//! parse, as text when they are UTF-8, else as base64.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::broker::Broker;

pub const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 20;
const MAX_READ_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    #[serde(default)]
    partition: i32,
    offset: Option<i64>,
    /// Milliseconds since the epoch: the first record at or after it.
    timestamp: Option<i64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct Shown {
    /// `json`, `text` or `base64`.
    encoding: &'static str,
    data: serde_json::Value,
}

#[derive(Serialize)]
pub struct RecordView {
    offset: i64,
    timestamp: i64,
    key: Option<Shown>,
    value: Option<Shown>,
    headers: Vec<(String, Option<Shown>)>,
}

#[derive(Serialize)]
pub struct RecordsPage {
    topic: String,
    partition: i32,
    log_start: i64,
    log_end: i64,
    /// Where the next page starts.
    next_offset: i64,
    records: Vec<RecordView>,
}

fn show(bytes: &[u8]) -> Shown {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
            if json.is_object() || json.is_array() {
                return Shown {
                    encoding: "json",
                    data: json,
                };
            }
        }
        return Shown {
            encoding: "text",
            data: serde_json::Value::String(text.to_string()),
        };
    }
    Shown {
        encoding: "base64",
        data: serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

pub async fn browse(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RecordsPage>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if query.offset.is_some() && query.timestamp.is_some() {
        return Err(ApiError::bad_request("give offset or timestamp, not both"));
    }
    let topic = broker
        .topics
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no topic named {name:?}")))?;
    let partition = topic.partition(query.partition).ok_or_else(|| {
        ApiError::not_found(format!(
            "topic {name:?} has no partition {} (it has {})",
            query.partition,
            topic.partition_count()
        ))
    })?;
    tokio::task::spawn_blocking(move || {
        let (log_start, log_end) = partition.bounds();
        let from = match (query.offset, query.timestamp) {
            (Some(offset), _) => {
                if offset < log_start || offset > log_end {
                    return Err(ApiError::bad_request(format!(
                        "offset {offset} is outside the log ({log_start}..{log_end})"
                    )));
                }
                offset
            }
            (None, Some(ts)) => match partition.offset_for_timestamp(ts) {
                Ok(Some((offset, _))) => offset,
                Ok(None) => log_end,
                Err(e) => return Err(ApiError::internal(e.to_string())),
            },
            (None, None) => (log_end - limit as i64).max(log_start),
        };
        let mut records = Vec::new();
        let mut at = from;
        let mut read_bytes = 0usize;
        while records.len() < limit && at < log_end && read_bytes < MAX_READ_BYTES {
            let read = partition
                .read(at, MAX_READ_BYTES - read_bytes)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            if read.bytes.is_empty() {
                break;
            }
            read_bytes += read.bytes.len();
            let mut next = at;
            for batch in crate::log::records::decode_batches(&read.bytes) {
                next = next.max(batch.header.next_offset());
                let Ok(batch_records) = batch.records else {
                    continue;
                };
                for r in batch_records.into_iter().filter(|r| r.offset >= at) {
                    if records.len() == limit {
                        break;
                    }
                    records.push(RecordView {
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key.as_deref().map(show),
                        value: r.value.as_deref().map(show),
                        headers: r
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.as_deref().map(show)))
                            .collect(),
                    });
                }
            }
            if next <= at {
                break;
            }
            at = next;
        }
        let next_offset = records.last().map(|r| r.offset + 1).unwrap_or(at);
        Ok(Json(RecordsPage {
            topic: name,
            partition: query.partition,
            log_start,
            log_end,
            next_offset,
            records,
        }))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}
