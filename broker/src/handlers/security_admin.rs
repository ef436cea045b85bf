//! The security admin APIs: DescribeUserScramCredentials (50), AlterUserScramCredentials
//! (51), DescribeAcls (29), CreateAcls (30) and DeleteAcls (31). Changes go to the active
//! controller as one `SecurityOp` (`metadata/security_ops.rs`) and are answered once this
//! broker applied them; descriptions read the shard's image and authorizer. As in Kafka,
//! changes need ALTER and descriptions DESCRIBE on the cluster, and the ACL APIs answer
//! SECURITY_DISABLED when no authorizer is configured.
//!
//! ```text
//!  Alter*/Create/Delete ─► validate shape ─► controller SecurityOp ─► outcomes ─► answer
//!  Describe*            ─► shard image / authorizer ─► answer
//! ```

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, CreateAclsRequest,
    CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_proto::metadata::{RemoveUserScramCredentialRecord, UserScramCredentialRecord};

use super::admin::{admin_timeout, controller_answer};
use crate::connection::Conn;
use crate::metadata::controller::{MetadataOp, MetadataOpResult};
use crate::metadata::security_ops::{binding_of, record_of, wire_of, SecurityOp, SecurityOutcome};
use crate::security::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
};
use crate::security::scram::{ScramCredential, ScramMechanism};
use crate::shard::ShardCtx;

const CLUSTER_AUTH: i16 = ResponseError::ClusterAuthorizationFailed.code();
const SECURITY_DISABLED: i16 = ResponseError::SecurityDisabled.code();

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

/// Sends `op` to the controller; the outcomes, or the error for every item.
async fn submit(ctx: &Rc<ShardCtx>, op: SecurityOp) -> Result<Vec<SecurityOutcome>, (i16, String)> {
    match controller_answer(ctx, MetadataOp::Security(op), admin_timeout(0)).await? {
        MetadataOpResult::Security(o) => Ok(o),
        _ => Err((
            ResponseError::NotController.code(),
            "controller unavailable".into(),
        )),
    }
}

pub(crate) async fn describe_scram(
    ctx: Rc<ShardCtx>,
    req: DescribeUserScramCredentialsRequest,
    conn: Rc<Conn>,
) -> DescribeUserScramCredentialsResponse {
    let resp = DescribeUserScramCredentialsResponse::default();
    if !ctx.access.allows_cluster(&conn, AclOperation::Describe) {
        return resp.with_error_code(CLUSTER_AUTH);
    }
    let image = ctx.image.borrow();
    let mut by_user: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for c in image.scram_credentials() {
        by_user.entry(c.name.clone()).or_default().push(
            CredentialInfo::default()
                .with_mechanism(i8::try_from(c.mechanism).unwrap_or(0))
                .with_iterations(c.iterations),
        );
    }
    let results = match req.users {
        None => by_user
            .into_iter()
            .map(|(user, infos)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user))
                    .with_credential_infos(infos)
            })
            .collect(),
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            names
                .iter()
                .map(|n| {
                    let r = DescribeUserScramCredentialsResult::default()
                        .with_user(StrBytes::from_string(n.clone()));
                    if names.iter().filter(|m| *m == n).count() > 1 {
                        return r
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(text("Cannot describe SCRAM credentials for the same user twice in a single request"));
                    }
                    match by_user.get(n) {
                        Some(infos) => r.with_credential_infos(infos.clone()),
                        None => r
                            .with_error_code(ResponseError::ResourceNotFound.code())
                            .with_error_message(text(format!(
                                "Attempt to describe a user credential that does not exist: {n}"
                            ))),
                    }
                })
                .collect()
        }
    };
    resp.with_results(results)
}

