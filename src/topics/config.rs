//! Topic configuration with Kafka's names (`retention.ms`, `segment.bytes`, ...).
//!
//! A topic stores only its overrides; the effective value of a key is the override, else
//! the broker-wide default from `[topic_defaults]`, else the built-in default below. Every
//! value is validated by the same table whether it comes from the TOML file, CreateTopics,
//! AlterConfigs or IncrementalAlterConfigs.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::log::batch::Codec;
use crate::log::compaction::{Cleanup, CompactionConfig};
use crate::log::{CompressionPolicy, LogConfig};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown topic config `{0}`")]
    UnknownKey(String),
    #[error("invalid value `{value}` for topic config `{key}`: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

/// Kafka's ConfigType numbering (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One Kafka topic config key as tern handles it.
pub struct ConfigKey {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: ConfigType,
    pub doc: &'static str,
    /// `None`: tern applies the key. `Some(why)`: accepted, stored and described so that
    /// Kafka tooling works, but without effect in tern, for the reason given.
    pub inert: Option<&'static str>,
    validate: fn(&str) -> Result<(), String>,
}

impl ConfigKey {
    /// The documentation DescribeConfigs returns, with what tern does with the key.
    pub fn documentation(&self) -> String {
        match self.inert {
            None => self.doc.to_string(),
            Some(why) => format!("{} (accepted; no effect in tern: {why})", self.doc),
        }
    }
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("must be >= {min}")),
        Err(_) => Err("must be an integer".to_string()),
    }
}

fn v_retention(v: &str) -> Result<(), String> {
    long_at_least(-1)(v)
}
fn v_local_retention(v: &str) -> Result<(), String> {
    long_at_least(-2)(v)
}
fn v_non_negative_long(v: &str) -> Result<(), String> {
    long_at_least(0)(v)
}
fn v_positive_long(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}
fn v_segment_bytes(v: &str) -> Result<(), String> {
    long_at_least(1024)(v)?;
    long_at_most(v, i32::MAX as i64)
}
fn v_non_negative_int(v: &str) -> Result<(), String> {
    long_at_least(0)(v)?;
    long_at_most(v, i32::MAX as i64)
}
fn v_positive_int(v: &str) -> Result<(), String> {
    long_at_least(1)(v)?;
    long_at_most(v, i32::MAX as i64)
}
fn v_int(v: &str) -> Result<(), String> {
    long_at_least(i32::MIN as i64)(v)?;
    long_at_most(v, i32::MAX as i64)
}
fn long_at_most(v: &str, max: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n <= max => Ok(()),
        _ => Err(format!("must be <= {max}")),
    }
}
fn v_bool(v: &str) -> Result<(), String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "false" => Ok(()),
        _ => Err("expected true or false".to_string()),
    }
}
fn v_ratio(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
        _ => Err("expected a number between 0 and 1".to_string()),
    }
}
fn v_any(_: &str) -> Result<(), String> {
    Ok(())
}
fn v_compression(v: &str) -> Result<(), String> {
    match v {
        "lz4" | "producer" | "gzip" | "snappy" | "zstd" | "uncompressed" => Ok(()),
        _ => Err("expected one of producer, lz4, gzip, snappy, zstd, uncompressed".to_string()),
    }
}
fn v_cleanup(v: &str) -> Result<(), String> {
    Cleanup::parse(v)
        .map(|_| ())
        .ok_or_else(|| "expected delete, compact, or compact,delete".to_string())
}
fn v_timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" | "LogAppendTime" => Ok(()),
        _ => Err("expected CreateTime or LogAppendTime".to_string()),
    }
}
fn v_min_isr(v: &str) -> Result<(), String> {
    v_positive_int(v)
}

const SINGLE_NODE: &str = "tern is a single node without replication";
const ALWAYS_FSYNCED: &str = "tern fsyncs every acknowledged write before answering";
const NO_TIERED: &str = "tern has no tiered storage";

