//! `tern topics`: create, list, describe, alter and delete topics (like kafka-topics.sh).

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use crate::client::{error_name, ClientError};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn check(code: i16, message: Option<&StrBytes>, what: &str) -> Result<(), ClientError> {
    if code == 0 {
        return Ok(());
    }
    let detail = message
        .map(|m| format!(": {}", m.as_str()))
        .unwrap_or_default();
    Err(ClientError::Kafka(format!(
        "{what} failed with {}{detail}",
        error_name(code)
    )))
}

/// Parses `key=value` pairs from `--config`.
pub fn parse_configs(pairs: &[String]) -> Result<Vec<(String, String)>, ClientError> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| ClientError::Kafka(format!("--config expects key=value, got `{p}`")))
        })
        .collect()
}

pub async fn create(
    cluster: &mut Cluster,
    name: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> Result<(), ClientError> {
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(30_000);
    let (response, _) = cluster.controller().await?.send(&request, 2..=4).await?;
    for t in &response.topics {
        check(
            t.error_code,
            t.error_message.as_ref(),
            &format!("creating topic `{name}`"),
        )?;
    }
    println!("Created topic {name}.");
    Ok(())
}

pub async fn list(cluster: &mut Cluster) -> Result<(), ClientError> {
    let mut names: Vec<String> = cluster
        .metadata
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

/// Prints the topic like kafka-topics --describe. Returns whether it is compacted.
pub async fn describe(cluster: &mut Cluster, name: &str) -> Result<bool, ClientError> {
    let partitions = cluster.partitions(name)?;
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configuration_keys(None)]);
    let (response, _) = cluster
        .node(partitions.first().map(|p| p.1).unwrap_or(-1))
        .await?
        .send(&request, 1..=2)
        .await?;
    let mut configs = Vec::new();
    let mut compacted = false;
    for r in &response.results {
        check(r.error_code, r.error_message.as_ref(), "describing configs")?;
        for c in &r.configs {
            if c.name.as_str() == "cleanup.policy" {
                compacted = c
                    .value
                    .as_ref()
                    .is_some_and(|v| v.as_str().contains("compact"));
            }
            configs.push(format!(
                "{}={}",
                c.name.as_str(),
                c.value.as_ref().map(|v| v.as_str()).unwrap_or("")
            ));
        }
    }
    println!(
        "Topic: {name}\tPartitionCount: {}\tConfigs: {}",
        partitions.len(),
        configs.join(",")
    );
    let t = cluster
        .metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name));
    for p in t.map(|t| t.partitions.clone()).unwrap_or_default() {
        let list = |ids: &[kafka_protocol::messages::BrokerId]| {
            ids.iter()
                .map(|b| b.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "\tTopic: {name}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            p.partition_index,
            p.leader_id.0,
            list(&p.replica_nodes),
            list(&p.isr_nodes)
        );
    }
    Ok(compacted)
}

/// The cleaner's figures per partition, read from the HTTP port (`/v1/topics/{name}`).
/// Best effort: an unreachable port is reported, not an error of `describe`.
pub async fn print_cleaner(http: &str, name: &str) {
    // Kafka topic names ([a-zA-Z0-9._-]) need no escaping in a path.
    let path = format!("/v1/topics/{name}");
    let body = match super::http::get(http, &path).await {
        Ok(body) => body,
        Err(e) => {
            println!(
                "\t(cleaner figures unavailable: {e:#}; pass --http with the tern's http.listen)"
            );
            return;
        }
    };
    let Ok(view) = serde_json::from_slice::<serde_json::Value>(&body) else {
        println!("\t(cleaner figures unavailable: not a topic view)");
        return;
    };
    let partitions = view["partition_details"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in partitions {
        let c = &p["cleaner"];
        let last = c["last_clean_ms"]
            .as_i64()
            .map_or("never (since start)".to_string(), |ms| {
                let ago = (crate::log::now_ms() - ms).max(0) / 1000;
                format!("{ago} s ago")
            });
        println!(
            "\tPartition: {}\tDirtyRatio: {:.2}\tDirtyBytes: {}\tCleanBytes: {}\tLastCleaned: {}\tReclaimedBytes: {}",
            p["partition"],
            c["dirty_ratio"].as_f64().unwrap_or(0.0),
            c["dirty_bytes"],
            c["clean_bytes"],
            last,
            c["bytes_reclaimed"],
        );
    }
}

pub async fn alter(
    cluster: &mut Cluster,
    name: &str,
    partitions: Option<i32>,
    set: &[(String, String)],
    delete: &[String],
) -> Result<(), ClientError> {
    if let Some(count) = partitions {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(s(name)))
                .with_count(count)])
            .with_timeout_ms(30_000);
        let (response, _) = cluster.controller().await?.send(&request, 0..=1).await?;
        for r in &response.results {
            check(r.error_code, r.error_message.as_ref(), "adding partitions")?;
        }
        println!("Topic {name} now has {count} partitions.");
    }
    if !set.is_empty() || !delete.is_empty() {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(s(k))
                    .with_config_operation(0)
                    .with_value(Some(s(v)))
            })
            .collect();
        configs.extend(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(1)
        }));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(name))
                .with_configs(configs),
        ]);
        let (response, _) = cluster.controller().await?.send(&request, 0..=0).await?;
        for r in &response.responses {
            check(r.error_code, r.error_message.as_ref(), "altering configs")?;
        }
        println!("Updated configs of topic {name}.");
    }
    Ok(())
}

pub async fn delete(cluster: &mut Cluster, name: &str) -> Result<(), ClientError> {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(s(name))])
        .with_timeout_ms(30_000);
    let (response, _) = cluster.controller().await?.send(&request, 1..=5).await?;
    for r in &response.responses {
        check(
            r.error_code,
            r.error_message.as_ref(),
            &format!("deleting topic `{name}`"),
        )?;
    }
    println!("Deleted topic {name}.");
    Ok(())
}
