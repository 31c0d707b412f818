//! `[mirror]` (an edge shipping its topics) and `[hub]` (a site receiving them). Every
//! error names the key it is about; certificate files are read and checked at startup.

use std::net::SocketAddr;
use std::path::PathBuf;

use regex::Regex;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Which AEAD the edge prefers. `auto` puts ChaCha20-Poly1305 first on CPUs without AES
/// instructions (a Raspberry Pi 4), AES-GCM first elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CipherPreference {
    #[default]
    Auto,
    Chacha20,
    Aes,
}

/// `[mirror]`: this tern is an edge and ships its topics to a hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// `host:port` of the hub's QUIC listener; resolved again on every connect.
    pub hub: String,
    /// The name the hub's certificate must carry; default: the host part of `hub`.
    pub hub_name: String,
    /// This edge's name: hub topics are `<name><separator><topic>`; the edge certificate
    /// must be valid for it.
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signed the hub's certificate.
    pub ca: PathBuf,
    /// Topics to mirror (regular expressions matched against the whole name).
    pub topics: Vec<String>,
    pub topics_exclude: Vec<String>,
    pub cipher: CipherPreference,
    pub keep_alive_ms: u64,
    pub idle_timeout_ms: u64,
    /// Unacknowledged bytes per partition in flight to the hub.
    pub window_bytes: usize,
    /// Bytes of stored batches per frame.
    pub max_frame_bytes: usize,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// How often new topics and partitions are looked for.
    pub discovery_interval_ms: u64,
    /// How often the edge writes a record to its `heartbeats` topic (MirrorMaker's name),
    /// which is always mirrored: the hub sees liveness and end-to-end latency. 0: never.
    pub heartbeat_interval_ms: u64,
    /// Local topics the hub may write (its `[[hub.downlink]]` targets, e.g. commands to
    /// devices). They are never mirrored up, and local Kafka producers may not write them
    /// (the hub's offsets must stay the edge's). Empty: accept nothing from the hub.
    pub downlink_topics: Vec<String>,
    /// Consumer groups whose committed offsets are checkpointed to the hub (regexes;
    /// MirrorMaker's `groups` / `groups.exclude`).
    pub groups: Vec<String>,
    pub groups_exclude: Vec<String>,
    /// How often changed group offsets are sent (MirrorMaker's
    /// `emit.checkpoints.interval.seconds`). 0: never.
    pub checkpoint_interval_ms: u64,
    /// Cap for a metered link, in bytes of mirrored batches per second, in each direction
    /// (the hub keeps to it when sending down). 0: no cap.
    pub max_bytes_per_sec: u64,
    /// Topics always sent first (regexes), like partitions that have caught up; the
    /// heartbeats topic always is.
    pub priority_topics: Vec<String>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            hub: String::new(),
            hub_name: String::new(),
            name: String::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            ca: PathBuf::new(),
            topics: vec![".*".to_string()],
            topics_exclude: Vec::new(),
            cipher: CipherPreference::Auto,
            keep_alive_ms: 10_000,
            idle_timeout_ms: 60_000,
            window_bytes: 4 * 1024 * 1024,
            max_frame_bytes: 1024 * 1024,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            discovery_interval_ms: 2_000,
            heartbeat_interval_ms: 5_000,
            downlink_topics: vec!["commands".to_string(), "commands.all".to_string()],
            groups: vec![".*".to_string()],
            groups_exclude: default_groups_exclude(),
            checkpoint_interval_ms: 5_000,
            max_bytes_per_sec: 0,
            priority_topics: Vec::new(),
        }
    }
}

