//! `[[sinks.kafka]]`: forward tern topics into an external Kafka cluster. Every error
//! names the key it is about.

use regex::Regex;

use crate::kafka_client::{SaslLogin, Security};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkConfigError {
    #[error("sinks.kafka `{sink}`: invalid value for `{key}`: {reason}")]
    Invalid {
        sink: String,
        key: String,
        reason: String,
    },
}

pub use crate::kafka_client::SecurityProtocol;

/// Where a partition without a stored cursor starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkStart {
    /// The oldest stored record: everything tern holds reaches the cluster.
    #[default]
    Earliest,
    /// Only records stored from now on.
    Latest,
}

/// One `[[sinks.kafka]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Names the sink in logs, metrics and its cursor group `tern-sink-<name>`.
    pub name: String,
    /// `host:port` of one or more brokers of the cluster.
    pub bootstrap_servers: Vec<String>,
    pub security_protocol: SecurityProtocol,
    /// SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, and the login.
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: String,
    /// SSL and SASL_SSL: PEM file with the CA(s) that signed the brokers' certificates;
    /// a client certificate and key where the cluster wants them; the name the brokers'
    /// certificates must carry if not the host they are reached at.
    pub ssl_ca_file: Option<std::path::PathBuf>,
    pub ssl_cert_file: Option<std::path::PathBuf>,
    pub ssl_key_file: Option<std::path::PathBuf>,
    pub ssl_server_name: String,
    /// Local topics to forward (regexes over the whole name). The default is every
    /// topic a hub mirrors from its edges, `<edge>.<topic>`.
    pub topics: Vec<String>,
    pub topics_exclude: Vec<String>,
    /// The topic's name in the cluster; `{topic}` is the local name.
    pub target_topic: String,
    /// Creates missing topics in the cluster (with the local partition count) and grows
    /// topics with fewer partitions; otherwise the partition waits and says why.
    pub create_topics: bool,
    /// Replication factor of created topics; -1 is the cluster's default.
    pub replication_factor: i16,
    /// Where (source offset ↔ target offset) records go whenever they differ; "" turns
    /// them off.
    pub offset_syncs_topic: String,
    pub start_from: SinkStart,
    pub client_id: String,
    /// Upper bound of one Produce request (the cluster's `socket.request.max.bytes` and
    /// `message.max.bytes` must allow one stored batch).
    pub max_request_bytes: usize,
    pub request_timeout_ms: u64,
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// How often new local topics and partitions are looked for.
    pub discovery_interval_ms: u64,
    /// Pass-through (on a hub): an edge's batch is acknowledged to the edge only once the
    /// cluster has it, and sealed segments the cluster has are deleted at once — the hub
    /// keeps a short buffer and the edges keep what the cluster has not acknowledged.
    pub pass_through: bool,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            name: String::new(),
            bootstrap_servers: Vec::new(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: "SCRAM-SHA-512".to_string(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            ssl_ca_file: None,
            ssl_cert_file: None,
            ssl_key_file: None,
            ssl_server_name: String::new(),
            topics: vec![r"[A-Za-z0-9_-]+\..+".to_string()],
            topics_exclude: Vec::new(),
            target_topic: "{topic}".to_string(),
            create_topics: true,
            replication_factor: -1,
            offset_syncs_topic: "tern-offset-syncs".to_string(),
            start_from: SinkStart::Earliest,
            client_id: String::new(),
            max_request_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 30_000,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 10_000,
            discovery_interval_ms: 5_000,
            pass_through: false,
        }
    }
}

/// A sink config checked and ready.
#[derive(Debug, Clone)]
pub struct CompiledSink {
    pub config: KafkaSinkConfig,
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    pub client_id: String,
    /// TLS and SASL as configured (built at startup: a missing CA file is a config error).
    pub security: Security,
}

impl CompiledSink {
    /// Whether a local topic is forwarded (internal `__` topics never are, nor the
    /// sink's own offset-sync topic).
    pub fn forwards(&self, topic: &str) -> bool {
        !topic.starts_with("__")
            && topic != self.config.offset_syncs_topic
            && self.include.iter().any(|r| r.is_match(topic))
            && !self.exclude.iter().any(|r| r.is_match(topic))
    }

