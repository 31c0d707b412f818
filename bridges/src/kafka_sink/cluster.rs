//! The external cluster as the sink sees it: its brokers, which broker leads each target
//! partition, and one connection per broker, opened when first needed. Metadata is
//! refreshed whenever a broker says it no longer leads a partition or a connection fails.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use thiserror::Error;

use crate::kafka_client::{ClientError, KafkaClient, Security};

/// Largest response the sink accepts: produce and metadata answers are small, and a
/// broken broker must not make a gateway allocate more.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("no answer from {0} within the request timeout")]
    Timeout(String),
    #[error("{context}: {error:?} ({code})")]
    Kafka {
        context: String,
        code: i16,
        error: Option<ResponseError>,
    },
    #[error("no bootstrap server answered: {0}")]
    NoBroker(String),
}

impl SinkError {
    pub fn kafka(context: impl Into<String>, code: i16) -> SinkError {
        SinkError::Kafka {
            context: context.into(),
            code,
            error: ResponseError::try_from_code(code),
        }
    }
}

/// One target topic: its error (if the cluster has none) and each partition's leader.
#[derive(Debug, Clone, Default)]
pub struct TopicLeaders {
    pub error: i16,
    /// Indexed by partition; -1 while a partition has no leader.
    pub leaders: Vec<i32>,
}

pub struct Cluster {
    bootstrap: Vec<String>,
    client_id: String,
    security: Security,
    timeout: Duration,
    brokers: HashMap<i32, String>,
    connections: HashMap<i32, KafkaClient>,
    controller: i32,
    pub topics: HashMap<String, TopicLeaders>,
}

impl Cluster {
    pub fn new(
        bootstrap: Vec<String>,
        client_id: String,
        security: Security,
        timeout: Duration,
    ) -> Cluster {
        Cluster {
            bootstrap,
            client_id,
            security,
            timeout,
            brokers: HashMap::new(),
            connections: HashMap::new(),
            controller: -1,
            topics: HashMap::new(),
        }
    }

    async fn open(&self, addr: &str) -> Result<KafkaClient, SinkError> {
        let connect = KafkaClient::connect_secure(addr, &self.client_id, &self.security);
        let mut client = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| SinkError::Timeout(addr.to_string()))??;
        client.set_max_response_bytes(MAX_RESPONSE_BYTES);
        Ok(client)
    }

    /// Sends one request on the connection to `node` (opened if needed); a failed or
    /// timed-out connection is dropped so the next request opens a new one.
    pub async fn request<R: Request>(
        &mut self,
        node: i32,
        request: &R,
        versions: RangeInclusive<i16>,
    ) -> Result<R::Response, SinkError> {
        if !self.connections.contains_key(&node) {
            let addr = self.brokers.get(&node).cloned().ok_or_else(|| {
                SinkError::NoBroker(format!("broker {node} is not in the metadata"))
            })?;
            let client = self.open(&addr).await?;
            self.connections.insert(node, client);
        }
        let timeout = self.timeout;
        let Some(client) = self.connections.get_mut(&node) else {
            return Err(SinkError::NoBroker(format!("broker {node}")));
        };
        match tokio::time::timeout(timeout, client.send(request, versions)).await {
            Ok(Ok((response, _))) => Ok(response),
            Ok(Err(e)) => {
                self.connections.remove(&node);
                Err(e.into())
            }
            Err(_) => {
                self.connections.remove(&node);
                Err(SinkError::Timeout(format!("broker {node}")))
            }
        }
    }

    /// Forgets every connection (after an error whose cause is unclear).
    pub fn disconnect(&mut self) {
        self.connections.clear();
    }

    /// Any broker for requests that any broker answers: the controller if known, else
    /// the first one the metadata named.
    pub fn any_broker(&self) -> Option<i32> {
        if self.brokers.contains_key(&self.controller) {
            return Some(self.controller);
        }
        self.brokers.keys().min().copied()
    }

    /// Refreshes brokers and the leaders of `topics`: asks a known broker, else the
    /// bootstrap servers in turn.
    pub async fn refresh(&mut self, topics: &[String]) -> Result<(), SinkError> {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let mut response = None;
        let mut failures = Vec::new();
        let known: Vec<i32> = self.connections.keys().copied().collect();
        for node in known {
            match self.request(node, &request, 1..=9).await {
                Ok(r) => {
                    response = Some(r);
                    break;
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if response.is_none() {
            for addr in self.bootstrap.clone() {
                let attempt = async {
                    let mut client = self.open(&addr).await?;
                    let sent = tokio::time::timeout(self.timeout, client.send(&request, 1..=9));
                    let (r, _) = sent.await.map_err(|_| SinkError::Timeout(addr.clone()))??;
                    Ok::<MetadataResponse, SinkError>(r)
                };
                match attempt.await {
                    Ok(r) => {
                        response = Some(r);
                        break;
                    }
                    Err(e) => failures.push(format!("{addr}: {e}")),
                }
            }
        }
        let response = response.ok_or_else(|| SinkError::NoBroker(failures.join("; ")))?;
        self.apply(response);
        Ok(())
    }

    fn apply(&mut self, response: MetadataResponse) {
        let brokers: HashMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        // A broker that moved (or vanished) gets a new connection.
        self.connections.retain(|node, _| {
            brokers.contains_key(node) && self.brokers.get(node) == brokers.get(node)
        });
        self.brokers = brokers;
        self.controller = response.controller_id.0;
        for topic in response.topics {
            let Some(name) = topic.name else { continue };
            let count = topic
                .partitions
                .iter()
                .map(|p| p.partition_index + 1)
                .max()
                .unwrap_or(0)
                .max(0) as usize;
            let mut leaders = vec![-1; count];
            for p in &topic.partitions {
                if let Ok(i) = usize::try_from(p.partition_index) {
                    if i < count {
                        leaders[i] = if p.error_code == 0 || p.leader_id.0 >= 0 {
                            p.leader_id.0
                        } else {
                            -1
                        };
                    }
                }
            }
            self.topics.insert(
                name.0.to_string(),
                TopicLeaders {
                    error: topic.error_code,
                    leaders,
                },
            );
        }
    }

    /// The leader of a target partition, if the metadata knows one.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let leaders = &self.topics.get(topic)?.leaders;
        let leader = *leaders.get(usize::try_from(partition).ok()?)?;
        (leader >= 0 && self.brokers.contains_key(&leader)).then_some(leader)
    }

    /// Partition count of a target topic (0 if it does not exist).
    pub fn partition_count(&self, topic: &str) -> usize {
        self.topics
            .get(topic)
            .filter(|t| t.error == 0)
            .map_or(0, |t| t.leaders.len())
    }
}