/// `[hub]`: this tern receives edges' topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// UDP address of the QUIC listener.
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose edge certificates are accepted.
    pub ca: PathBuf,
    /// Between the edge name and its topic (MirrorMaker's `replication.policy.separator`).
    pub separator: String,
    pub keep_alive_ms: u64,
    pub idle_timeout_ms: u64,
    /// Edges connected at once; more are refused.
    pub max_edges: usize,
    /// Topics one edge may have on the hub, and partitions per topic; more are refused.
    pub max_topics_per_edge: usize,
    pub max_partitions_per_topic: i32,
    /// Topic configs not copied from edges (regexes; MirrorMaker's
    /// `config.properties.exclude`): the hub's own values stay.
    pub config_exclude: Vec<String>,
    /// Hub topics sent down to edges over their own connections (commands to devices
    /// behind NAT), with the same guarantees as the way up.
    pub downlink: Vec<DownlinkRule>,
    /// How often new downlink topics and partitions are looked for.
    pub discovery_interval_ms: u64,
    /// Consumer groups whose offsets on `<edge>.<topic>` are checkpointed back to the
    /// edge (consumers moving from the hub to the edge), and how often (0: never).
    pub groups: Vec<String>,
    pub groups_exclude: Vec<String>,
    pub checkpoint_interval_ms: u64,
}

/// One `[[hub.downlink]]`: hub topic `hub_topic` (where `{edge}` stands for an edge's
/// name) is copied to topic `edge_topic` of each edge it names, at the same offsets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownlinkRule {
    pub hub_topic: String,
    pub edge_topic: String,
}

impl DownlinkRule {
    fn new(hub_topic: &str, edge_topic: &str) -> DownlinkRule {
        DownlinkRule {
            hub_topic: hub_topic.to_string(),
            edge_topic: edge_topic.to_string(),
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: "0.0.0.0:9643".to_string(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            ca: PathBuf::new(),
            separator: ".".to_string(),
            keep_alive_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_edges: 1_000,
            max_topics_per_edge: 1_000,
            max_partitions_per_topic: 256,
            config_exclude: [
                "follower\\.replication\\.throttled\\.replicas",
                "leader\\.replication\\.throttled\\.replicas",
                "message\\.timestamp\\.difference\\.max\\.ms",
                "message\\.timestamp\\.type",
                "unclean\\.leader\\.election\\.enable",
                "min\\.insync\\.replicas",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            // One topic per edge, and one every edge receives (a fleet-wide command).
            downlink: vec![
                DownlinkRule::new("commands.{edge}", "commands"),
                DownlinkRule::new("commands.all", "commands.all"),
            ],
            discovery_interval_ms: 2_000,
            groups: vec![".*".to_string()],
            groups_exclude: default_groups_exclude(),
            checkpoint_interval_ms: 5_000,
        }
    }
}

/// MirrorMaker's default `groups.exclude`, and tern's own cursors (MQTT bridges, sinks).
fn default_groups_exclude() -> Vec<String> {
    ["console-consumer-.*", "connect-.*", "__.*", "tern-.*"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Edge names: a lowercase DNS label, so that it fits a certificate SAN and a topic prefix.
pub fn validate_edge_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an edge name: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

/// MirrorMaker's heartbeats topic: written by each edge, mirrored as `<edge>.heartbeats`.
pub const HEARTBEATS_TOPIC: &str = "heartbeats";

fn compile_all(key: &str, patterns: &[String]) -> Result<Vec<Regex>, ConfigError> {
    patterns
        .iter()
        .map(|p| Regex::new(&format!("^(?:{p})$")).map_err(|e| invalid(key, e)))
        .collect()
}

fn check_file(key: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(key, "missing (a PEM file)"));
    }
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))
}

/// An edge config checked and ready: regexes compiled, names validated.
#[derive(Debug, Clone)]
pub struct Edge {
    pub config: EdgeConfig,
    pub hub_host: String,
    pub hub_port: u16,
    pub hub_name: String,
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    groups: Vec<Regex>,
    groups_exclude: Vec<Regex>,
    priority: Vec<Regex>,
}

