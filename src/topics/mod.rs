//! Topics and their partitions: creation, deletion, partition growth, configs, and the
//! on-disk registry (`<data_dir>/topics/<name>/topic.toml` plus one directory per
//! partition).

pub mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};
use uuid::Uuid;

use crate::log::{self, checkpoint, Log, LogError, Partition};
pub use config::{ConfigError, Defaults, Source};

/// Kafka's limit on topic name length.
pub const MAX_NAME_LEN: usize = 249;
/// Partitions a single topic may have on an edge gateway.
pub const MAX_PARTITIONS: i32 = 1024;

#[derive(Debug, Error)]
pub enum TopicError {
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    #[error("unknown topic `{0}`")]
    Unknown(String),
    #[error("invalid topic name `{0}`: use 1-249 characters of [a-zA-Z0-9._-], not `.` or `..`")]
    InvalidName(String),
    #[error("invalid partition count {0}: must be 1..={MAX_PARTITIONS}")]
    InvalidPartitions(i32),
    #[error("topic `{topic}` has {current} partitions; partitions can only be added (asked for {asked})")]
    CannotShrink {
        topic: String,
        current: i32,
        asked: i32,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("topic metadata I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("topic `{0}` is a mirror of an edge's topic: only the mirror writes it")]
    Mirrored(String),
    #[error("topic metadata in {path} is unreadable: {reason}")]
    BadMetadata { path: String, reason: String },
}

fn io_err(path: &Path, source: std::io::Error) -> TopicError {
    TopicError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TopicError::InvalidName(name.to_string()))
    }
}

