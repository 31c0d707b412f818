//! Topic configuration with Kafka's names (`retention.ms`, `segment.bytes`, ...).
//!
//! A topic stores only its overrides; the effective value of a key is the override, else
//! the broker-wide default from `[topic_defaults]`, else the built-in default below. Every
//! value is validated by the same table whether it comes from the TOML file, CreateTopics,
//! AlterConfigs or IncrementalAlterConfigs.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::log::batch::Codec;
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

/// One supported topic config key.
pub struct ConfigKey {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
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
fn long_at_most(v: &str, max: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n <= max => Ok(()),
        _ => Err(format!("must be <= {max}")),
    }
}
fn v_compression(v: &str) -> Result<(), String> {
    match v {
        "lz4" | "producer" | "gzip" | "snappy" | "zstd" | "uncompressed" => Ok(()),
        _ => Err("expected one of producer, lz4, gzip, snappy, zstd, uncompressed".to_string()),
    }
}
fn v_cleanup(v: &str) -> Result<(), String> {
    match v {
        "delete" => Ok(()),
        "compact" | "compact,delete" | "delete,compact" => {
            Err("log compaction is not implemented yet; use `delete`".to_string())
        }
        _ => Err("expected `delete`".to_string()),
    }
}
fn v_timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" => Ok(()),
        "LogAppendTime" => {
            Err("tern keeps producer timestamps; only `CreateTime` is supported".to_string())
        }
        _ => Err("expected `CreateTime`".to_string()),
    }
}
fn v_min_isr(v: &str) -> Result<(), String> {
    match v.trim() {
        "1" => Ok(()),
        _ => Err("a single-node broker has exactly one in-sync replica; use 1".to_string()),
    }
}

/// Every topic config tern understands, with Kafka's defaults adapted to an SD card.
pub static KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        default: "delete",
        doc: "delete: old segments are removed by retention",
        validate: v_cleanup,
    },
    ConfigKey {
        name: "compression.type",
        default: "lz4",
        doc: "lz4 (tern's default): uncompressed batches are lz4-compressed on append, \
              compressed ones kept as sent; producer: stored as sent; gzip, snappy, zstd, \
              uncompressed: every batch is stored in that codec (recompressed on append, as \
              in Kafka)",
        validate: v_compression,
    },
    ConfigKey {
        name: "retention.ms",
        default: "604800000",
        doc: "delete sealed segments whose newest record is older than this (-1: never)",
        validate: v_retention,
    },
    ConfigKey {
        name: "retention.bytes",
        default: "-1",
        doc: "per-partition size limit; oldest sealed segments go first (-1: none)",
        validate: v_retention,
    },
    ConfigKey {
        name: "segment.bytes",
        default: "67108864",
        doc: "roll to a new segment at this size",
        validate: v_segment_bytes,
    },
    ConfigKey {
        name: "segment.ms",
        default: "604800000",
        doc: "roll to a new segment after this long",
        validate: v_positive_long,
    },
    ConfigKey {
        name: "max.message.bytes",
        default: "1048588",
        doc: "largest record batch accepted",
        validate: v_non_negative_int,
    },
    ConfigKey {
        name: "index.interval.bytes",
        default: "4096",
        doc: "bytes between offset-index entries",
        validate: v_non_negative_int,
    },
    ConfigKey {
        name: "message.timestamp.type",
        default: "CreateTime",
        doc: "records keep the producer's timestamp",
        validate: v_timestamp_type,
    },
    ConfigKey {
        name: "min.insync.replicas",
        default: "1",
        doc: "single node: always 1",
        validate: v_min_isr,
    },
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
        LogConfig {
            segment_bytes: long("segment.bytes", base.segment_bytes as i64).max(1024) as u64,
            segment_ms: long("segment.ms", base.segment_ms),
            retention_ms: long("retention.ms", base.retention_ms),
            retention_bytes: long("retention.bytes", base.retention_bytes),
            index_interval_bytes: long("index.interval.bytes", 4096).max(0) as u64,
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
