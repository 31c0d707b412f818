//! The broker's shared state: configuration, topics, the group-commit handle and metrics.
//! Every connection handler and background task holds an `Arc<Broker>`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::groups::coordinator::Coordinator;
use crate::groups::offsets::CommittedOffsets;
use crate::groups::sled_import;
use crate::groups::state::GroupLimits;
use crate::log::{batch, GroupCommit, LogError, Partition};
use crate::metrics::Metrics;
use crate::producer_ids::ProducerIds;
use crate::topics::{Topic, TopicError, Topics};

/// Produce payloads up to this size are appended on the async worker itself (see `append`).
const INLINE_APPEND_BYTES: usize = 64 * 1024;

/// Where an append landed, and what to wait for before acknowledging it.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub base_offset: i64,
    /// One past the last offset written.
    pub upto: i64,
    pub log_start: i64,
    /// The log generation of the write (see `GroupCommit::wait_durable`).
    pub generation: u64,
}

pub struct Broker {
    pub config: Config,
    pub topics: Topics,
    pub group_commit: GroupCommit,
    pub metrics: Arc<Metrics>,
    pub groups: Arc<Coordinator>,
    pub producer_ids: ProducerIds,
    /// Memory for Fetch responses being prepared or queued, in KiB permits
    /// (`kafka.max_queued_response_bytes`).
    pub response_budget: Arc<tokio::sync::Semaphore>,
    /// What `/v1/mirror` and `tern mirror status` show.
    pub mirror_status: tern_mirror::status::SharedStatus,
    /// On an edge, its `[mirror]` selection: retention deletes mirrored segments first.
    pub mirror_edge: std::sync::OnceLock<tern_mirror::config::Edge>,
    /// On a hub: topic prefixes of mirrored edges, closed to Kafka producers.
    pub mirror_namespaces: crate::mirror_namespaces::MirrorNamespaces,
    /// SASL users of the Kafka listeners (`<data_dir>/users.json`).
    pub users: crate::users::Users,
    /// ACLs of the Kafka listeners (`[kafka.authorization]`, `<data_dir>/acls.json`).
    pub authorizer: crate::acls::Authorizer,
    /// Consumer lag windows and their evaluation (`[lag]`).
    pub lag: crate::lag::LagTracker,
    /// The running `[[sinks.kafka]]` (what `/v1/sinks` shows, what they forwarded).
    pub sinks: std::sync::Mutex<Vec<crate::sink_log::RunningSink>>,
    /// When this broker started (uptime in `/v1/broker`).
    pub started: std::time::Instant,
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
        let offsets = CommittedOffsets::open(
            &topics,
            group_commit.clone(),
            metrics.offset_commits.clone(),
        )?;
        sled_import::import(
            &config.broker.data_dir,
            &offsets,
            config.groups.offsets_cache_bytes,
        );
        offsets
            .clamp_to_logs(&topics)
            .map_err(|e| TopicError::BadMetadata {
                path: "__consumer_offsets".to_string(),
                reason: e.to_string(),
            })?;
        let max_producer_id = topics
            .list()
            .iter()
            .flat_map(|t| t.partitions())
            .filter_map(|p| p.lock().max_producer_id())
            .max();
        let producer_ids =
            ProducerIds::open(&config.broker.data_dir, max_producer_id).map_err(|e| {
                TopicError::Io {
                    path: config.broker.data_dir.display().to_string(),
                    source: e,
                }
            })?;
        let groups = Coordinator::new(
            GroupLimits {
                min_session_timeout_ms: config.groups.min_session_timeout_ms,
                max_session_timeout_ms: config.groups.max_session_timeout_ms,
                initial_rebalance_delay_ms: config.groups.initial_rebalance_delay_ms,
                max_size: config.groups.max_group_size,
            },
            config.groups.max_groups,
            offsets,
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
        let authorizer = crate::acls::Authorizer::open(
            config.kafka.authorization.clone(),
            &config.broker.data_dir,
            metrics.authorization_denied.clone(),
        )
        .map_err(|e| TopicError::BadMetadata {
            path: crate::acls::store::acls_path(&config.broker.data_dir)
                .display()
                .to_string(),
            reason: e.to_string(),
        })?;
        let response_budget = Arc::new(tokio::sync::Semaphore::new(
            (config.kafka.max_queued_response_bytes / 1024).max(1024) as usize,
        ));
        Ok((
            Arc::new(Broker {
                response_budget,
                mirror_status: Default::default(),
                mirror_edge: std::sync::OnceLock::new(),
                sinks: std::sync::Mutex::new(Vec::new()),
                users: crate::users::Users::open(&config.broker.data_dir),
                authorizer,
                lag: crate::lag::LagTracker::new(config.lag.clone()),
                started: std::time::Instant::now(),
                mirror_namespaces: crate::mirror_namespaces::MirrorNamespaces::load(
                    &config.broker.data_dir,
                ),
                config,
                topics,
                group_commit,
                metrics,
                groups,
                producer_ids,
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
        // Creating a topic writes and fsyncs files: keep other tasks off this worker.
        let created = tokio::task::block_in_place(|| {
            self.topics.create(
                name,
                self.config.kafka.default_partitions,
                Default::default(),
            )
        });
        match created {
            Ok(topic) => Ok(Some(topic)),
            Err(TopicError::AlreadyExists(_)) => Ok(self.topics.get(name)),
            Err(e) => Err(e),
        }
    }

    /// Appends the batches of one partition (the path Produce, the MQTT bridge and the
    /// offset store share). Durability is the caller's to wait for, with
    /// [`Appended::upto`] and [`Appended::generation`].
    pub fn append(
        &self,
        topic: &str,
        log: &Partition,
        records: &[u8],
        now: i64,
    ) -> Result<Appended, LogError> {
        let batches = batch::split_batches(records)?;
        if batches.is_empty() {
            return Err(LogError::Corrupt(batch::BatchError::Truncated {
                have: 0,
                need: batch::HEADER_LEN,
            }));
        }
        // A small append is a write into the page cache and takes microseconds: done here.
        // A big one compresses and copies megabytes: the runtime moves other tasks away
        // first (which costs a thread hand-off, worth it only then).
        let info = if records.len() <= INLINE_APPEND_BYTES {
            log.append(&batches, now)?
        } else {
            tokio::task::block_in_place(|| log.append(&batches, now))?
        };
        self.metrics
            .record_produce(topic, info.records, info.stored_bytes);
        let log_start = log.lock().log_start_offset();
        Ok(Appended {
            base_offset: info.base_offset,
            upto: info.last_offset + 1,
            log_start,
            generation: info.generation,
        })
    }

    /// Refreshes the per-partition gauges and returns the Prometheus text.
    pub fn render_metrics(&self) -> String {
        self.metrics.clear_partitions();
        let mut total = 0u64;
        let mut fenced = 0i64;
        let mut quarantined = 0i64;
        for topic in self.topics.list() {
            for partition in topic.partitions() {
                let log = partition.lock();
                fenced += log.fenced().is_some() as i64;
                quarantined += log.quarantined() as i64;
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
                if log.config().cleanup.compacts() {
                    let stats = log.cleaner_stats(crate::log::now_ms());
                    self.metrics
                        .set_cleaner(&topic.name, partition.index, &stats);
                }
            }
        }
        self.metrics.stored_bytes.set(total);
        self.metrics.clear_groups();
        let now = crate::log::now_ms();
        for group in self.groups.offsets.groups() {
            if let Some(lag) = self.lag.evaluate(self, &group, now) {
                self.metrics
                    .set_group(&group, lag.total_lag, lag.max_lag, lag.status.code());
            }
        }
        self.metrics.fenced_partitions.set(fenced);
        self.metrics.quarantined_ranges.set(quarantined);
        self.metrics.render()
    }
}
