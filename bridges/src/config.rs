//! `[[bridges.mqtt]]` tables: one MQTT connection per bridge, its inbound rules (MQTT
//! filter → tern topic) and outbound rules (tern topic → MQTT topic). `compile` checks
//! everything that can be checked before connecting.

use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;

use crate::filter::{FilterError, TopicFilter};
use crate::template::{KeyTemplate, TemplateError, TopicTemplate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MqttVersion {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

/// What to do with retained messages (MQTT brokers send them again on every SUBSCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RetainedPolicy {
    /// Ingest a retained message when the broker sends it for a subscription that is new
    /// (MQTT 5: retain-handling 1; MQTT 3.1.1: only when the broker had no session for
    /// the bridge). A reconnect that resumes the session never re-ingests them.
    #[default]
    NewSubscription,
    /// Ingest every message, retained or not (a re-subscription re-ingests them).
    Always,
    /// Never ingest messages that carry the retain flag.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// A new outbound rule publishes records produced from now on (Kafka's `latest`).
    #[default]
    Latest,
    /// A new outbound rule publishes everything still stored.
    Earliest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that signed the MQTT broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and key, for brokers that require client certificates.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundRule {
    /// MQTT topic filter to subscribe to (`sensors/+/temperature`).
    pub filter: String,
    /// tern topic the messages are appended to (created with `partitions` if missing).
    pub topic: String,
    /// Record key: `{1}` = first `+` level, `{#}` = what `#` matched, `{topic}` = the MQTT
    /// topic (default), or text around them.
    #[serde(default = "default_key")]
    pub key: String,
    /// Subscription QoS: 1 (at least once, default) or 0.
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default = "one_i32")]
    pub partitions: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundRule {
    /// tern topic whose records are published (created with one partition if missing).
    pub topic: String,
    /// MQTT topic template: `{key}`, `{topic}`, `{partition}` (`devices/{key}/cmd`).
    pub mqtt_topic: String,
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub start_from: StartFrom,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBridgeConfig {
    /// Names the bridge in logs, metrics and its stored cursors.
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    /// Default 1883, or 8883 with `tls`.
    pub port: Option<u16>,
    /// Stable client id for the persistent session (default `tern-<name>`); outbound
    /// publishing uses `<client_id>-out`.
    pub client_id: Option<String>,
    #[serde(default)]
    pub protocol: MqttVersion,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<TlsOptions>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// MQTT 5 session expiry (the broker keeps the session this long while tern is away).
    #[serde(default = "default_session_expiry")]
    pub session_expiry_secs: u32,
    /// Messages received but not yet acknowledged (inbound) and published but not yet
    /// acknowledged (outbound): bounds memory. Also the MQTT 5 receive maximum.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// How long received messages wait for more before one durable append.
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    #[serde(default = "default_backoff_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub reconnect_max_ms: u64,
    #[serde(default)]
    pub retained: RetainedPolicy,
    #[serde(default)]
    pub inbound: Vec<InboundRule>,
    #[serde(default)]
    pub outbound: Vec<OutboundRule>,
}

fn default_key() -> String {
    "{topic}".to_string()
}
fn one() -> u8 {
    1
}
fn one_i32() -> i32 {
    1
}
fn default_host() -> String {
    "127.0.0.1".to_string()
}
fn default_keep_alive() -> u64 {
    30
}
fn default_session_expiry() -> u32 {
    7 * 24 * 3600
}
fn default_inflight() -> u16 {
    1000
}
fn default_linger() -> u64 {
    5
}
fn default_backoff_min() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    30_000
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("bridges.mqtt `{bridge}` inbound rule {rule}: {error}")]
    Filter {
        bridge: String,
        rule: usize,
        error: FilterError,
    },
    #[error("bridges.mqtt `{bridge}` {direction} rule {rule}: {error}")]
    Template {
        bridge: String,
        direction: &'static str,
        rule: usize,
        error: TemplateError,
    },
    #[error("bridges.mqtt `{bridge}`: {reason}")]
    Invalid { bridge: String, reason: String },
    #[error("bridges.mqtt: two bridges are named `{0}`")]
    DuplicateName(String),
}

/// An inbound rule ready to match.
#[derive(Debug, Clone)]
pub struct CompiledInbound {
    pub filter: TopicFilter,
    pub key: KeyTemplate,
    pub topic: String,
    pub qos: u8,
    pub partitions: i32,
}

#[derive(Debug, Clone)]
pub struct CompiledOutbound {
    pub topic: String,
    pub mqtt_topic: TopicTemplate,
    pub qos: u8,
    pub retain: bool,
    pub start_from: StartFrom,
}

/// A bridge whose configuration passed every check.
#[derive(Debug, Clone)]
pub struct CompiledBridge {
    pub config: MqttBridgeConfig,
    pub port: u16,
    pub client_id: String,
    pub inbound: Vec<CompiledInbound>,
    pub outbound: Vec<CompiledOutbound>,
}

/// Checks every bridge (names unique, filters, templates, QoS, TLS files present).
pub fn compile(bridges: &[MqttBridgeConfig]) -> Result<Vec<CompiledBridge>, ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    let mut compiled = Vec::new();
    for b in bridges {
        if !names.insert(b.name.clone()) {
            return Err(ConfigError::DuplicateName(b.name.clone()));
        }
        compiled.push(compile_one(b)?);
    }
    Ok(compiled)
}