    pub fn target_topic(&self, topic: &str) -> String {
        self.config.target_topic.replace("{topic}", topic)
    }

    /// The group whose committed offsets are this sink's cursors.
    pub fn cursor_group(&self) -> String {
        cursor_group(&self.config.name)
    }
}

pub fn cursor_group(sink: &str) -> String {
    format!("tern-sink-{sink}")
}

/// TLS and SASL from the config; errors name the key.
fn security(config: &KafkaSinkConfig) -> Result<Security, (&'static str, String)> {
    let tls = config.security_protocol.uses_tls();
    let sasl = config.security_protocol.uses_sasl();
    let mut security = Security::default();
    if tls {
        let Some(ca_file) = config.ssl_ca_file.clone() else {
            return Err((
                "ssl_ca_file",
                "SSL and SASL_SSL need the CA that signed the brokers' certificates".into(),
            ));
        };
        if config.ssl_cert_file.is_some() != config.ssl_key_file.is_some() {
            return Err((
                "ssl_cert_file",
                "a client certificate needs ssl_key_file too (and the other way round)".into(),
            ));
        }
        let options = crate::config::TlsOptions {
            ca_file,
            client_cert_file: config.ssl_cert_file.clone(),
            client_key_file: config.ssl_key_file.clone(),
        };
        let client =
            crate::tls::client_config(&options).map_err(|e| ("ssl_ca_file", e.to_string()))?;
        let name = (!config.ssl_server_name.is_empty()).then(|| config.ssl_server_name.clone());
        security.tls = Some((client, name));
    }
    if sasl {
        if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&config.sasl_mechanism.as_str()) {
            return Err((
                "sasl_mechanism",
                "is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512".into(),
            ));
        }
        if config.sasl_username.is_empty() || config.sasl_password.is_empty() {
            return Err((
                "sasl_username",
                "SASL needs sasl_username and sasl_password".into(),
            ));
        }
        security.sasl = Some(SaslLogin {
            mechanism: config.sasl_mechanism.clone(),
            username: config.sasl_username.clone(),
            password: config.sasl_password.clone(),
        });
    }
    Ok(security)
}

fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn compile(sinks: &[KafkaSinkConfig]) -> Result<Vec<CompiledSink>, SinkConfigError> {
    let mut names = std::collections::HashSet::new();
    sinks
        .iter()
        .map(|config| {
            let sink = config.name.clone();
            let invalid = |key: &str, reason: String| SinkConfigError::Invalid {
                sink: sink.clone(),
                key: key.to_string(),
                reason,
            };
            if config.name.is_empty()
                || !config
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(invalid(
                    "name",
                    "needs letters, digits, '.', '_' or '-'".into(),
                ));
            }
            if !names.insert(config.name.clone()) {
                return Err(invalid("name", "two sinks have this name".into()));
            }
            if config.bootstrap_servers.is_empty() {
                return Err(invalid(
                    "bootstrap_servers",
                    "name at least one host:port".into(),
                ));
            }
            for server in &config.bootstrap_servers {
                if server.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                    return Err(invalid("bootstrap_servers", format!("`{server}` is not host:port")));
                }
            }
            let security = security(config).map_err(|(key, reason)| invalid(key, reason))?;
            let regexes = |key: &str, patterns: &[String]| {
                patterns
                    .iter()
                    .map(|p| Regex::new(&format!("^(?:{p})$")).map_err(|e| invalid(key, e.to_string())))
                    .collect::<Result<Vec<_>, _>>()
            };
            let include = regexes("topics", &config.topics)?;
            let exclude = regexes("topics_exclude", &config.topics_exclude)?;
            if !config.target_topic.contains("{topic}") {
                return Err(invalid(
                    "target_topic",
                    "must contain {topic}, or every source topic would land in one".into(),
                ));
            }
            if !valid_topic_name(&config.target_topic.replace("{topic}", "t")) {
                return Err(invalid("target_topic", "makes invalid Kafka topic names".into()));
            }
            if !config.offset_syncs_topic.is_empty() && !valid_topic_name(&config.offset_syncs_topic) {
                return Err(invalid("offset_syncs_topic", "is not a valid Kafka topic name".into()));
            }
            if config.max_request_bytes < 64 * 1024 {
                return Err(invalid("max_request_bytes", "must be at least 65536".into()));
            }
            if config.replication_factor == 0 || config.replication_factor < -1 {
                return Err(invalid("replication_factor", "is -1 (the cluster's default) or at least 1".into()));
            }
            if config.request_timeout_ms == 0
                || config.retry_backoff_ms == 0
                || config.retry_backoff_max_ms < config.retry_backoff_ms
                || config.discovery_interval_ms == 0
            {
                return Err(invalid(
                    "request_timeout_ms / retry_backoff_ms / retry_backoff_max_ms / discovery_interval_ms",
                    "must be positive, and retry_backoff_max_ms ≥ retry_backoff_ms".into(),
                ));
            }
            let client_id = if config.client_id.is_empty() {
                format!("tern-sink-{}", config.name)
            } else {
                config.client_id.clone()
            };
            Ok(CompiledSink {
                config: config.clone(),
                include,
                exclude,
                client_id,
                security,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(text: &str) -> Result<Vec<CompiledSink>, SinkConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            kafka: Vec<KafkaSinkConfig>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| SinkConfigError::Invalid {
            sink: String::new(),
            key: String::new(),
            reason: e.to_string(),
        })?;
        compile(&doc.kafka)
    }

    #[test]
    fn the_default_forwards_every_mirrored_topic_under_its_own_name() {
        let s = sink("[[kafka]]\nname = \"dc\"\nbootstrap_servers = [\"k:9092\"]\n").unwrap();
        assert!(s[0].forwards("gw-1.sensors"));
        assert!(!s[0].forwards("sensors"));
        assert!(!s[0].forwards("__consumer_offsets"));
        assert!(!s[0].forwards("tern-offset-syncs"));
        assert_eq!(s[0].target_topic("gw-1.sensors"), "gw-1.sensors");
        assert_eq!(s[0].cursor_group(), "tern-sink-dc");
        assert_eq!(s[0].client_id, "tern-sink-dc");
    }

    #[test]
    fn include_exclude_and_renaming() {
        let s = sink("[[kafka]]\nname = \"dc\"\nbootstrap_servers = [\"k:9092\"]\ntopics = [\"sensors.*\", \"doors\"]\ntopics_exclude = [\"sensors-debug\"]\ntarget_topic = \"site7.{topic}\"\n").unwrap();
        assert!(s[0].forwards("sensors"));
        assert!(s[0].forwards("doors"));
        assert!(!s[0].forwards("doors2"));
        assert!(!s[0].forwards("sensors-debug"));
        assert_eq!(s[0].target_topic("doors"), "site7.doors");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("name = \"dc\"\n", "bootstrap_servers"),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k\"]\n",
                "bootstrap_servers",
            ),
            ("name = \"d c\"\nbootstrap_servers = [\"k:1\"]\n", "name"),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k:1\"]\ntopics = [\"(\"]\n",
                "topics",
            ),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k:1\"]\ntarget_topic = \"all\"\n",
                "target_topic",
            ),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k:1\"]\nsecurity_protocol = \"SASL_SSL\"\n",
                "ssl_ca_file",
            ),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k:1\"]\nsecurity_protocol = \"SASL_PLAINTEXT\"\n",
                "sasl_username",
            ),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k:1\"]\nsecurity_protocol = \"SASL_PLAINTEXT\"\nsasl_mechanism = \"GSSAPI\"\n",
                "sasl_mechanism",
            ),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k:1\"]\nsecurity_protocol = \"SSL\"\nssl_ca_file = \"/nonexistent/ca.pem\"\n",
                "ssl_ca_file",
            ),
            (
                "name = \"dc\"\nbootstrap_servers = [\"k:1\"]\nreplication_factor = 0\n",
                "replication_factor",
            ),
        ] {
            let err = sink(&format!("[[kafka]]\n{text}")).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = sink("[[kafka]]\nname = \"dc\"\nbootstrap_servers = [\"k:1\"]\nbootstrap = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err = sink("[[kafka]]\nname = \"dc\"\nbootstrap_servers = [\"k:1\"]\n[[kafka]]\nname = \"dc\"\nbootstrap_servers = [\"k:1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("two sinks"), "{err}");
    }
}