macro_rules! key {
    ($name:expr, $default:expr, $kind:ident, $validate:expr, $doc:expr) => {
        ConfigKey {
            name: $name,
            default: $default,
            kind: ConfigType::$kind,
            doc: $doc,
            inert: None,
            validate: $validate,
        }
    };
    ($name:expr, $default:expr, $kind:ident, $validate:expr, $doc:expr, inert: $why:expr) => {
        ConfigKey {
            name: $name,
            default: $default,
            kind: ConfigType::$kind,
            doc: $doc,
            inert: Some($why),
            validate: $validate,
        }
    };
}

/// Every Kafka topic config (Kafka 3.9 names), with Kafka's defaults adapted to an SD
/// card where tern applies the key. Keys tern does not act on are accepted and reported
/// (Kafka tools set them routinely) and say so in their documentation.
pub static KEYS: &[ConfigKey] = &[
    key!(
        "cleanup.policy",
        "delete",
        List,
        v_cleanup,
        "delete: old segments are removed by retention; compact: the latest record of every \
         key is kept (the cleaner rewrites sealed segments, offsets never change); \
         compact,delete: both"
    ),
    key!(
        "compression.type",
        "lz4",
        String,
        v_compression,
        "lz4 (tern's default): uncompressed batches are lz4-compressed on append, compressed \
         ones kept as sent; producer: stored as sent; gzip, snappy, zstd, uncompressed: \
         every batch is stored in that codec (recompressed on append, as in Kafka)"
    ),
    key!("compression.gzip.level", "-1", Int, v_int, "gzip level when tern compresses",
        inert: "tern compresses gzip at the default level"),
    key!("compression.lz4.level", "9", Int, v_int, "lz4 level when tern compresses",
        inert: "tern's lz4 encoder has one level"),
    key!("compression.zstd.level", "3", Int, v_int, "zstd level when tern compresses",
        inert: "tern's zstd encoder has one level (fastest)"),
    key!(
        "delete.retention.ms",
        "86400000",
        Long,
        v_non_negative_long,
        "compacted topics: a tombstone (null value) is kept this long after its batch's \
         timestamp, then removed by the next cleaning"
    ),
    key!("file.delete.delay.ms", "60000", Long, v_non_negative_long,
        "delay before a deleted segment's file is removed",
        inert: "tern removes segment files at once (readers hold open handles)"),
    key!("flush.messages", "9223372036854775807", Long, v_positive_long,
        "fsync after this many messages", inert: ALWAYS_FSYNCED),
    key!("flush.ms", "9223372036854775807", Long, v_non_negative_long,
        "fsync after this long", inert: ALWAYS_FSYNCED),
    key!("follower.replication.throttled.replicas", "", List, v_any,
        "replicas throttled as followers", inert: SINGLE_NODE),
    key!(
        "index.interval.bytes",
        "4096",
        Int,
        v_non_negative_int,
        "bytes between offset-index entries"
    ),
    key!("leader.replication.throttled.replicas", "", List, v_any,
        "replicas throttled as leaders", inert: SINGLE_NODE),
    key!("local.retention.bytes", "-2", Long, v_local_retention,
        "local retention with tiered storage", inert: NO_TIERED),
    key!("local.retention.ms", "-2", Long, v_local_retention,
        "local retention with tiered storage", inert: NO_TIERED),
    key!(
        "max.compaction.lag.ms",
        "9223372036854775807",
        Long,
        v_positive_long,
        "compacted topics: dirty records older than this are cleaned whatever the dirty ratio"
    ),
    key!(
        "max.message.bytes",
        "1048588",
        Int,
        v_non_negative_int,
        "largest record batch accepted"
    ),
    key!("message.downconversion.enable", "true", Boolean, v_bool,
        "down-convert batches for old consumers",
        inert: "tern serves record batch v2 only (Kafka 0.11+ clients)"),
    key!("message.format.version", "3.0-IV1", String, v_any,
        "message format version", inert: "tern stores record batch v2 only"),
    key!("message.timestamp.after.max.ms", "9223372036854775807", Long, v_non_negative_long,
        "largest allowed timestamp lead over the broker clock",
        inert: "gateway clocks are often wrong; tern accepts every timestamp"),
    key!("message.timestamp.before.max.ms", "9223372036854775807", Long, v_non_negative_long,
        "largest allowed timestamp lag behind the broker clock",
        inert: "gateway clocks are often wrong; tern accepts every timestamp"),
    key!("message.timestamp.difference.max.ms", "9223372036854775807", Long,
        v_non_negative_long, "largest allowed timestamp difference",
        inert: "gateway clocks are often wrong; tern accepts every timestamp"),
    key!(
        "message.timestamp.type",
        "CreateTime",
        String,
        v_timestamp_type,
        "CreateTime: records keep the producer's timestamp; LogAppendTime: the broker's \
         clock at append"
    ),
    key!(
        "min.cleanable.dirty.ratio",
        "0.5",
        Double,
        v_ratio,
        "compacted topics: clean once the not yet cleaned bytes are this share of the \
         cleanable (sealed) bytes"
    ),
    key!(
        "min.compaction.lag.ms",
        "0",
        Long,
        v_non_negative_long,
        "compacted topics: a segment whose newest record is younger than this is not cleaned"
    ),
    key!(
        "min.insync.replicas",
        "1",
        Int,
        v_min_isr,
        "replicas that must hold a write for acks=all; tern is one replica, so a value \
         above 1 refuses acks=all produces with NOT_ENOUGH_REPLICAS, as Kafka would"
    ),
    key!("preallocate", "false", Boolean, v_bool, "preallocate segment files",
        inert: "tern grows segment files as it writes"),
    key!("remote.log.copy.disable", "false", Boolean, v_bool,
        "stop copying to tiered storage", inert: NO_TIERED),
    key!("remote.log.delete.on.disable", "false", Boolean, v_bool,
        "delete tiered data when disabled", inert: NO_TIERED),
    key!("remote.storage.enable", "false", Boolean, v_bool, "tiered storage",
        inert: NO_TIERED),
    key!(
        "retention.bytes",
        "-1",
        Long,
        v_retention,
        "per-partition size limit; oldest sealed segments go first (-1: none)"
    ),
    key!(
        "retention.ms",
        "604800000",
        Long,
        v_retention,
        "delete sealed segments whose newest record is older than this (-1: never)"
    ),
    key!(
        "segment.bytes",
        "67108864",
        Int,
        v_segment_bytes,
        "roll to a new segment at this size"
    ),
    key!("segment.index.bytes", "10485760", Int, v_positive_int,
        "maximum size of a segment's offset index",
        inert: "tern's sparse index grows with the segment"),
    key!("segment.jitter.ms", "0", Long, v_non_negative_long,
        "random jitter subtracted from segment.ms", inert: "segments roll exactly at segment.ms"),
    key!(
        "segment.ms",
        "604800000",
        Long,
        v_positive_long,
        "roll to a new segment after this long"
    ),
    key!("unclean.leader.election.enable", "false", Boolean, v_bool,
        "elect out-of-sync replicas", inert: SINGLE_NODE),
];

