//! Access control lists in Kafka's model and vocabulary: a binding allows or denies one
//! principal (`User:alice`, `User:*`), from one host (an IP or `*`), one operation on a
//! resource (a topic, a group, the cluster, a transactional id) named literally or by
//! prefix. The numeric codes are Kafka's, so CreateAcls/DescribeAcls/DeleteAcls carry
//! them unchanged.
//!
//! - `store`      the bindings in `<data_dir>/acls.json` (shared by the APIs and `tern acls`).
//! - `authorizer` the decision for one request: super users, deny before allow, implied
//!   operations, deny by default.
//! - `principal`  who a connection is: SASL user, TLS client certificate, or ANONYMOUS.

pub mod authorizer;
pub mod principal;
pub mod store;

use serde::{Deserialize, Serialize};

pub use authorizer::{Authorizer, Session};

/// The name Kafka gives the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The principal of a connection that did not authenticate (PLAINTEXT, SSL without a
/// client certificate).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Kafka's ResourceType codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

/// Kafka's PatternType codes (for bindings: literal or prefixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    Literal,
    Prefixed,
}

/// Kafka's AclOperation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// Kafka's AclPermissionType codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Deny,
}

/// The wire codes Kafka gives "any" and "match" in filters.
pub const ANY: i8 = 1;
const MATCH: i8 = 2;

impl ResourceType {
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    pub fn from_code(code: i8) -> Option<ResourceType> {
        Some(match code {
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::TransactionalId => "transactional-id",
        }
    }

    pub fn parse(text: &str) -> Option<ResourceType> {
        Some(match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "topic" => ResourceType::Topic,
            "group" => ResourceType::Group,
            "cluster" => ResourceType::Cluster,
            "transactional_id" => ResourceType::TransactionalId,
            _ => return None,
        })
    }
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_code(code: i8) -> Option<PatternType> {
        match code {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

impl Operation {
    pub const EVERY: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    pub fn code(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
        }
    }

    pub fn from_code(code: i8) -> Option<Operation> {
        Operation::EVERY.into_iter().find(|o| o.code() == code)
    }

    /// Kafka's names, case and `-`/`_` ignored: `read`, `Write`, `describe-configs`…
    pub fn parse(text: &str) -> Option<Operation> {
        let wanted: String = text
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        Operation::EVERY
            .into_iter()
            .find(|o| o.name().replace('_', "").to_ascii_lowercase() == wanted)
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "ALL",
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Alter => "ALTER",
            Operation::Describe => "DESCRIBE",
            Operation::ClusterAction => "CLUSTER_ACTION",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
            Operation::AlterConfigs => "ALTER_CONFIGS",
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
        }
    }
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_code(code: i8) -> Option<Permission> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Why this binding cannot be stored (Kafka's rules), if it cannot.
    pub fn invalid(&self) -> Option<String> {
        let Some((kind, name)) = self.principal.split_once(':') else {
            return Some(format!(
                "principal {:?} is not <type>:<name> (e.g. User:alice)",
                self.principal
            ));
        };
        if kind != "User" || name.is_empty() {
            return Some(format!(
                "principal {:?}: tern's principals are User:<name> or User:*",
                self.principal
            ));
        }
        if self.resource_name.is_empty() {
            return Some("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Some(format!("the cluster resource is named {CLUSTER_NAME}"));
        }
        if self.host.is_empty() {
            return Some("the host is empty (use * for any host)".into());
        }
        if self.host != "*" && self.host.parse::<std::net::IpAddr>().is_err() {
            return Some(format!("host {:?} is not an IP address or *", self.host));
        }
        if self.pattern_type == PatternType::Prefixed && self.resource_name == "*" {
            return Some("a prefixed pattern cannot be * (use a literal *)".into());
        }
        None
    }

    /// Whether this binding's resource pattern covers the resource `name`.
    pub fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == name || self.resource_name == "*",
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
            }
    }

    /// One line, e.g. `ALLOW User:alice WRITE on topic sensors (literal) from host *`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} {} on {} {} ({}) from host {}",
            match self.permission {
                Permission::Allow => "ALLOW",
                Permission::Deny => "DENY",
            },
            self.principal,
            self.operation.name(),
            self.resource_type.name(),
            self.resource_name,
            match self.pattern_type {
                PatternType::Literal => "literal",
                PatternType::Prefixed => "prefixed",
            },
            self.host,
        )
    }
}

/// Which bindings a DescribeAcls / DeleteAcls filter selects; `None` fields match any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

/// A filter's pattern type: any, one type exactly, or MATCH (every binding that applies
/// to the named resource: literal, wildcard and prefixes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PatternFilter {
    #[default]
    Any,
    Match,
    Exactly(PatternType),
}

