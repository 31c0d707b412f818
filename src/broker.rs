//! The broker's shared state: configuration, topics, the group-commit handle and metrics.
//! Every connection handler and background task holds an `Arc<Broker>`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::log::GroupCommit;
use crate::metrics::Metrics;
use crate::topics::{Topic, TopicError, Topics};

pub struct Broker {
    pub config: Config,
    pub topics: Topics,
    pub group_commit: GroupCommit,
    pub metrics: Arc<Metrics>,
    advertised_host: String,
    advertised_port: i32,
}

impl Broker {
    /// Opens the data directory (recovering every partition) and starts group commit.
    /// Must run inside a tokio runtime. `kafka_port` is the port actually bound (the
    /// configured one may be 0 in tests).
    pub fn open(
        config: Config,
        kafka_port: u16,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Broker>, tokio::task::JoinHandle<()>), TopicError> {
        let defaults = config
            .topic_defaults()
            .map_err(|e| TopicError::BadMetadata {
                path: "config [topic_defaults]".to_string(),
                reason: e.to_string(),
            })?;
        let topics = Topics::open(&config.broker.data_dir, defaults)?;
        let (group_commit, task) = GroupCommit::start(
            Duration::from_millis(config.storage.flush_linger_ms),
            Arc::clone(&metrics),
        );
        let listen_host = config
            .kafka_listen()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "127.0.0.1".to_string());
        let advertised_host = if config.kafka.advertised_host.is_empty() {
            if listen_host == "0.0.0.0" || listen_host == "::" {
                "127.0.0.1".to_string()
            } else {
                listen_host
            }
        } else {
            config.kafka.advertised_host.clone()
        };
        let advertised_port = if config.kafka.advertised_port == 0 {
            kafka_port
        } else {
            config.kafka.advertised_port
        } as i32;
        Ok((
            Arc::new(Broker {
                config,
                topics,
                group_commit,
                metrics,
                advertised_host,
                advertised_port,
            }),
            task,
        ))
    }

    pub fn node_id(&self) -> i32 {
        self.config.broker.node_id
    }

    pub fn advertised(&self) -> (&str, i32) {
        (&self.advertised_host, self.advertised_port)
    }

    /// The topic, created with the broker defaults if it is missing and auto-creation is on.
    pub fn topic_or_auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(Some(topic));
        }
        if !self.config.kafka.auto_create_topics {
            return Ok(None);
        }
        match self.topics.create(
            name,
            self.config.kafka.default_partitions,
            Default::default(),
        ) {
            Ok(topic) => Ok(Some(topic)),
            Err(TopicError::AlreadyExists(_)) => Ok(self.topics.get(name)),
            Err(e) => Err(e),
        }
    }

    /// Refreshes the per-partition gauges and returns the Prometheus text.
    pub fn render_metrics(&self) -> String {
        self.metrics.clear_partitions();
        let mut total = 0u64;
        for topic in self.topics.list() {
            for partition in topic.partitions() {
                let log = partition.lock();
                let size = log.size_bytes();
                total += size;
                self.metrics.set_partition(
                    &topic.name,
                    partition.index,
                    size,
                    log.segment_count(),
                    log.log_start_offset(),
                    log.high_watermark(),
                );
            }
        }
        self.metrics.stored_bytes.set(total);
        self.metrics.render()
    }
}