pub fn key(name: &str) -> Option<&'static ConfigKey> {
    KEYS.iter().find(|k| k.name == name)
}

/// Checks one key/value pair.
pub fn validate(name: &str, value: &str) -> Result<(), ConfigError> {
    let key = key(name).ok_or_else(|| ConfigError::UnknownKey(name.to_string()))?;
    (key.validate)(value).map_err(|reason| ConfigError::InvalidValue {
        key: name.to_string(),
        value: value.to_string(),
        reason,
    })
}

/// Where an effective value came from (DescribeConfigs' `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Topic,
    Broker,
    Default,
}

/// Broker-wide topic defaults (`[topic_defaults]`), already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults(pub BTreeMap<String, String>);

impl Defaults {
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Defaults, ConfigError> {
        for (k, v) in &pairs {
            validate(k, v)?;
        }
        Ok(Defaults(pairs))
    }

    /// Effective value and source of `name` for a topic with `overrides`.
    pub fn resolve<'a>(
        &'a self,
        overrides: &'a BTreeMap<String, String>,
        name: &str,
    ) -> (&'a str, Source) {
        if let Some(v) = overrides.get(name) {
            return (v, Source::Topic);
        }
        if let Some(v) = self.0.get(name) {
            return (v, Source::Broker);
        }
        (key(name).map(|k| k.default).unwrap_or(""), Source::Default)
    }

    /// The log settings of a topic.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let long = |name: &str, fallback: i64| {
            self.resolve(overrides, name)
                .0
                .trim()
                .parse::<i64>()
                .unwrap_or(fallback)
        };
        let base = LogConfig::default();
        let defaults = CompactionConfig::default();
        LogConfig {
            cleanup: Cleanup::parse(self.resolve(overrides, "cleanup.policy").0)
                .unwrap_or(Cleanup::Delete),
            compaction: CompactionConfig {
                min_cleanable_dirty_ratio: self
                    .resolve(overrides, "min.cleanable.dirty.ratio")
                    .0
                    .trim()
                    .parse::<f64>()
                    .unwrap_or(defaults.min_cleanable_dirty_ratio),
                min_compaction_lag_ms: long("min.compaction.lag.ms", 0).max(0),
                max_compaction_lag_ms: long("max.compaction.lag.ms", i64::MAX).max(1),
                delete_retention_ms: long("delete.retention.ms", defaults.delete_retention_ms)
                    .max(0),
            },
            segment_bytes: long("segment.bytes", base.segment_bytes as i64).max(1024) as u64,
            segment_ms: long("segment.ms", base.segment_ms),
            retention_ms: long("retention.ms", base.retention_ms),
            retention_bytes: long("retention.bytes", base.retention_bytes),
            index_interval_bytes: long("index.interval.bytes", 4096).max(0) as u64,
            log_append_time: self.resolve(overrides, "message.timestamp.type").0 == "LogAppendTime",
            min_insync_replicas: long("min.insync.replicas", 1).max(1) as i32,
            compression: match self.resolve(overrides, "compression.type").0 {
                "producer" => CompressionPolicy::Producer,
                "gzip" => CompressionPolicy::Exactly(Codec::Gzip),
                "snappy" => CompressionPolicy::Exactly(Codec::Snappy),
                "zstd" => CompressionPolicy::Exactly(Codec::Zstd),
                "uncompressed" => CompressionPolicy::Exactly(Codec::None),
                _ => CompressionPolicy::Lz4,
            },
            max_message_bytes: long("max.message.bytes", base.max_message_bytes as i64).max(0)
                as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_invalid_values_name_the_key() {
        assert_eq!(
            validate("retention.msec", "1"),
            Err(ConfigError::UnknownKey("retention.msec".into()))
        );
        let err = validate("retention.ms", "soon").expect_err("not a number");
        assert!(err.to_string().contains("retention.ms"));
        assert!(validate("compression.type", "gzip").is_ok());
        assert!(validate("compression.type", "brotli").is_err());
        // Every Kafka topic config is accepted (librdkafka's 0081_admin sets these).
        assert!(validate("delete.retention.ms", "1000").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "0.1").is_ok());
        assert!(validate("preallocate", "yes").is_err());
        assert!(key("flush.ms").is_some_and(|k| k.documentation().contains("no effect")));
        assert!(validate("segment.bytes", "1048576").is_ok());
    }

    #[test]
    fn overrides_beat_broker_defaults_beat_builtins() {
        let defaults = Defaults::new([("retention.ms".to_string(), "1000".to_string())].into())
            .expect("valid");
        let overrides: BTreeMap<String, String> =
            [("segment.bytes".to_string(), "2048".to_string())].into();
        assert_eq!(
            defaults.resolve(&overrides, "retention.ms"),
            ("1000", Source::Broker)
        );
        assert_eq!(
            defaults.resolve(&overrides, "segment.bytes"),
            ("2048", Source::Topic)
        );
        assert_eq!(
            defaults.resolve(&overrides, "cleanup.policy"),
            ("delete", Source::Default)
        );
        let log = defaults.log_config(&overrides);
        assert_eq!(log.segment_bytes, 2048);
        assert_eq!(log.retention_ms, 1000);
    }
}
