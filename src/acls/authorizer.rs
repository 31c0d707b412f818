//! The decision for one request, by Kafka's `StandardAuthorizer` rules: super users may do
//! anything; otherwise a matching DENY wins over any ALLOW; an ALLOW of READ, WRITE,
//! DELETE or ALTER implies DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS; a
//! resource no binding covers is denied (unless `allow_everyone_if_no_acl_found`).

use std::net::IpAddr;

use serde::Deserialize;

use super::store::{AclStore, AclStoreError};

/// `tern_authorization_denied_total{resource}`.
pub type Denied = prometheus_client::metrics::family::Family<
    Vec<(String, String)>,
    prometheus_client::metrics::counter::Counter,
>;
use super::{AclBinding, Operation, Permission, ResourceType};

/// `[kafka.authorization]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// Check ACLs on every request (Kafka's `authorizer.class.name`). Off: everything is
    /// allowed, and the ACL APIs answer SECURITY_DISABLED.
    pub enabled: bool,
    /// Principals allowed everything (`super.users`), e.g. `["User:admin"]`.
    pub super_users: Vec<String>,
    /// Allow a resource that no ACL covers (`allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizationConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        for user in &self.super_users {
            let valid = user
                .strip_prefix("User:")
                .is_some_and(|name| !name.is_empty());
            if !valid {
                return Err((
                    "kafka.authorization.super_users".into(),
                    format!("{user:?} is not User:<name>"),
                ));
            }
        }
        Ok(())
    }
}

/// Who is asking: the connection's principal and address.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: String,
    pub host: IpAddr,
}

impl Session {
    pub fn new(principal: String, host: IpAddr) -> Session {
        Session {
            principal,
            host: host.to_canonical(),
        }
    }
}

pub struct Authorizer {
    config: AuthorizationConfig,
    store: AclStore,
    denied: Denied,
}

