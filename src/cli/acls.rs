//! `tern acls`: the ACLs of the Kafka listeners, with `kafka-acls.sh`'s flags, stored in
//! `<data_dir>/acls.json` (a running tern applies changes within a second). Admin clients
//! can manage the same ACLs over the Kafka protocol (CreateAcls/DescribeAcls/DeleteAcls).

use std::path::Path;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::acls::{
    self, AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
    CLUSTER_NAME,
};

#[derive(Subcommand, Debug)]
pub enum AclsCommand {
    /// Add ACLs: every principal × host × operation × resource given.
    Add(AclArgs),
    /// Remove the ACLs that match (flags left out match anything).
    Remove(AclArgs),
    /// List ACLs (flags left out match anything).
    List(AclArgs),
}

#[derive(Args, Debug, Default)]
pub struct AclArgs {
    /// Principals to allow (User:<name>, User:* for everyone).
    #[arg(long = "allow-principal")]
    allow_principals: Vec<String>,
    /// Principals to deny.
    #[arg(long = "deny-principal")]
    deny_principals: Vec<String>,
    /// Hosts (IP addresses) the ACL applies to; default any (*).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Operations: read, write, create, delete, alter, describe, describe-configs,
    /// alter-configs, idempotent-write, cluster-action, all.
    #[arg(long = "operation")]
    operations: Vec<String>,
    /// Topics (a literal name, * for all, or a prefix with --resource-pattern-type prefixed).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Consumer groups.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The cluster itself (create topics, describe, manage ACLs, idempotent writes).
    #[arg(long)]
    cluster: bool,
    /// literal (default) or prefixed.
    #[arg(long = "resource-pattern-type")]
    pattern: Option<String>,
    /// Shortcut: WRITE, DESCRIBE and CREATE on the topics (as kafka-acls --producer).
    #[arg(long)]
    producer: bool,
    /// Shortcut: READ and DESCRIBE on the topics, READ on the groups (kafka-acls --consumer).
    #[arg(long)]
    consumer: bool,
}

fn resources(args: &AclArgs) -> Vec<(ResourceType, String)> {
    let mut out: Vec<(ResourceType, String)> = Vec::new();
    out.extend(args.topics.iter().map(|t| (ResourceType::Topic, t.clone())));
    out.extend(args.groups.iter().map(|g| (ResourceType::Group, g.clone())));
    if args.cluster {
        out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
    }
    out
}

fn operations(args: &AclArgs) -> anyhow::Result<Vec<Operation>> {
    args.operations
        .iter()
        .map(|o| Operation::parse(o).with_context(|| format!("unknown operation {o:?}")))
        .collect()
}

fn pattern(args: &AclArgs) -> anyhow::Result<Option<PatternType>> {
    Ok(match args.pattern.as_deref() {
        None => None,
        Some("literal") => Some(PatternType::Literal),
        Some("prefixed") => Some(PatternType::Prefixed),
        Some(other) => bail!("--resource-pattern-type {other:?}: use literal or prefixed"),
    })
}

fn principals(args: &AclArgs) -> Vec<(Permission, String)> {
    let allow = args
        .allow_principals
        .iter()
        .map(|p| (Permission::Allow, p.clone()));
    let deny = args
        .deny_principals
        .iter()
        .map(|p| (Permission::Deny, p.clone()));
    allow.chain(deny).collect()
}

/// The bindings `add` stores.
fn bindings(args: &AclArgs) -> anyhow::Result<Vec<AclBinding>> {
    let pattern = pattern(args)?.unwrap_or(PatternType::Literal);
    let explicit = operations(args)?;
    let hosts = if args.hosts.is_empty() {
        vec!["*".to_string()]
    } else {
        args.hosts.clone()
    };
    if principals(args).is_empty() {
        bail!("name who: --allow-principal User:<name> or --deny-principal User:<name>");
    }
    if resources(args).is_empty() {
        bail!("name what: --topic, --group and/or --cluster");
    }
    if explicit.is_empty() && !args.producer && !args.consumer {
        bail!("name the operations: --operation (or --producer / --consumer)");
    }
    let mut out = Vec::new();
    for (permission, principal) in principals(args) {
        for host in &hosts {
            for (resource_type, name) in resources(args) {
                let mut ops = explicit.clone();
                match resource_type {
                    ResourceType::Topic if args.producer => {
                        ops.extend([Operation::Write, Operation::Describe, Operation::Create])
                    }
                    _ => {}
                }
                match resource_type {
                    ResourceType::Topic if args.consumer => {
                        ops.extend([Operation::Read, Operation::Describe])
                    }
                    ResourceType::Group if args.consumer => ops.push(Operation::Read),
                    _ => {}
                }
                ops.sort();
                ops.dedup();
                for operation in ops {
                    let binding = AclBinding {
                        resource_type,
                        resource_name: name.clone(),
                        pattern_type: pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation,
                        permission,
                    };
                    if let Some(why) = binding.invalid() {
                        bail!("{}: {why}", binding.describe());
                    }
                    out.push(binding);
                }
            }
        }
    }
    Ok(out)
}

