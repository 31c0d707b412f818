//! The broker configuration: one TOML file, every key defaulted, unknown keys rejected.
//! The documented default (configs/tern.toml) is embedded in the binary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::topics::{ConfigError, Defaults};

/// The documented default configuration, as shipped in configs/tern.toml.
pub const DEFAULT_TOML: &str = include_str!("../configs/tern.toml");

#[derive(Debug, Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config{}: {message}", .path.as_ref().map(|p| format!(" in {p}")).unwrap_or_default())]
    Parse {
        path: Option<String>,
        message: String,
    },
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("invalid [topic_defaults] entry: {0}")]
    TopicDefault(#[from] ConfigError),
    #[error(transparent)]
    Bridge(#[from] tern_bridges::config::ConfigError),
    #[error(transparent)]
    Mirror(#[from] tern_mirror::config::ConfigError),
    #[error(transparent)]
    Sink(#[from] tern_bridges::kafka_sink::config::SinkConfigError),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub broker: BrokerSection,
    pub kafka: KafkaSection,
    pub http: HttpSection,
    pub storage: StorageSection,
    pub groups: GroupsSection,
    pub topic_defaults: BTreeMap<String, toml::Value>,
    pub bridges: BridgesSection,
    /// `[[sinks.kafka]]`: forward topics into an external Kafka cluster.
    pub sinks: SinksSection,
    /// `[mirror]`: ship topics to a hub (this tern is an edge).
    pub mirror: Option<tern_mirror::config::EdgeConfig>,
    /// `[hub]`: receive edges' topics.
    pub hub: Option<tern_mirror::config::HubConfig>,
    /// `[lag]`: Burrow-style lag evaluation.
    pub lag: crate::lag::LagConfig,
}

/// `[[bridges.mqtt]]` tables (see configs/gateway-mqtt.toml).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgesSection {
    pub mqtt: Vec<tern_bridges::config::MqttBridgeConfig>,
}

/// `[[sinks.kafka]]` tables (see configs/kafka-sink.toml).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksSection {
    pub kafka: Vec<tern_bridges::kafka_sink::config::KafkaSinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsSection {
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
    pub initial_rebalance_delay_ms: u64,
    pub offsets_cache_bytes: u64,
    pub commit_linger_ms: u64,
    pub offsets_retention_minutes: u64,
    pub max_groups: usize,
    pub max_group_size: usize,
}

impl Default for GroupsSection {
    fn default() -> Self {
        GroupsSection {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_cache_bytes: 4 * 1024 * 1024,
            commit_linger_ms: 10,
            offsets_retention_minutes: 7 * 24 * 60,
            max_groups: 10_000,
            max_group_size: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    pub node_id: i32,
    pub data_dir: PathBuf,
    pub cluster_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    pub listen: String,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub max_request_bytes: u32,
    pub max_connections: usize,
    /// Connections one client address may hold (Kafka's max.connections.per.ip); 0: no
    /// limit beyond `max_connections`.
    pub max_connections_per_ip: usize,
    /// How long a connection to a SASL listener may take to log in before it is closed.
    pub sasl_login_timeout_ms: u64,
    pub max_in_flight_requests: usize,
    pub max_fetch_bytes: u32,
    pub max_queued_response_bytes: u64,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// More listeners, each with its own security protocol (`[[kafka.listeners]]`).
    pub listeners: Vec<crate::kafka::listener::ListenerConfig>,
    /// ACLs (`[kafka.authorization]`).
    pub authorization: crate::acls::authorizer::AuthorizationConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub listen: String,
    /// Console and API actions (create topic, change configs, delete records, reset
    /// offsets). Off: the API refuses them.
    pub actions: bool,
    /// When set, the page, the API and /metrics need it (bearer token or basic-auth
    /// password).
    pub token: String,
    /// HTTPS: PEM certificate chain and key (both, or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub max_bytes: u64,
    pub flush_linger_ms: u64,
    pub retention_check_interval_ms: u64,
    pub scrub_bytes_per_sec: u64,
    /// How often compacted partitions are checked for a cleaning pass.
    pub cleaner_interval_ms: u64,
    /// Memory for the cleaner's key map (one pass handles about this / 40 keys).
    pub cleaner_key_map_bytes: u64,
    /// The cleaner's read + write rate, bytes per second (0: no limit).
    pub cleaner_io_max_bytes_per_second: u64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            node_id: 0,
            data_dir: PathBuf::from("./data"),
            cluster_id: "tern".to_string(),
        }
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            listen: "127.0.0.1:9092".to_string(),
            advertised_host: String::new(),
            advertised_port: 0,
            max_request_bytes: 100 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_ip: 0,
            sasl_login_timeout_ms: 10_000,
            max_in_flight_requests: 64,
            max_fetch_bytes: 50 * 1024 * 1024,
            max_queued_response_bytes: 64 * 1024 * 1024,
            auto_create_topics: true,
            listeners: Vec::new(),
            default_partitions: 1,
            authorization: Default::default(),
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: "127.0.0.1:9644".to_string(),
            actions: false,
            token: String::new(),
            cert: None,
            key: None,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            max_bytes: 0,
            flush_linger_ms: 0,
            retention_check_interval_ms: 30_000,
            scrub_bytes_per_sec: 4 * 1024 * 1024,
            cleaner_interval_ms: 15_000,
            cleaner_key_map_bytes: 4 * 1024 * 1024,
            cleaner_io_max_bytes_per_second: 32 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Parses and validates TOML text. `path` only improves error messages.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigFileError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigFileError::Parse {
            path: path.map(|p| p.display().to_string()),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigFileError> {
        Config::parse(DEFAULT_TOML, None)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, Some(path))
    }

    fn validate(&self) -> Result<(), ConfigFileError> {
        let invalid = |key: &str, reason: &str| ConfigFileError::Invalid {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        self.kafka_listen()
            .map_err(|e| invalid("kafka.listen", &e))?;
        self.http_listen().map_err(|e| invalid("http.listen", &e))?;
        if self.broker.node_id < 0 {
            return Err(invalid("broker.node_id", "must be >= 0"));
        }
        if self.kafka.max_request_bytes < 1024 {
            return Err(invalid("kafka.max_request_bytes", "must be >= 1024"));
        }
        for (i, listener) in self.kafka.listeners.iter().enumerate() {
            listener
                .validate(i)
                .map_err(|(key, reason)| invalid(&key, &reason))?;
        }
        match (&self.http.cert, &self.http.key) {
            (Some(cert), Some(key)) => {
                tern_bridges::tls::server_config(cert, key, None)
                    .map_err(|e| invalid("http.cert", &e.to_string()))?;
            }
            (None, None) => {}
            _ => return Err(invalid("http.cert", "HTTPS needs both `cert` and `key`")),
        }
        self.lag
            .validate()
            .map_err(|(key, reason)| invalid(&key, &reason))?;
        self.kafka
            .authorization
            .validate()
            .map_err(|(key, reason)| invalid(&key, &reason))?;
        if self.kafka.max_connections == 0 {
            return Err(invalid("kafka.max_connections", "must be >= 1"));
        }
        if self.kafka.sasl_login_timeout_ms == 0 {
            return Err(invalid("kafka.sasl_login_timeout_ms", "must be >= 1"));
        }
        if self.kafka.max_in_flight_requests == 0 {
            return Err(invalid("kafka.max_in_flight_requests", "must be >= 1"));
        }
        if !(1..=crate::topics::MAX_PARTITIONS).contains(&self.kafka.default_partitions) {
            return Err(invalid(
                "kafka.default_partitions",
                "must be between 1 and 1024",
            ));
        }
        if self.groups.min_session_timeout_ms > self.groups.max_session_timeout_ms {
            return Err(invalid(
                "groups.min_session_timeout_ms",
                "must not exceed groups.max_session_timeout_ms",
            ));
        }
        if self.kafka.max_queued_response_bytes < 1 << 20 {
            return Err(invalid(
                "kafka.max_queued_response_bytes",
                "must be >= 1048576",
            ));
        }
        if self.groups.max_groups == 0 {
            return Err(invalid("groups.max_groups", "must be >= 1"));
        }
        if self.groups.max_group_size == 0 {
            return Err(invalid("groups.max_group_size", "must be >= 1"));
        }
        if self.storage.cleaner_interval_ms == 0 {
            return Err(invalid("storage.cleaner_interval_ms", "must be >= 1"));
        }
        if self.storage.cleaner_key_map_bytes < 4096 {
            return Err(invalid("storage.cleaner_key_map_bytes", "must be >= 4096"));
        }
        if self.storage.retention_check_interval_ms == 0 {
            return Err(invalid(
                "storage.retention_check_interval_ms",
                "must be >= 1",
            ));
        }
        self.topic_defaults()?;
        tern_bridges::config::compile(&self.bridges.mqtt)?;
        tern_bridges::kafka_sink::config::compile(&self.sinks.kafka)?;
        if let Some(edge) = &self.mirror {
            tern_mirror::config::Edge::compile(edge.clone())?;
        }
        if let Some(hub) = &self.hub {
            tern_mirror::config::Hub::compile(hub.clone())?;
        }
        Ok(())
    }

    pub fn kafka_listen(&self) -> Result<SocketAddr, String> {
        self.kafka
            .listen
            .parse()
            .map_err(|e| format!("`{}` is not an address:port ({e})", self.kafka.listen))
    }

    pub fn http_listen(&self) -> Result<SocketAddr, String> {
        self.http
            .listen
            .parse()
            .map_err(|e| format!("`{}` is not an address:port ({e})", self.http.listen))
    }

    /// `[topic_defaults]` as validated Kafka topic configs.
    pub fn topic_defaults(&self) -> Result<Defaults, ConfigFileError> {
        let mut pairs = BTreeMap::new();
        for (key, value) in &self.topic_defaults {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigFileError::Invalid {
                        key: format!("topic_defaults.\"{key}\""),
                        reason: format!(
                            "expected a string or an integer, found {}",
                            other.type_str()
                        ),
                    })
                }
            };
            pairs.insert(key.clone(), text);
        }
        Ok(Defaults::new(pairs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid_and_matches_the_code_defaults() {
        let config = Config::embedded_default().expect("embedded default parses");
        let code = Config::default();
        assert_eq!(config.kafka.listen, code.kafka.listen);
        assert_eq!(config.http.listen, code.http.listen);
        assert_eq!(config.kafka.max_request_bytes, code.kafka.max_request_bytes);
        assert_eq!(config.broker.data_dir, code.broker.data_dir);
        assert_eq!(
            config.groups.initial_rebalance_delay_ms,
            code.groups.initial_rebalance_delay_ms
        );
        assert_eq!(
            config.groups.offsets_cache_bytes,
            code.groups.offsets_cache_bytes
        );
        assert_eq!(config.groups.commit_linger_ms, code.groups.commit_linger_ms);
    }

    #[test]
    fn the_mqtt_bridge_example_is_valid() {
        let config = Config::parse(include_str!("../configs/mqtt-bridge.toml"), None)
            .expect("configs/mqtt-bridge.toml parses");
        let bridges = tern_bridges::config::compile(&config.bridges.mqtt).expect("compiles");
        assert_eq!(bridges.len(), 1);
        assert_eq!(
            (bridges[0].inbound.len(), bridges[0].outbound.len()),
            (2, 1)
        );
        assert_eq!(bridges[0].client_id, "tern-gateway");
    }

    #[test]
    fn the_kafka_sink_example_is_valid_and_matches_the_defaults() {
        let config = Config::parse(include_str!("../configs/kafka-sink.toml"), None)
            .expect("configs/kafka-sink.toml parses and is valid");
        let sinks =
            tern_bridges::kafka_sink::config::compile(&config.sinks.kafka).expect("compiles");
        assert_eq!(sinks.len(), 1);
        assert!(sinks[0].forwards("gw-017.sensors") && !sinks[0].forwards("sensors"));
        let example = &sinks[0].config;
        let default = tern_bridges::kafka_sink::config::KafkaSinkConfig::default();
        assert_eq!(
            (
                example.max_request_bytes,
                example.request_timeout_ms,
                example.topics.clone()
            ),
            (
                default.max_request_bytes,
                default.request_timeout_ms,
                default.topics.clone()
            )
        );
        let err = Config::parse(
            "[[sinks.kafka]]\nname = \"dc\"\nbootstrap_servers = [\"k:1\"]\nbootstrap = 1\n",
            None,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `bootstrap`"), "{err}");
    }

    #[test]
    fn the_mirror_examples_are_valid_apart_from_their_certificate_files() {
        for (text, key) in [
            (include_str!("../configs/mirror-edge.toml"), "mirror.cert"),
            (include_str!("../configs/mirror-hub.toml"), "hub.cert"),
        ] {
            // The examples point at /etc/tern/certs, which does not exist here: the
            // error must name that key, and nothing before it may fail.
            let err = Config::parse(text, None).expect_err("no certificate files here");
            assert!(err.to_string().contains(key), "{err}");
        }
        let err = Config::parse("[mirror]\nhub = \"h:1\"\nname = \"gw\"\nhubb = 1\n", None)
            .expect_err("unknown key");
        assert!(err.to_string().contains("hubb"), "{err}");
    }

    #[test]
    fn bridge_errors_name_the_bridge_rule_and_key() {
        let text = "[[bridges.mqtt]]\nname = \"gw\"\n[[bridges.mqtt.inbound]]\nfilter = \"a/+\"\ntopic = \"t\"\nkey = \"{3}\"\n";
        let err = Config::parse(text, None).expect_err("no level 3");
        assert!(err.to_string().contains("`gw` inbound rule 1"), "{err}");
        let err = Config::parse("[[bridges.mqtt]]\nname = \"gw\"\nhots = \"x\"\n", None)
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `hots`"), "{err}");
    }

    #[test]
    fn an_empty_file_gets_every_default() {
        let config = Config::parse("", None).expect("empty is valid");
        assert_eq!(config.kafka.listen, "127.0.0.1:9092");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[kafka]\nlisten_addr = \"x\"\n", None).expect_err("unknown key");
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err = Config::parse("[brokr]\n", None).expect_err("unknown section");
        assert!(err.to_string().contains("brokr"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse("[kafka]\nlisten = \"nope\"\n", None).expect_err("bad address");
        assert!(err.to_string().contains("kafka.listen"), "{err}");
        let err = Config::parse("[topic_defaults]\n\"retention.ms\" = \"soon\"\n", None)
            .expect_err("bad value");
        assert!(err.to_string().contains("retention.ms"), "{err}");
        let err = Config::parse("[topic_defaults]\n\"retention.msec\" = 1\n", None)
            .expect_err("unknown key");
        assert!(err.to_string().contains("retention.msec"), "{err}");
        let err = Config::parse("[kafka]\nmax_connections = -1\n", None).expect_err("negative");
        assert!(err.to_string().contains("max_connections"), "{err}");
    }
}