/// What `topic.toml` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    dir: PathBuf,
    overrides: RwLock<BTreeMap<String, String>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(index)
            .ok()
            .and_then(|i| partitions.get(i).cloned())
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len() as i32
    }

    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.overrides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn save(&self) -> Result<(), TopicError> {
        let file = TopicFile {
            id: self.id.to_string(),
            partitions: self.partition_count(),
            configs: self.overrides(),
        };
        let text = toml::to_string(&file).map_err(|e| TopicError::BadMetadata {
            path: self.dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let tmp = self.dir.join("topic.toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, self.dir.join("topic.toml")).map_err(|e| io_err(&self.dir, e))?;
        checkpoint::sync_dir(&self.dir).map_err(|e| io_err(&self.dir, e))
    }
}

/// The registry of all topics on this broker.
pub struct Topics {
    root: PathBuf,
    defaults: Defaults,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Names of topics being created (their files are written without the registry lock).
    creating: Mutex<BTreeSet<String>>,
}

/// A name reserved while its topic is created; released when dropped.
struct Reservation<'a> {
    topics: &'a Topics,
    name: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.topics
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// The configs of tern's internal topics: compacted, never deleted by retention, stored
/// exactly as written, rolled at 8 MiB so that the cleaner reaches old commits soon.
fn internal_configs() -> BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact"),
        ("compression.type", "producer"),
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "8388608"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// tern's own topics (`__consumer_offsets`): clients may read them, never write them.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

fn refuse_internal(name: &str) -> Result<(), TopicError> {
    if is_internal(name) {
        return Err(TopicError::InvalidName(format!(
            "{name} is an internal topic managed by tern"
        )));
    }
    Ok(())
}

impl Topics {
    /// Loads every topic under `<data_dir>/topics`, recovering each partition's log.
    pub fn open(data_dir: &Path, defaults: Defaults) -> Result<Topics, TopicError> {
        let root = data_dir.join("topics");
        checkpoint::create_dir_durably(&root).map_err(|e| io_err(&root, e))?;
        let topics = Topics {
            root: root.clone(),
            defaults,
            topics: RwLock::new(BTreeMap::new()),
            creating: Mutex::new(BTreeSet::new()),
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&root).map_err(|e| io_err(&root, e))? {
            let entry = entry.map_err(|e| io_err(&root, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.path().join("topic.toml").is_file() && validate_name(&name).is_ok() {
                names.push(name);
            } else if name.ends_with(".deleting") {
                // A delete that crashed half-way: finish it.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        for name in names {
            let topic = topics.load(&name)?;
            topics.write().insert(name, topic);
        }
        Ok(topics)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn load(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let dir = self.root.join(name);
        let path = dir.join("topic.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let bad = |reason: String| TopicError::BadMetadata {
            path: path.display().to_string(),
            reason,
        };
        let file: TopicFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let id = Uuid::parse_str(&file.id).map_err(|e| bad(e.to_string()))?;
        for (k, v) in &file.configs {
            if let Err(e) = config::validate(k, v) {
                warn!(topic = name, error = %e, "stored topic config is no longer valid; the default applies");
            }
        }
        let log_config = self.defaults.log_config(&file.configs);
        let now = log::now_ms();
        let mut partitions = Vec::new();
        for p in 0..file.partitions {
            let pdir = dir.join(p.to_string());
            let (log, report) = Log::open(&pdir, log_config.clone(), now)?;
            if report.truncated_bytes > 0 || report.quarantined > 0 {
                warn!(
                    topic = name,
                    partition = p,
                    truncated = report.truncated_bytes,
                    quarantined = report.quarantined,
                    "partition recovered with repairs"
                );
            }
            partitions.push(Arc::new(Partition::new(name, p, log)));
        }
        Ok(Arc::new(Topic {
            name: name.to_string(),
            id,
            dir,
            overrides: RwLock::new(file.configs),
            partitions: RwLock::new(partitions),
        }))
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.read().values().cloned().collect()
    }

    /// Validates a creation request without creating anything (CreateTopics validate_only).
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        validate_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        for (k, v) in configs {
            config::validate(k, v)?;
        }
        if self.read().contains_key(name) {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        Ok(())
    }

    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::InvalidName(format!(
                "{name} (names starting with `__` are reserved for tern's internal topics)"
            )));
        }
        self.create_unchecked(name, partitions, configs)
    }

    /// Creates one of tern's internal topics (`__consumer_offsets`): one partition,
    /// compacted (the latest value of every key stays), stored exactly as written.
    pub fn create_internal(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.create_unchecked(name, 1, internal_configs())
    }

    /// Brings an internal topic created by an older tern to today's configs (before log
    /// compaction existed, `__consumer_offsets` was not compacted). Returns whether it did.
    pub fn upgrade_internal(&self, name: &str) -> Result<bool, TopicError> {
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut next = topic.overrides();
        let before = next.clone();
        next.extend(internal_configs());
        if next == before {
            return Ok(false);
        }
        let log_config = self.defaults.log_config(&next);
        *topic.overrides.write().unwrap_or_else(|p| p.into_inner()) = next;
        for partition in topic.partitions() {
            partition.lock().set_config(log_config.clone());
        }
        topic.save()?;
        info!(
            topic = name,
            "internal topic configs upgraded (now compacted)"
        );
        Ok(true)
    }

    /// Creates the topic's files without holding the registry lock (the fsyncs of a
    /// topic with many partitions must not stall every other request): the name is
    /// reserved first, so a concurrent create of the same name fails cleanly.
    fn create_unchecked(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        self.check_create(name, partitions, &configs)?;
        let _reservation = self.reserve(name)?;
        let dir = self.root.join(name);
        let created = (|| {
            if dir.exists() {
                // Left by a creation that crashed before its topic.toml was written.
                std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            }
            checkpoint::create_dir_durably(&dir).map_err(|e| io_err(&dir, e))?;
            let log_config = self.defaults.log_config(&configs);
            let now = log::now_ms();
            let mut logs = Vec::new();
            for p in 0..partitions {
                let (log, _) = Log::open(&dir.join(p.to_string()), log_config.clone(), now)?;
                logs.push(Arc::new(Partition::new(name, p, log)));
            }
            let topic = Arc::new(Topic {
                name: name.to_string(),
                id: Uuid::new_v4(),
                dir: dir.clone(),
                overrides: RwLock::new(configs),
                partitions: RwLock::new(logs),
            });
            topic.save()?;
            checkpoint::sync_dir(&self.root).map_err(|e| io_err(&self.root, e))?;
            Ok::<_, TopicError>(topic)
        })();
        let topic = match created {
            Ok(topic) => topic,
            Err(e) => {
                // Nothing was announced yet: remove what was written.
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        self.write().insert(name.to_string(), Arc::clone(&topic));
        info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Reserves a topic name for a creation in progress.
    fn reserve(&self, name: &str) -> Result<Reservation<'_>, TopicError> {
        let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        if self.read().contains_key(name) || !creating.insert(name.to_string()) {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        Ok(Reservation {
            topics: self,
            name: name.to_string(),
        })
    }

    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        refuse_internal(name)?;
        let topic = self
            .write()
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        // Rename first so that a crash mid-delete never leaves a half topic that loads.
        let doomed = self
            .root
            .join(format!("{}.{}.deleting", name, topic.id.simple()));
        std::fs::rename(&topic.dir, &doomed).map_err(|e| io_err(&topic.dir, e))?;
        checkpoint::sync_dir(&self.root).map_err(|e| io_err(&self.root, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| io_err(&doomed, e))?;
        info!(topic = name, "topic deleted");
        Ok(())
    }

    /// CreatePartitions: grows a topic to `total` partitions.
    pub fn grow(&self, name: &str, total: i32, validate_only: bool) -> Result<(), TopicError> {
        refuse_internal(name)?;
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partition_count();
        if total <= current {
            return Err(TopicError::CannotShrink {
                topic: name.to_string(),
                current,
                asked: total,
            });
        }
        if total > MAX_PARTITIONS {
            return Err(TopicError::InvalidPartitions(total));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = self.defaults.log_config(&topic.overrides());
        let now = log::now_ms();
        {
            let mut partitions = topic.partitions.write().unwrap_or_else(|p| p.into_inner());
            for p in current..total {
                let (log, _) = Log::open(&topic.dir.join(p.to_string()), log_config.clone(), now)?;
                partitions.push(Arc::new(Partition::new(name, p, log)));
            }
        }
        topic.save()?;
        info!(topic = name, from = current, to = total, "partitions added");
        Ok(())
    }

    /// Replaces or edits a topic's overrides (validated first) and applies them to its logs.
    pub fn alter_configs(
        &self,
        name: &str,
        edit: impl FnOnce(&mut BTreeMap<String, String>),
        validate_only: bool,
    ) -> Result<(), TopicError> {
        refuse_internal(name)?;
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut next = topic.overrides();
        edit(&mut next);
        for (k, v) in &next {
            config::validate(k, v)?;
        }
        if validate_only {
            return Ok(());
        }
        let log_config = self.defaults.log_config(&next);
        *topic.overrides.write().unwrap_or_else(|p| p.into_inner()) = next;
        for partition in topic.partitions() {
            partition.lock().set_config(log_config.clone());
        }
        topic.save()
    }

    /// Flushes every partition and records clean recovery points (graceful shutdown).
    pub fn close(&self) {
        for topic in self.list() {
            for partition in topic.partitions() {
                if let Err(e) = partition.lock().close() {
                    warn!(topic = %topic.name, partition = partition.index, error = %e, "close failed");
                }
            }
        }
    }
}