fn compile_one(b: &MqttBridgeConfig) -> Result<CompiledBridge, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        bridge: b.name.clone(),
        reason,
    };
    if b.name.is_empty()
        || !b
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            "name must be non-empty ASCII letters, digits, `-`, `_` or `.`".into(),
        ));
    }
    if b.inbound.is_empty() && b.outbound.is_empty() {
        return Err(invalid("has neither inbound nor outbound rules".into()));
    }
    if b.max_inflight == 0 {
        return Err(invalid("max_inflight must be >= 1".into()));
    }
    if b.keep_alive_secs < 5 {
        return Err(invalid("keep_alive_secs must be >= 5".into()));
    }
    if b.reconnect_min_ms == 0 || b.reconnect_max_ms < b.reconnect_min_ms {
        return Err(invalid(
            "need 0 < reconnect_min_ms <= reconnect_max_ms".into(),
        ));
    }
    if b.username.is_none() && b.password.is_some() {
        return Err(invalid("password given without username".into()));
    }
    if let Some(tls) = &b.tls {
        for file in [
            Some(&tls.ca_file),
            tls.client_cert_file.as_ref(),
            tls.client_key_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !file.is_file() {
                return Err(invalid(format!(
                    "tls file {} does not exist",
                    file.display()
                )));
            }
        }
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            return Err(invalid(
                "tls client_cert_file and client_key_file go together".into(),
            ));
        }
    }
    let mut inbound = Vec::new();
    for (i, rule) in b.inbound.iter().enumerate() {
        let rule_no = i + 1;
        let filter = TopicFilter::parse(&rule.filter).map_err(|error| ConfigError::Filter {
            bridge: b.name.clone(),
            rule: rule_no,
            error,
        })?;
        let key =
            KeyTemplate::parse(&rule.key, &filter).map_err(|error| ConfigError::Template {
                bridge: b.name.clone(),
                direction: "inbound",
                rule: rule_no,
                error,
            })?;
        if rule.qos > 1 {
            return Err(invalid(format!(
                "inbound rule {rule_no}: qos must be 0 or 1"
            )));
        }
        if rule.topic.is_empty() || rule.partitions < 1 {
            return Err(invalid(format!(
                "inbound rule {rule_no}: needs a tern topic and partitions >= 1"
            )));
        }
        inbound.push(CompiledInbound {
            filter,
            key,
            topic: rule.topic.clone(),
            qos: rule.qos,
            partitions: rule.partitions,
        });
    }
    let mut outbound = Vec::new();
    for (i, rule) in b.outbound.iter().enumerate() {
        let rule_no = i + 1;
        let mqtt_topic =
            TopicTemplate::parse(&rule.mqtt_topic).map_err(|error| ConfigError::Template {
                bridge: b.name.clone(),
                direction: "outbound",
                rule: rule_no,
                error,
            })?;
        if rule.qos > 1 {
            return Err(invalid(format!(
                "outbound rule {rule_no}: qos must be 0 or 1"
            )));
        }
        if rule.topic.is_empty() {
            return Err(invalid(format!(
                "outbound rule {rule_no}: needs a tern topic"
            )));
        }
        outbound.push(CompiledOutbound {
            topic: rule.topic.clone(),
            mqtt_topic,
            qos: rule.qos,
            retain: rule.retain,
            start_from: rule.start_from,
        });
    }
    Ok(CompiledBridge {
        port: b.port.unwrap_or(if b.tls.is_some() { 8883 } else { 1883 }),
        client_id: b
            .client_id
            .clone()
            .unwrap_or_else(|| format!("tern-{}", b.name)),
        config: b.clone(),
        inbound,
        outbound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(filter: &str, key: &str) -> MqttBridgeConfig {
        MqttBridgeConfig {
            name: "gw".into(),
            host: default_host(),
            port: None,
            client_id: None,
            protocol: MqttVersion::V311,
            username: None,
            password: None,
            tls: None,
            keep_alive_secs: 30,
            session_expiry_secs: 60,
            max_inflight: 10,
            linger_ms: 5,
            reconnect_min_ms: 100,
            reconnect_max_ms: 1000,
            retained: RetainedPolicy::NewSubscription,
            inbound: vec![InboundRule {
                filter: filter.into(),
                topic: "sensors".into(),
                key: key.into(),
                qos: 1,
                partitions: 1,
            }],
            outbound: vec![],
        }
    }

    #[test]
    fn a_good_bridge_compiles_with_defaults() {
        let b = compile(&[rule("sensors/+/temperature", "{1}")]).expect("valid");
        assert_eq!(b[0].port, 1883);
        assert_eq!(b[0].client_id, "tern-gw");
    }

    #[test]
    fn bad_filters_and_templates_name_the_bridge_and_rule() {
        let err = compile(&[rule("sensors/#/x", "{topic}")]).expect_err("bad filter");
        assert!(err.to_string().contains("`gw` inbound rule 1"), "{err}");
        let err = compile(&[rule("sensors/+/temperature", "{2}")]).expect_err("no level 2");
        assert!(err.to_string().contains("names `{2}`"), "{err}");
        let err = compile(&[rule("a/+", "{1}"), rule("b/+", "{1}")]).expect_err("dup");
        assert!(err.to_string().contains("two bridges"), "{err}");
    }
}
