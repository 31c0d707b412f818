//! Produce: validate and append each partition's batches in request order, then answer
//! once group commit has fsynced them (acks=1/all), or not at all (acks=0).

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use tracing::warn;

use super::access::Access;
use super::{str_bytes, Reply};
use crate::acls::Operation;
use crate::kafka::errors::{log_error_code, topic_error_code};
use crate::log::{self, Partition};

/// A partition whose append must become durable before the response goes out.
struct PendingAck {
    topic: usize,
    partition: usize,
    log: Arc<Partition>,
    upto: i64,
    generation: u64,
}

fn partition_error(
    index: i32,
    code: ResponseError,
    message: Option<String>,
) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(|m| str_bytes(&m)))
}

pub fn handle(access: &Access, request: ProduceRequest, version: i16) -> Reply {
    let broker = access.broker;
    let acks = request.acks;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    let reject_all = if request.transactional_id.is_some() {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported by tern",
        ))
    } else if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            "acks must be -1, 0 or 1",
        ))
    } else {
        None
    };
    let now = log::now_ms();
    for (t, topic_data) in request.topic_data.iter().enumerate() {
        let name: &str = &topic_data.name.0;
        let denied = reject_all.is_none() && !access.topic(Operation::Write, name);
        let topic = if reject_all.is_some() || denied {
            Ok(None)
        } else if crate::topics::is_internal(name) {
            Err(crate::topics::TopicError::InvalidName(format!(
                "{name} is an internal topic: clients may read it, only tern writes it"
            )))
        } else if broker.mirror_namespaces.owns(name) {
            Err(crate::topics::TopicError::Mirrored(name.to_string()))
        } else {
            access.topic_or_auto_create(name)
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for (p, data) in topic_data.partition_data.iter().enumerate() {
            let response = match (&reject_all, &topic) {
                (Some((code, why)), _) => partition_error(data.index, *code, Some(why.to_string())),
                (None, _) if denied => partition_error(
                    data.index,
                    ResponseError::TopicAuthorizationFailed,
                    Some(format!("not authorized to write to topic {name}")),
                ),
                (None, Err(e)) => {
                    partition_error(data.index, topic_error_code(e), Some(e.to_string()))
                }
                (None, Ok(None)) => {
                    partition_error(data.index, ResponseError::UnknownTopicOrPartition, None)
                }
                (None, Ok(Some(topic))) => match topic.partition(data.index) {
                    None => {
                        partition_error(data.index, ResponseError::UnknownTopicOrPartition, None)
                    }
                    Some(log) => {
                        let records = data.records.as_deref().unwrap_or(&[]);
                        let (min_isr, append_time) = {
                            let l = log.lock();
                            (l.config().min_insync_replicas, l.config().log_append_time)
                        };
                        let appended = if acks == -1 && min_isr > 1 {
                            // One replica can never satisfy min.insync.replicas > 1.
                            Err(crate::log::LogError::NotEnoughReplicas(min_isr))
                        } else {
                            broker.append(name, &log, records, now)
                        };
                        match appended {
                            Ok(appended) => {
                                pending.push(PendingAck {
                                    topic: t,
                                    partition: p,
                                    log,
                                    upto: appended.upto,
                                    generation: appended.generation,
                                });
                                PartitionProduceResponse::default()
                                    .with_index(data.index)
                                    .with_base_offset(appended.base_offset)
                                    .with_log_append_time_ms(if append_time { now } else { -1 })
                                    .with_log_start_offset(appended.log_start)
                            }
                            Err(e) => {
                                if e.is_disk_full() {
                                    warn!(topic = %name, partition = data.index, error = %e, "produce refused: disk full");
                                }
                                partition_error(data.index, log_error_code(&e), Some(e.to_string()))
                            }
                        }
                    }
                },
            };
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name.clone())
                .with_partition_responses(partitions),
        );
    }
    let mut response = ProduceResponse::default().with_responses(responses);
    fit_to_version(&mut response, version);
    let group_commit = &broker.group_commit;
    if acks == 0 {
        // No response and no promise, but the data must still become visible to consumers.
        for ack in pending {
            group_commit.request_sync(ack.log, ack.upto);
        }
        return Reply::Nothing;
    }
    // Registered now, in request order: the fsync does not wait for anyone to poll.
    let waits: Vec<_> = pending
        .into_iter()
        .map(|ack| {
            let wait = group_commit.register(ack.log, ack.upto, ack.generation);
            (ack.topic, ack.partition, wait)
        })
        .collect();
    Reply::awaiting(version, async move {
        for (topic, partition, wait) in waits {
            if let Err(e) = wait.wait().await {
                let slot = &mut response.responses[topic].partition_responses[partition];
                *slot = partition_error(slot.index, log_error_code(&e), Some(e.to_string()));
            }
        }
        fit_to_version(&mut response, version);
        response
    })
}

/// Clears the fields that `version` does not have (encoding refuses non-default values).
fn fit_to_version(response: &mut ProduceResponse, version: i16) {
    for topic in &mut response.responses {
        for p in &mut topic.partition_responses {
            if version < 5 {
                p.log_start_offset = -1;
            }
            if version < 8 {
                p.error_message = None;
            }
        }
    }
}
