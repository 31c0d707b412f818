//! `tern consume`: print records of a topic (like kafka-console-consumer), from the
//! beginning, the end, or an offset; with keys, headers and offsets on request.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::cluster::{by_leader, leader_of, Cluster};
use crate::client::{check_partition, ClientError};
use crate::log::records;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    Latest,
    Offset(i64),
}

pub struct ConsumeOptions {
    pub topic: String,
    pub partition: Option<i32>,
    pub start: Start,
    pub max_messages: Option<u64>,
    /// Stop after this long without a new record.
    pub idle_timeout: Option<Duration>,
    pub print_key: bool,
    pub print_headers: bool,
    pub print_offset: bool,
    pub separator: String,
}

/// ListOffsets for `partitions` at `timestamp` (-1 latest, -2 earliest, or a time in ms).
pub async fn list_offsets(
    cluster: &mut Cluster,
    topic: &str,
    partitions: &[(i32, i32)],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    let mut out = BTreeMap::new();
    for (leader, ps) in by_leader(partitions, |_| true) {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    ps.iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let (response, _) = cluster.node(leader).await?.send(&request, 1..=5).await?;
        for t in &response.topics {
            for p in &t.partitions {
                check_partition(p.partition_index, p.error_code)?;
                out.insert(p.partition_index, p.offset);
            }
        }
    }
    Ok(out)
}

pub async fn run(cluster: &mut Cluster, options: ConsumeOptions) -> Result<u64, ClientError> {
    let all = cluster.partitions(&options.topic)?;
    let partitions: Vec<(i32, i32)> = match options.partition {
        Some(p) => vec![(
            p,
            leader_of(&all, p).ok_or_else(|| ClientError::Kafka(format!("no partition {p}")))?,
        )],
        None => all,
    };
    let mut positions = match options.start {
        Start::Beginning => list_offsets(cluster, &options.topic, &partitions, -2).await?,
        Start::Latest => list_offsets(cluster, &options.topic, &partitions, -1).await?,
        Start::Offset(o) => partitions.iter().map(|(p, _)| (*p, o)).collect(),
    };
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    loop {
        let mut by_leader: BTreeMap<i32, Vec<FetchPartition>> = BTreeMap::new();
        for (p, leader) in &partitions {
            by_leader.entry(*leader).or_default().push(
                FetchPartition::default()
                    .with_partition(*p)
                    .with_fetch_offset(positions[p])
                    .with_partition_max_bytes(4 << 20),
            );
        }
        let mut got_any = false;
        for (leader, fetch_partitions) in by_leader {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(16 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(options.topic.clone())))
                    .with_partitions(fetch_partitions)]);
            let (response, _) = cluster.node(leader).await?.send(&request, 4..=11).await?;
            for t in &response.responses {
                for p in &t.partitions {
                    if p.error_code == ResponseError::OffsetOutOfRange.code() {
                        eprintln!(
                            "partition {}: offset {} out of range, resetting to {}",
                            p.partition_index,
                            positions[&p.partition_index],
                            p.log_start_offset.max(0)
                        );
                        positions.insert(p.partition_index, p.log_start_offset.max(0));
                        continue;
                    }
                    check_partition(p.partition_index, p.error_code)?;
                    let Some(bytes) = &p.records else { continue };
                    let decoded =
                        records::decode(bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
                    let position = positions[&p.partition_index];
                    let mut out = stdout.lock();
                    for record in decoded
                        .iter()
                        .filter(|r| r.offset >= position && !r.control)
                    {
                        print_record(&mut out, &options, p.partition_index, record)?;
                        positions.insert(p.partition_index, record.offset + 1);
                        printed += 1;
                        got_any = true;
                        if options.max_messages.is_some_and(|max| printed >= max) {
                            out.flush()?;
                            return Ok(printed);
                        }
                    }
                    out.flush()?;
                }
            }
        }
        if got_any {
            last_record = Instant::now();
        } else if options
            .idle_timeout
            .is_some_and(|t| last_record.elapsed() >= t)
        {
            return Ok(printed);
        }
    }
}

fn print_record(
    out: &mut impl Write,
    options: &ConsumeOptions,
    partition: i32,
    record: &kafka_protocol::records::Record,
) -> std::io::Result<()> {
    if options.print_offset {
        write!(out, "{partition}:{}{}", record.offset, options.separator)?;
    }
    if options.print_headers {
        let headers: Vec<String> = record
            .headers
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}:{}",
                    k.as_str(),
                    v.as_ref()
                        .map(|v| String::from_utf8_lossy(v).to_string())
                        .unwrap_or_default()
                )
            })
            .collect();
        write!(out, "{}{}", headers.join(","), options.separator)?;
    }
    if options.print_key {
        out.write_all(record.key.as_deref().unwrap_or(b"null"))?;
        out.write_all(options.separator.as_bytes())?;
    }
    out.write_all(record.value.as_deref().unwrap_or(b"null"))?;
    out.write_all(b"\n")
}