/// The filters `remove` and `list` apply: one per principal × resource × operation
/// given, any for what is left out.
fn filters(args: &AclArgs) -> anyhow::Result<Vec<AclFilter>> {
    let pattern = match pattern(args)? {
        Some(p) => PatternFilter::Exactly(p),
        None => PatternFilter::Any,
    };
    let who: Vec<(Option<Permission>, Option<String>)> = match principals(args) {
        p if p.is_empty() => vec![(None, None)],
        p => p
            .into_iter()
            .map(|(perm, name)| (Some(perm), Some(name)))
            .collect(),
    };
    let what: Vec<(Option<ResourceType>, Option<String>)> = match resources(args) {
        r if r.is_empty() => vec![(None, None)],
        r => r.into_iter().map(|(t, n)| (Some(t), Some(n))).collect(),
    };
    let ops: Vec<Option<Operation>> = match operations(args)? {
        o if o.is_empty() => vec![None],
        o => o.into_iter().map(Some).collect(),
    };
    let hosts: Vec<Option<String>> = match &args.hosts {
        h if h.is_empty() => vec![None],
        h => h.iter().cloned().map(Some).collect(),
    };
    let mut out = Vec::new();
    for (permission, principal) in &who {
        for (resource_type, resource_name) in &what {
            for operation in &ops {
                for host in &hosts {
                    out.push(AclFilter {
                        resource_type: *resource_type,
                        resource_name: resource_name.clone(),
                        pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: *operation,
                        permission: *permission,
                    });
                }
            }
        }
    }
    Ok(out)
}

pub fn run(dir: &Path, command: AclsCommand) -> anyhow::Result<()> {
    let path = acls::store::acls_path(dir);
    match command {
        AclsCommand::Add(args) => {
            let wanted = bindings(&args)?;
            let added = acls::store::add(dir, &wanted)?;
            for b in &wanted {
                println!("{}", b.describe());
            }
            println!("{added} ACL(s) added to {}", path.display());
        }
        AclsCommand::Remove(args) => {
            let any_given = !principals(&args).is_empty()
                || !resources(&args).is_empty()
                || !args.operations.is_empty()
                || !args.hosts.is_empty();
            if !any_given {
                bail!("name what to remove (a principal, resource, operation or host); refusing to remove every ACL");
            }
            let removed = acls::store::remove(dir, &filters(&args)?)?;
            let count: usize = removed.iter().map(Vec::len).sum();
            for b in removed.iter().flatten() {
                println!("removed: {}", b.describe());
            }
            println!("{count} ACL(s) removed from {}", path.display());
        }
        AclsCommand::List(args) => {
            let filters = filters(&args)?;
            for b in acls::store::list(dir)? {
                if filters.iter().any(|f| f.matches(&b)) {
                    println!("{}", b.describe());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_and_consumer_shortcuts_expand_like_kafka_acls() {
        let args = AclArgs {
            allow_principals: vec!["User:alice".into()],
            topics: vec!["sensors".into()],
            groups: vec!["dash".into()],
            consumer: true,
            ..AclArgs::default()
        };
        let b = bindings(&args).unwrap();
        let ops: Vec<(ResourceType, Operation)> =
            b.iter().map(|b| (b.resource_type, b.operation)).collect();
        assert_eq!(
            ops,
            vec![
                (ResourceType::Topic, Operation::Read),
                (ResourceType::Topic, Operation::Describe),
                (ResourceType::Group, Operation::Read),
            ]
        );
        let missing_who = AclArgs {
            topics: vec!["sensors".into()],
            producer: true,
            ..AclArgs::default()
        };
        assert!(bindings(&missing_who).is_err());
    }

    #[test]
    fn add_list_remove_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let args = AclArgs {
            allow_principals: vec!["User:alice".into()],
            operations: vec!["write".into()],
            topics: vec!["sensors".into()],
            ..AclArgs::default()
        };
        run(dir.path(), AclsCommand::Add(args)).unwrap();
        assert_eq!(acls::store::list(dir.path()).unwrap().len(), 1);
        assert!(run(dir.path(), AclsCommand::Remove(AclArgs::default())).is_err());
        let by_topic = AclArgs {
            topics: vec!["sensors".into()],
            ..AclArgs::default()
        };
        run(dir.path(), AclsCommand::Remove(by_topic)).unwrap();
        assert!(acls::store::list(dir.path()).unwrap().is_empty());
    }
}