pub(crate) async fn alter_scram(
    ctx: Rc<ShardCtx>,
    req: AlterUserScramCredentialsRequest,
    conn: Rc<Conn>,
) -> AlterUserScramCredentialsResponse {
    // per user, in first-mention order
    let mut users: Vec<String> = Vec::new();
    for n in req
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(req.upsertions.iter().map(|u| u.name.to_string()))
    {
        if !users.contains(&n) {
            users.push(n);
        }
    }
    let result = |user: &str, code: i16, msg: Option<String>| {
        AlterUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_error_code(code)
            .with_error_message(msg.map(StrBytes::from_string))
    };
    if !ctx.access.allows_cluster(&conn, AclOperation::Alter) {
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .iter()
                .map(|u| result(u, CLUSTER_AUTH, None))
                .collect(),
        );
    }
    let mut failed: BTreeMap<String, (i16, String)> = BTreeMap::new();
    let mut op = SecurityOp::default();
    let mut seen: Vec<(String, i8)> = Vec::new();
    let mechs = req
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism, None))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism, Some(u))),
        );
    for (name, mech, upsert) in mechs {
        if failed.contains_key(&name) {
            continue;
        }
        let fail = |code: ResponseError, msg: &str| (code.code(), msg.to_string());
        let problem = if name.is_empty() {
            Some(fail(
                ResponseError::UnacceptableCredential,
                "Username must not be empty",
            ))
        } else if seen.contains(&(name.clone(), mech)) {
            Some(fail(
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request",
            ))
        } else {
            match (ScramMechanism::from_type_code(mech), upsert) {
                (None, _) => Some(fail(
                    ResponseError::UnsupportedSaslMechanism,
                    "Unknown SCRAM mechanism",
                )),
                (Some(m), Some(u)) => match m.validate_iterations(u.iterations) {
                    Err(why) => Some(fail(ResponseError::UnacceptableCredential, why)),
                    Ok(()) if u.salt.is_empty() || u.salted_password.len() != m.hash_len() => {
                        Some(fail(
                            ResponseError::UnacceptableCredential,
                            "The salt must not be empty and the salted password must be one hash long",
                        ))
                    }
                    Ok(()) => {
                        let c = ScramCredential::from_salted_password(
                            m,
                            &u.salt,
                            &u.salted_password,
                            u.iterations as u32,
                        );
                        op.scram_upserts.push(UserScramCredentialRecord {
                            name: name.clone(),
                            mechanism: i32::from(mech),
                            salt: c.salt,
                            stored_key: c.stored_key,
                            server_key: c.server_key,
                            iterations: u.iterations,
                        });
                        None
                    }
                },
                (Some(_), None) => {
                    op.scram_deletions.push(RemoveUserScramCredentialRecord {
                        name: name.clone(),
                        mechanism: i32::from(mech),
                    });
                    None
                }
            }
        };
        seen.push((name.clone(), mech));
        if let Some(p) = problem {
            failed.insert(name, p);
        }
    }
    op.scram_upserts.retain(|u| !failed.contains_key(&u.name));
    op.scram_deletions.retain(|d| !failed.contains_key(&d.name));
    let mut outcomes: BTreeMap<String, (i16, Option<String>)> = BTreeMap::new();
    if !op.scram_upserts.is_empty() || !op.scram_deletions.is_empty() {
        match submit(&ctx, op).await {
            Ok(o) => {
                for o in o {
                    outcomes.insert(o.name, (i16::try_from(o.error).unwrap_or(-1), o.message));
                }
            }
            Err((code, msg)) => {
                for u in &users {
                    outcomes.insert(u.clone(), (code, Some(msg.clone())));
                }
            }
        }
    }
    let results = users
        .iter()
        .map(|u| match failed.get(u) {
            Some((code, msg)) => result(u, *code, Some(msg.clone())),
            None => {
                let (code, msg) = outcomes.get(u).cloned().unwrap_or((0, None));
                result(u, code, msg)
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn filter_of(
    rt: i8,
    name: Option<&StrBytes>,
    pt: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    op: i8,
    perm: i8,
) -> AclBindingFilter {
    AclBindingFilter {
        resource_type: ResourceType::from_code(rt),
        resource_name: name.map(|s| s.to_string()),
        pattern_type: PatternType::from_code(pt),
        principal: principal.map(|s| s.to_string()),
        host: host.map(|s| s.to_string()),
        operation: AclOperation::from_code(op),
        permission: AclPermissionType::from_code(perm),
    }
}

pub(crate) async fn describe_acls(
    ctx: Rc<ShardCtx>,
    req: DescribeAclsRequest,
    conn: Rc<Conn>,
) -> DescribeAclsResponse {
    let resp = DescribeAclsResponse::default();
    if !ctx.access.enabled() {
        return resp
            .with_error_code(SECURITY_DISABLED)
            .with_error_message(text("No Authorizer is configured."));
    }
    if !ctx.access.allows_cluster(&conn, AclOperation::Describe) {
        return resp.with_error_code(CLUSTER_AUTH);
    }
    let filter = filter_of(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    );
    if let Err(e) = filter.validate() {
        return resp
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(text(e.0));
    }
    let image = ctx.image.borrow();
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in image.acls().map(binding_of).filter(|b| filter.matches(b)) {
        by_resource
            .entry((
                b.resource_type.code(),
                b.resource_name.clone(),
                b.pattern_type.code(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(b.principal))
                    .with_host(StrBytes::from_string(b.host))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
    }
    resp.with_resources(
        by_resource
            .into_iter()
            .map(|((rt, name, pt), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(StrBytes::from_string(name))
                    .with_pattern_type(pt)
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub(crate) async fn create_acls(
    ctx: Rc<ShardCtx>,
    req: CreateAclsRequest,
    conn: Rc<Conn>,
) -> CreateAclsResponse {
    let each = |code: i16, msg: Option<String>| {
        req.creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(msg.clone().map(StrBytes::from_string))
            })
            .collect::<Vec<_>>()
    };
    if !ctx.access.enabled() {
        let msg = Some("No Authorizer is configured.".to_string());
        return CreateAclsResponse::default().with_results(each(SECURITY_DISABLED, msg));
    }
    if !ctx.access.allows_cluster(&conn, AclOperation::Alter) {
        return CreateAclsResponse::default().with_results(each(CLUSTER_AUTH, None));
    }
    let mut results: Vec<Option<(i16, String)>> = Vec::new();
    let mut op = SecurityOp::default();
    for c in &req.creations {
        let b = AclBinding {
            resource_type: ResourceType::from_code(c.resource_type),
            resource_name: c.resource_name.to_string(),
            pattern_type: PatternType::from_code(c.resource_pattern_type),
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: AclOperation::from_code(c.operation),
            permission: AclPermissionType::from_code(c.permission_type),
        };
        match b.validate() {
            Ok(_) => {
                op.acl_creations.push(record_of(&b));
                results.push(None);
            }
            Err(e) => results.push(Some((ResponseError::InvalidRequest.code(), e.0))),
        }
    }
    let sent = if op.acl_creations.is_empty() {
        Ok(Vec::new())
    } else {
        submit(&ctx, op).await
    };
    let results = results
        .into_iter()
        .map(|r| {
            let (code, msg) = match (r, &sent) {
                (Some((code, msg)), _) => (code, Some(msg)),
                (None, Ok(_)) => (0, None),
                (None, Err((code, msg))) => (*code, Some(msg.clone())),
            };
            AclCreationResult::default()
                .with_error_code(code)
                .with_error_message(msg.map(StrBytes::from_string))
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub(crate) async fn delete_acls(
    ctx: Rc<ShardCtx>,
    req: DeleteAclsRequest,
    conn: Rc<Conn>,
) -> DeleteAclsResponse {
    let each = |code: i16, msg: Option<&str>| {
        req.filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(msg.and_then(text))
            })
            .collect::<Vec<_>>()
    };
    if !ctx.access.enabled() {
        let results = each(SECURITY_DISABLED, Some("No Authorizer is configured."));
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    if !ctx.access.allows_cluster(&conn, AclOperation::Alter) {
        return DeleteAclsResponse::default().with_filter_results(each(CLUSTER_AUTH, None));
    }
    let filters: Vec<AclBindingFilter> = req
        .filters
        .iter()
        .map(|f| {
            filter_of(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let invalid: Vec<Option<String>> = filters
        .iter()
        .map(|f| f.validate().err().map(|e| e.0))
        .collect();
    let op = SecurityOp {
        acl_deletions: filters
            .iter()
            .zip(&invalid)
            .filter(|(_, bad)| bad.is_none())
            .map(|(f, _)| wire_of(f))
            .collect(),
        ..Default::default()
    };
    let sent = if op.acl_deletions.is_empty() {
        Ok(Vec::new())
    } else {
        submit(&ctx, op).await
    };
    let mut outcomes = match &sent {
        Ok(o) => o.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = invalid
        .into_iter()
        .map(|bad| {
            let r = DeleteAclsFilterResult::default();
            if let Some(msg) = bad {
                return r
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(text(msg));
            }
            if let Err((code, msg)) = &sent {
                return r
                    .with_error_code(*code)
                    .with_error_message(text(msg.clone()));
            }
            let matched = outcomes.next().map(|o| o.acls).unwrap_or_default();
            r.with_matching_acls(
                matched
                    .iter()
                    .map(binding_of)
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type.code())
                            .with_resource_name(StrBytes::from_string(b.resource_name))
                            .with_pattern_type(b.pattern_type.code())
                            .with_principal(StrBytes::from_string(b.principal))
                            .with_host(StrBytes::from_string(b.host))
                            .with_operation(b.operation.code())
                            .with_permission_type(b.permission.code())
                    })
                    .collect(),
            )
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
