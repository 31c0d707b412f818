//! CreateAcls, DescribeAcls, DeleteAcls: the ACLs in `<data_dir>/acls.json`, managed the
//! way `kafka-acls.sh` and admin clients expect. Creating and deleting needs ALTER on the
//! cluster, describing needs DESCRIBE; with the authorizer off they answer
//! SECURITY_DISABLED, as Kafka does.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::ResponseError;

use super::access::Access;
use super::str_bytes;
use crate::acls::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};

fn refusal(access: &Access, operation: Operation) -> Option<(ResponseError, String)> {
    if !access.broker.authorizer.enabled() {
        Some((
            ResponseError::SecurityDisabled,
            "ACLs are off: set [kafka.authorization] enabled = true".into(),
        ))
    } else if !access.cluster(operation) {
        Some((
            ResponseError::ClusterAuthorizationFailed,
            format!(
                "{} on the cluster is needed to manage ACLs",
                operation.name()
            ),
        ))
    } else {
        None
    }
}

/// A binding from CreateAcls' wire codes, or why it is invalid.
fn binding(
    c: &kafka_protocol::messages::create_acls_request::AclCreation,
) -> Result<AclBinding, String> {
    let binding = AclBinding {
        resource_type: ResourceType::from_code(c.resource_type).ok_or(format!(
            "resource type {} cannot hold ACLs",
            c.resource_type
        ))?,
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_code(c.resource_pattern_type).ok_or(format!(
            "pattern type {} is not LITERAL (3) or PREFIXED (4)",
            c.resource_pattern_type
        ))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_code(c.operation).ok_or(format!(
            "operation {} is not one an ACL can name",
            c.operation
        ))?,
        permission: Permission::from_code(c.permission_type).ok_or(format!(
            "permission {} is not ALLOW (3) or DENY (2)",
            c.permission_type
        ))?,
    };
    match binding.invalid() {
        Some(why) => Err(why),
        None => Ok(binding),
    }
}

pub fn create(access: &Access, request: CreateAclsRequest, _version: i16) -> CreateAclsResponse {
    let result = |code: ResponseError, message: String| {
        AclCreationResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(&message)))
    };
    if let Some((code, why)) = refusal(access, Operation::Alter) {
        let results = request
            .creations
            .iter()
            .map(|_| result(code, why.clone()))
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let parsed: Vec<Result<AclBinding, String>> = request.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = parsed
        .iter()
        .filter_map(|b| b.as_ref().ok().cloned())
        .collect();
    let stored = access.broker.authorizer.store().add(&valid);
    if let Err(e) = &stored {
        tracing::error!(error = %e, "cannot store ACLs");
    }
    let results = parsed
        .into_iter()
        .map(|b| match (b, &stored) {
            (Err(why), _) => result(ResponseError::InvalidRequest, why),
            (Ok(_), Err(e)) => result(ResponseError::UnknownServerError, e.to_string()),
            (Ok(b), Ok(_)) => {
                tracing::info!(acl = %b.describe(), by = %access.session.principal, "ACL created");
                AclCreationResult::default()
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe(
    access: &Access,
    request: DescribeAclsRequest,
    _version: i16,
) -> DescribeAclsResponse {
    let fail = |code: ResponseError, message: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(&message)))
    };
    if let Some((code, why)) = refusal(access, Operation::Describe) {
        return fail(code, why);
    }
    let wanted = match AclFilter::from_wire(
        request.resource_type_filter,
        request.resource_name_filter.as_deref(),
        request.pattern_type_filter,
        request.principal_filter.as_deref(),
        request.host_filter.as_deref(),
        request.operation,
        request.permission_type,
    ) {
        Ok(f) => f,
        Err(why) => return fail(ResponseError::InvalidRequest, why),
    };
    let acls = access.broker.authorizer.store().snapshot();
    let mut by_resource: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for acl in acls.iter().filter(|a| wanted.matches(a)) {
        by_resource
            .entry((
                acl.resource_type,
                acl.resource_name.clone(),
                acl.pattern_type,
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(&acl.principal))
                    .with_host(str_bytes(&acl.host))
                    .with_operation(acl.operation.code())
                    .with_permission_type(acl.permission.code()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((rt, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt.code())
                .with_resource_name(str_bytes(&name))
                .with_pattern_type(pattern.code())
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub fn delete(access: &Access, request: DeleteAclsRequest, _version: i16) -> DeleteAclsResponse {
    let fail = |code: ResponseError, message: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(&message)))
    };
    if let Some((code, why)) = refusal(access, Operation::Alter) {
        let results = request
            .filters
            .iter()
            .map(|_| fail(code, why.clone()))
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let parsed: Vec<Result<AclFilter, String>> = request
        .filters
        .iter()
        .map(|f| {
            AclFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclFilter> = parsed
        .iter()
        .filter_map(|f| f.as_ref().ok().cloned())
        .collect();
    let removed = access.broker.authorizer.store().remove(&valid);
    let mut removed = match removed {
        Ok(removed) => removed.into_iter(),
        Err(e) => {
            tracing::error!(error = %e, "cannot delete ACLs");
            let results = parsed
                .iter()
                .map(|_| fail(ResponseError::UnknownServerError, e.to_string()))
                .collect();
            return DeleteAclsResponse::default().with_filter_results(results);
        }
    };
    let results = parsed
        .into_iter()
        .map(|f| match f {
            Err(why) => fail(ResponseError::InvalidRequest, why),
            Ok(_) => {
                let gone = removed.next().unwrap_or_default();
                for b in &gone {
                    tracing::info!(acl = %b.describe(), by = %access.session.principal, "ACL deleted");
                }
                DeleteAclsFilterResult::default().with_matching_acls(
                    gone.iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.resource_type.code())
                                .with_resource_name(str_bytes(&b.resource_name))
                                .with_pattern_type(b.pattern_type.code())
                                .with_principal(str_bytes(&b.principal))
                                .with_host(str_bytes(&b.host))
                                .with_operation(b.operation.code())
                                .with_permission_type(b.permission.code())
                        })
                        .collect(),
                )
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