impl Edge {
    pub fn compile(config: EdgeConfig) -> Result<Edge, ConfigError> {
        validate_edge_name(&config.name).map_err(|e| invalid("mirror.name", e))?;
        let (host, port) = config
            .hub
            .rsplit_once(':')
            .ok_or_else(|| invalid("mirror.hub", "expected host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("mirror.hub", "expected host:port"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("mirror.hub", format!("`{port}` is not a port")))?;
        let hub_name = if config.hub_name.is_empty() {
            host.to_string()
        } else {
            config.hub_name.clone()
        };
        rustls::pki_types::ServerName::try_from(hub_name.clone())
            .map_err(|e| invalid("mirror.hub_name", e))?;
        check_file("mirror.cert", &config.cert)?;
        check_file("mirror.key", &config.key)?;
        check_file("mirror.ca", &config.ca)?;
        if config.window_bytes < config.max_frame_bytes {
            return Err(invalid(
                "mirror.window_bytes",
                "must be at least mirror.max_frame_bytes",
            ));
        }
        if config.max_frame_bytes == 0 || config.max_frame_bytes > crate::wire::MAX_FRAME / 2 {
            return Err(invalid(
                "mirror.max_frame_bytes",
                format!("must be between 1 and {}", crate::wire::MAX_FRAME / 2),
            ));
        }
        if config.keep_alive_ms == 0 || config.keep_alive_ms >= config.idle_timeout_ms {
            return Err(invalid(
                "mirror.keep_alive_ms",
                "must be above 0 and below mirror.idle_timeout_ms",
            ));
        }
        for topic in &config.downlink_topics {
            validate_topic_name(topic).map_err(|e| invalid("mirror.downlink_topics", e))?;
        }
        let include = compile_all("mirror.topics", &config.topics)?;
        let exclude = compile_all("mirror.topics_exclude", &config.topics_exclude)?;
        let groups = compile_all("mirror.groups", &config.groups)?;
        let groups_exclude = compile_all("mirror.groups_exclude", &config.groups_exclude)?;
        let priority = compile_all("mirror.priority_topics", &config.priority_topics)?;
        Ok(Edge {
            priority,
            groups,
            groups_exclude,
            hub_host: host.to_string(),
            hub_port: port,
            hub_name,
            include,
            exclude,
            config,
        })
    }

    /// True when `topic` is selected for mirroring (internal topics never are; the
    /// heartbeats topic always is).
    pub fn selects(&self, topic: &str) -> bool {
        if self.receives(topic) {
            return false; // it came from the hub
        }
        topic == HEARTBEATS_TOPIC
            || (self.include.iter().any(|r| r.is_match(topic))
                && !self.exclude.iter().any(|r| r.is_match(topic)))
    }
}

impl Edge {
    /// True when `topic` is always sent first.
    pub fn is_priority(&self, topic: &str) -> bool {
        topic == HEARTBEATS_TOPIC || self.priority.iter().any(|r| r.is_match(topic))
    }

    /// True when `group`'s offsets are checkpointed to the hub.
    pub fn selects_group(&self, group: &str) -> bool {
        self.groups.iter().any(|r| r.is_match(group))
            && !self.groups_exclude.iter().any(|r| r.is_match(group))
    }

    /// True when the hub may send `topic` down to this edge.
    pub fn receives(&self, topic: &str) -> bool {
        self.config.downlink_topics.iter().any(|t| t == topic)
    }
}

/// Kafka's topic name rule: 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'.
fn validate_topic_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid topic name"))
    }
}

/// A hub config checked and ready.
#[derive(Debug, Clone)]
pub struct Hub {
    pub config: HubConfig,
    pub listen: SocketAddr,
    config_exclude: Vec<Regex>,
    groups: Vec<Regex>,
    groups_exclude: Vec<Regex>,
}