impl Authorizer {
    pub fn open(
        config: AuthorizationConfig,
        data_dir: &std::path::Path,
        denied: Denied,
    ) -> Result<Authorizer, AclStoreError> {
        Ok(Authorizer {
            config,
            store: AclStore::open(data_dir)?,
            denied,
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn store(&self) -> &AclStore {
        &self.store
    }

    fn is_super(&self, session: &Session) -> bool {
        self.config.super_users.contains(&session.principal)
    }

    /// May `session` perform `operation` on the resource?
    pub fn authorize(
        &self,
        session: &Session,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let allowed = self.allows(session, operation, resource_type, name);
        if !allowed {
            self.denied
                .get_or_create(&vec![(
                    "resource".to_string(),
                    resource_type.name().to_string(),
                )])
                .inc();
            tracing::debug!(principal = %session.principal, host = %session.host,
                operation = operation.name(), resource = resource_type.name(), name,
                "denied by the ACLs");
        }
        allowed
    }

    /// May `session` perform `operation` on some resource of this type (Kafka's
    /// `authorizeByResourceType`, e.g. idempotent producers need WRITE on any topic)?
    pub fn authorize_any(
        &self,
        session: &Session,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.config.enabled || self.is_super(session) {
            return true;
        }
        let acls = self.store.snapshot();
        acls.iter().any(|acl| {
            acl.resource_type == resource_type
                && acl.permission == Permission::Allow
                && applies_to(acl, session)
                && (acl.operation == operation || acl.operation == Operation::All)
        })
    }

    /// Kafka's authorized-operations bit field (bit n = AclOperation n) for Metadata,
    /// DescribeGroups and DescribeCluster.
    pub fn authorized_operations(
        &self,
        session: &Session,
        resource_type: ResourceType,
        name: &str,
        supported: &[Operation],
    ) -> i32 {
        supported
            .iter()
            .filter(|op| self.allows(session, **op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    /// The decision, without counting or logging it.
    fn allows(
        &self,
        session: &Session,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        !self.config.enabled
            || self.is_super(session)
            || decide(
                &self.store.snapshot(),
                session,
                operation,
                resource_type,
                name,
                self.config.allow_everyone_if_no_acl_found,
            )
    }
}

fn applies_to(acl: &AclBinding, session: &Session) -> bool {
    (acl.principal == session.principal || acl.principal == "User:*")
        && (acl.host == "*"
            || acl
                .host
                .parse::<IpAddr>()
                .is_ok_and(|h| h.to_canonical() == session.host))
}

/// The rules themselves, without super users.
pub fn decide(
    acls: &[AclBinding],
    session: &Session,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
    allow_if_none: bool,
) -> bool {
    let mut covering = acls
        .iter()
        .filter(|acl| acl.covers(resource_type, name))
        .peekable();
    if covering.peek().is_none() {
        return allow_if_none;
    }
    let implied: &[Operation] = match operation {
        Operation::Describe => &[
            Operation::Describe,
            Operation::Read,
            Operation::Write,
            Operation::Delete,
            Operation::Alter,
        ],
        Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
        _ => std::slice::from_ref(&operation),
    };
    let mut allowed = false;
    for acl in covering.filter(|acl| applies_to(acl, session)) {
        match acl.permission {
            Permission::Deny if acl.operation == operation || acl.operation == Operation::All => {
                return false;
            }
            Permission::Allow
                if acl.operation == Operation::All || implied.contains(&acl.operation) =>
            {
                allowed = true;
            }
            _ => {}
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acls::PatternType;

    fn acl(
        principal: &str,
        op: Operation,
        rt: ResourceType,
        name: &str,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn alice() -> Session {
        Session::new("User:alice".into(), "10.0.0.7".parse().unwrap())
    }

    #[test]
    fn allow_implies_describe_deny_wins_and_nothing_is_denied() {
        use Operation::*;
        use ResourceType::Topic;
        let acls = vec![
            acl("User:alice", Write, Topic, "sensors", Permission::Allow),
            acl(
                "User:alice",
                AlterConfigs,
                Topic,
                "sensors",
                Permission::Allow,
            ),
        ];
        let s = alice();
        assert!(decide(&acls, &s, Write, Topic, "sensors", false));
        assert!(decide(&acls, &s, Describe, Topic, "sensors", false));
        assert!(decide(&acls, &s, DescribeConfigs, Topic, "sensors", false));
        assert!(!decide(&acls, &s, Read, Topic, "sensors", false));
        // Not covered by any binding: deny by default, unless configured otherwise.
        assert!(!decide(&acls, &s, Read, Topic, "doors", false));
        assert!(decide(&acls, &s, Read, Topic, "doors", true));
        // Covered, but only for someone else: denied even with allow_if_none.
        let bob = Session::new("User:bob".into(), s.host);
        assert!(!decide(&acls, &bob, Write, Topic, "sensors", true));

        let mut with_deny = acls.clone();
        with_deny.push(acl("User:*", All, Topic, "*", Permission::Deny));
        assert!(!decide(&with_deny, &s, Write, Topic, "sensors", false));
    }

    #[test]
    fn hosts_and_wildcard_principals_match() {
        use Operation::*;
        use ResourceType::Group;
        let mut only_there = acl("User:*", Read, Group, "dashboards", Permission::Allow);
        only_there.host = "10.0.0.8".into();
        let acls = vec![only_there];
        assert!(!decide(&acls, &alice(), Read, Group, "dashboards", false));
        let there = Session::new("User:alice".into(), "10.0.0.8".parse().unwrap());
        assert!(decide(&acls, &there, Read, Group, "dashboards", false));
        // An IPv4 client seen through an IPv6 socket is the same host.
        let mapped = Session::new("User:carol".into(), "::ffff:10.0.0.8".parse().unwrap());
        assert!(decide(&acls, &mapped, Read, Group, "dashboards", false));
    }

    #[test]
    fn super_users_and_a_disabled_authorizer_allow_everything() {
        let dir = tempfile::tempdir().unwrap();
        let denied = Denied::default();
        let config = AuthorizationConfig {
            enabled: true,
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        };
        let on = Authorizer::open(config.clone(), dir.path(), denied.clone()).unwrap();
        let admin = Session::new("User:admin".into(), "127.0.0.1".parse().unwrap());
        assert!(on.authorize(
            &admin,
            Operation::Alter,
            ResourceType::Cluster,
            "kafka-cluster"
        ));
        assert!(!on.authorize(&alice(), Operation::Read, ResourceType::Topic, "sensors"));
        let topic = vec![("resource".to_string(), "topic".to_string())];
        assert_eq!(denied.get_or_create(&topic).get(), 1);
        let off = Authorizer::open(
            AuthorizationConfig {
                enabled: false,
                ..config
            },
            dir.path(),
            denied,
        )
        .unwrap();
        assert!(off.authorize(&alice(), Operation::Read, ResourceType::Topic, "sensors"));
        assert_eq!(
            on.authorized_operations(
                &admin,
                ResourceType::Topic,
                "x",
                &[Operation::Read, Operation::Write]
            ),
            (1 << 3) | (1 << 4)
        );
    }
}