impl AclFilter {
    /// Builds a filter from wire codes; `Err` names the field Kafka would reject.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, String> {
        let any_or = |code: i8, what: &str| -> Result<bool, String> {
            if code == ANY {
                Ok(true)
            } else if code <= 0 {
                Err(format!("unknown {what} {code}"))
            } else {
                Ok(false)
            }
        };
        Ok(AclFilter {
            resource_type: if any_or(resource_type, "resource type")? {
                None
            } else {
                Some(
                    ResourceType::from_code(resource_type)
                        .ok_or(format!("unknown resource type {resource_type}"))?,
                )
            },
            resource_name: resource_name.map(str::to_string),
            pattern: match pattern_type {
                ANY => PatternFilter::Any,
                MATCH => PatternFilter::Match,
                code => PatternFilter::Exactly(
                    PatternType::from_code(code).ok_or(format!("unknown pattern type {code}"))?,
                ),
            },
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: if any_or(operation, "operation")? {
                None
            } else {
                Some(
                    Operation::from_code(operation)
                        .ok_or(format!("unknown operation {operation}"))?,
                )
            },
            permission: if any_or(permission, "permission type")? {
                None
            } else {
                Some(
                    Permission::from_code(permission)
                        .ok_or(format!("unknown permission type {permission}"))?,
                )
            },
        })
    }

    pub fn matches(&self, acl: &AclBinding) -> bool {
        let name_ok = match (&self.pattern, &self.resource_name) {
            (_, None) => true,
            (PatternFilter::Match, Some(name)) => match self.resource_type {
                Some(t) => acl.covers(t, name),
                None => acl.covers(acl.resource_type, name),
            },
            (_, Some(name)) => &acl.resource_name == name,
        };
        let pattern_ok = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => true,
            PatternFilter::Exactly(p) => acl.pattern_type == p,
        };
        name_ok
            && pattern_ok
            && self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.principal.as_ref().is_none_or(|p| p == &acl.principal)
            && self.host.as_ref().is_none_or(|h| h == &acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn codes_round_trip_and_names_parse_like_kafka_acls() {
        for op in Operation::EVERY {
            assert_eq!(Operation::from_code(op.code()), Some(op));
        }
        assert_eq!(
            Operation::parse("describe-configs"),
            Some(Operation::DescribeConfigs)
        );
        assert_eq!(
            Operation::parse("IdempotentWrite"),
            Some(Operation::IdempotentWrite)
        );
        assert_eq!(Operation::parse("Write"), Some(Operation::Write));
        assert_eq!(Operation::parse("fly"), None);
        assert_eq!(ResourceType::from_code(3), Some(ResourceType::Group));
        assert_eq!(ResourceType::from_code(7), None);
    }

    #[test]
    fn literal_wildcard_and_prefixed_patterns_cover_what_kafka_says() {
        let literal = binding("sensors", PatternType::Literal);
        assert!(literal.covers(ResourceType::Topic, "sensors"));
        assert!(!literal.covers(ResourceType::Topic, "sensors2"));
        assert!(!literal.covers(ResourceType::Group, "sensors"));
        assert!(binding("*", PatternType::Literal).covers(ResourceType::Topic, "any"));
        let prefixed = binding("cam.", PatternType::Prefixed);
        assert!(prefixed.covers(ResourceType::Topic, "cam.front"));
        assert!(!prefixed.covers(ResourceType::Topic, "door"));
    }

    #[test]
    fn invalid_bindings_are_named() {
        let mut b = binding("sensors", PatternType::Literal);
        assert_eq!(b.invalid(), None);
        b.principal = "alice".into();
        assert!(b.invalid().is_some_and(|w| w.contains("User:alice")));
        b.principal = "User:alice".into();
        b.host = "gateway.local".into();
        assert!(b.invalid().is_some());
        b.host = "10.0.0.7".into();
        b.resource_type = ResourceType::Cluster;
        assert!(b.invalid().is_some_and(|w| w.contains(CLUSTER_NAME)));
    }

    #[test]
    fn filters_select_by_field_and_match_finds_what_applies() {
        let acls = [
            binding("sensors", PatternType::Literal),
            binding("*", PatternType::Literal),
            binding("sen", PatternType::Prefixed),
            binding("doors", PatternType::Literal),
        ];
        let select = |f: &AclFilter| acls.iter().filter(|a| f.matches(a)).count();
        assert_eq!(select(&AclFilter::default()), 4);
        let exact = AclFilter {
            resource_name: Some("sensors".into()),
            pattern: PatternFilter::Exactly(PatternType::Literal),
            ..AclFilter::default()
        };
        assert_eq!(select(&exact), 1);
        let applies = AclFilter {
            resource_type: Some(ResourceType::Topic),
            resource_name: Some("sensors".into()),
            pattern: PatternFilter::Match,
            ..AclFilter::default()
        };
        assert_eq!(select(&applies), 3);
        let wire = AclFilter::from_wire(ANY, None, ANY, Some("User:bob"), None, ANY, ANY);
        assert_eq!(wire.map(|f| select(&f)), Ok(0));
        assert!(AclFilter::from_wire(0, None, ANY, None, None, ANY, ANY).is_err());
    }
}