impl Hub {
    pub fn compile(config: HubConfig) -> Result<Hub, ConfigError> {
        let listen = config
            .listen
            .parse()
            .map_err(|e| invalid("hub.listen", format!("`{}`: {e}", config.listen)))?;
        check_file("hub.cert", &config.cert)?;
        check_file("hub.key", &config.key)?;
        check_file("hub.ca", &config.ca)?;
        if config.separator.is_empty()
            || !config
                .separator
                .bytes()
                .all(|b| b == b'.' || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "hub.separator",
                "must be one or more of '.', '_' and '-' (valid in topic names)",
            ));
        }
        if config.keep_alive_ms == 0 || config.keep_alive_ms >= config.idle_timeout_ms {
            return Err(invalid(
                "hub.keep_alive_ms",
                "must be above 0 and below hub.idle_timeout_ms",
            ));
        }
        let config_exclude = compile_all("hub.config_exclude", &config.config_exclude)?;
        for rule in &config.downlink {
            if rule.hub_topic.starts_with("{edge}") {
                return Err(invalid(
                    "hub.downlink.hub_topic",
                    "may not start with `{edge}`: that is the edge's own namespace (its mirrored topics)",
                ));
            }
            if rule.hub_topic.matches("{edge}").count() > 1 {
                return Err(invalid(
                    "hub.downlink.hub_topic",
                    "`{edge}` may appear once",
                ));
            }
            validate_topic_name(&rule.hub_topic.replace("{edge}", "e"))
                .map_err(|e| invalid("hub.downlink.hub_topic", e))?;
            validate_topic_name(&rule.edge_topic)
                .map_err(|e| invalid("hub.downlink.edge_topic", e))?;
        }
        if config.discovery_interval_ms == 0 {
            return Err(invalid("hub.discovery_interval_ms", "must be above 0"));
        }
        if config.max_topics_per_edge == 0 {
            return Err(invalid("hub.max_topics_per_edge", "must be at least 1"));
        }
        if config.max_partitions_per_topic < 1 {
            return Err(invalid(
                "hub.max_partitions_per_topic",
                "must be at least 1",
            ));
        }
        let groups = compile_all("hub.groups", &config.groups)?;
        let groups_exclude = compile_all("hub.groups_exclude", &config.groups_exclude)?;
        Ok(Hub {
            config,
            listen,
            config_exclude,
            groups,
            groups_exclude,
        })
    }

    /// True when `group`'s offsets are checkpointed back to edges.
    pub fn selects_group(&self, group: &str) -> bool {
        self.groups.iter().any(|r| r.is_match(group))
            && !self.groups_exclude.iter().any(|r| r.is_match(group))
    }

    /// The hub topics sent down to `edge`, each with the edge topic it becomes.
    pub fn downlink_for(&self, edge: &str) -> Vec<(String, String)> {
        self.config
            .downlink
            .iter()
            .map(|r| (r.hub_topic.replace("{edge}", edge), r.edge_topic.clone()))
            .collect()
    }

    /// Refuses an edge whose namespace (`<edge><separator>`) would swallow a downlink
    /// topic: the hub's producers could no longer write it.
    pub fn check_edge_name(&self, edge: &str) -> Result<(), String> {
        let prefix = format!("{edge}{}", self.config.separator);
        for rule in &self.config.downlink {
            let fixed = rule.hub_topic.split("{edge}").next().unwrap_or_default();
            if fixed.starts_with(&prefix) {
                return Err(format!(
                    "the edge name `{edge}` clashes with the downlink topic `{}` (its                      namespace {prefix}* would hold it); rename the edge or the rule",
                    rule.hub_topic
                ));
            }
        }
        Ok(())
    }

    /// True when a topic config keeps the hub's own value instead of the edge's.
    pub fn keeps_local(&self, config: &str) -> bool {
        self.config_exclude.iter().any(|r| r.is_match(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge_with_files(dir: &std::path::Path) -> EdgeConfig {
        for f in ["e.pem", "e.key", "ca.pem"] {
            std::fs::write(dir.join(f), "x").expect("write");
        }
        EdgeConfig {
            hub: "hub.example.com:9643".into(),
            name: "gw-1".into(),
            cert: dir.join("e.pem"),
            key: dir.join("e.key"),
            ca: dir.join("ca.pem"),
            ..EdgeConfig::default()
        }
    }

    fn key_of(e: ConfigError) -> String {
        let ConfigError::Invalid { key, .. } = e;
        key
    }

    #[test]
    fn edge_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = edge_with_files(dir.path());
        let edge = Edge::compile(good.clone()).expect("valid");
        assert_eq!(edge.hub_name, "hub.example.com");
        assert!(edge.selects("sensors") && edge.selects("a.b"));
        let cases: Vec<(EdgeConfig, &str)> = vec![
            (
                EdgeConfig {
                    hub: "nohost".into(),
                    ..good.clone()
                },
                "mirror.hub",
            ),
            (
                EdgeConfig {
                    hub: "h:99999".into(),
                    ..good.clone()
                },
                "mirror.hub",
            ),
            (
                EdgeConfig {
                    name: "Bad_Name".into(),
                    ..good.clone()
                },
                "mirror.name",
            ),
            (
                EdgeConfig {
                    cert: dir.path().join("missing.pem"),
                    ..good.clone()
                },
                "mirror.cert",
            ),
            (
                EdgeConfig {
                    key: PathBuf::new(),
                    ..good.clone()
                },
                "mirror.key",
            ),
            (
                EdgeConfig {
                    topics: vec!["(".into()],
                    ..good.clone()
                },
                "mirror.topics",
            ),
            (
                EdgeConfig {
                    topics_exclude: vec!["[".into()],
                    ..good.clone()
                },
                "mirror.topics_exclude",
            ),
            (
                EdgeConfig {
                    keep_alive_ms: 90_000,
                    ..good.clone()
                },
                "mirror.keep_alive_ms",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(key_of(Edge::compile(config).expect_err("invalid")), key);
        }
    }

    #[test]
    fn include_and_exclude_match_whole_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EdgeConfig {
            topics: vec!["sensors.*".into(), "door".into()],
            topics_exclude: vec![".*-debug".into()],
            ..edge_with_files(dir.path())
        };
        let edge = Edge::compile(config).expect("valid");
        assert!(edge.selects("sensors") && edge.selects("sensors-2") && edge.selects("door"));
        assert!(!edge.selects("doors") && !edge.selects("sensors-debug") && !edge.selects("x"));
    }

    #[test]
    fn hub_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["h.pem", "h.key", "ca.pem"] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        let good = HubConfig {
            cert: dir.path().join("h.pem"),
            key: dir.path().join("h.key"),
            ca: dir.path().join("ca.pem"),
            ..HubConfig::default()
        };
        Hub::compile(good.clone()).expect("valid");
        let cases: Vec<(HubConfig, &str)> = vec![
            (
                HubConfig {
                    listen: "nope".into(),
                    ..good.clone()
                },
                "hub.listen",
            ),
            (
                HubConfig {
                    ca: PathBuf::new(),
                    ..good.clone()
                },
                "hub.ca",
            ),
            (
                HubConfig {
                    separator: "/".into(),
                    ..good.clone()
                },
                "hub.separator",
            ),
            (
                HubConfig {
                    config_exclude: vec!["(".into()],
                    ..good.clone()
                },
                "hub.config_exclude",
            ),
            (
                HubConfig {
                    downlink: vec![DownlinkRule::new("{edge}.commands", "commands")],
                    ..good.clone()
                },
                "hub.downlink.hub_topic",
            ),
            (
                HubConfig {
                    downlink: vec![DownlinkRule::new("cmd.{edge}.{edge}", "commands")],
                    ..good.clone()
                },
                "hub.downlink.hub_topic",
            ),
            (
                HubConfig {
                    downlink: vec![DownlinkRule::new("cmd.{edge}", "bad/name")],
                    ..good.clone()
                },
                "hub.downlink.edge_topic",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(key_of(Hub::compile(config).expect_err("invalid")), key);
        }
    }

    #[test]
    fn downlink_rules_name_each_edges_topics_and_refuse_clashing_edge_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["h.pem", "h.key", "ca.pem"] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        let hub = Hub::compile(HubConfig {
            cert: dir.path().join("h.pem"),
            key: dir.path().join("h.key"),
            ca: dir.path().join("ca.pem"),
            ..HubConfig::default()
        })
        .expect("valid");
        assert_eq!(
            hub.downlink_for("gw-7"),
            vec![
                ("commands.gw-7".to_string(), "commands".to_string()),
                ("commands.all".to_string(), "commands.all".to_string()),
            ]
        );
        assert!(hub.check_edge_name("gw-7").is_ok());
        // Its namespace `commands.*` would hold every edge's command topic.
        let clash = hub.check_edge_name("commands").expect_err("clash");
        assert!(clash.contains("commands.{edge}"), "{clash}");

        let edge = Edge::compile(edge_with_files(dir.path())).expect("valid");
        assert!(edge.receives("commands") && edge.receives("commands.all"));
        assert!(!edge.selects("commands") && !edge.selects("commands.all"));
        assert!(edge.selects("commands-log"));
        assert!(edge.selects_group("analytics"));
        assert!(!edge.selects_group("tern-mqtt-gw") && !edge.selects_group("console-consumer-7"));
    }
}
