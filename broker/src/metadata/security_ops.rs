//! The controller's security changes, turned into metadata records against the image:
//! SCRAM credentials (AlterUserScramCredentials, `sluice user add` bootstrap) and ACLs
//! (CreateAcls, DeleteAcls). The handlers validate the request's shape; what depends on
//! the current state (does the credential exist, which ACLs does a filter match) is
//! decided here, on the active controller, so concurrent requests cannot race. The op and
//! its outcome are prost messages, the same in memory and on the controller RPC.
//!
//! ```text
//!  handler ─► SecurityOp ─► controller: apply(image) ─► records + [SecurityOutcome]
//! ```

use prost::Message;
use sluice_proto::metadata::{
    AccessControlEntryRecord, MetadataRecord, Record, RemoveAccessControlEntryRecord,
    RemoveUserScramCredentialRecord, UserScramCredentialRecord,
};

use super::image::MetadataImage;
use crate::security::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
};

/// Kafka's RESOURCE_NOT_FOUND.
const RESOURCE_NOT_FOUND: i16 = 91;

/// One security change request (only one kind of list is set per request).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SecurityOp {
    /// Credentials to set, per user and mechanism.
    #[prost(message, repeated, tag = "1")]
    pub(crate) scram_upserts: Vec<UserScramCredentialRecord>,
    /// Credentials to delete; a missing one fails its user with RESOURCE_NOT_FOUND.
    #[prost(message, repeated, tag = "2")]
    pub(crate) scram_deletions: Vec<RemoveUserScramCredentialRecord>,
    /// ACLs to create (ids are given here); an identical existing ACL is kept.
    #[prost(message, repeated, tag = "3")]
    pub(crate) acl_creations: Vec<AccessControlEntryRecord>,
    /// Filters whose matching ACLs are deleted.
    #[prost(message, repeated, tag = "4")]
    pub(crate) acl_deletions: Vec<AclFilterWire>,
    /// Bootstrap credentials (`sluice user add`): set only for users that have no
    /// credential of that mechanism yet, so a restart never undoes a later change.
    #[prost(bool, tag = "5")]
    pub(crate) only_if_absent: bool,
}

/// A DeleteAcls filter on the wire (Kafka codes; absent strings match anything).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct AclFilterWire {
    #[prost(int32, tag = "1")]
    pub(crate) resource_type: i32,
    #[prost(string, optional, tag = "2")]
    pub(crate) resource_name: Option<String>,
    #[prost(int32, tag = "3")]
    pub(crate) pattern_type: i32,
    #[prost(string, optional, tag = "4")]
    pub(crate) principal: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub(crate) host: Option<String>,
    #[prost(int32, tag = "6")]
    pub(crate) operation: i32,
    #[prost(int32, tag = "7")]
    pub(crate) permission_type: i32,
}

/// The outcome for one user (SCRAM), one creation or one deletion filter (ACLs, with the
/// ACLs it deleted), in request order.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SecurityOutcome {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(int32, tag = "2")]
    pub(crate) error: i32,
    #[prost(string, optional, tag = "3")]
    pub(crate) message: Option<String>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) acls: Vec<AccessControlEntryRecord>,
}

/// The records of `op` against `image`, and one outcome per user / creation / filter.
pub(crate) fn apply(
    image: &MetadataImage,
    op: SecurityOp,
) -> (Vec<MetadataRecord>, Vec<SecurityOutcome>) {
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    if !op.scram_upserts.is_empty() || !op.scram_deletions.is_empty() {
        // per user, in first-mention order: all of a user's changes apply, or none
        let mut users: Vec<String> = Vec::new();
        for name in op
            .scram_deletions
            .iter()
            .map(|d| &d.name)
            .chain(op.scram_upserts.iter().map(|u| &u.name))
        {
            if !users.contains(name) {
                users.push(name.clone());
            }
        }
        for user in users {
            let missing = op
                .scram_deletions
                .iter()
                .filter(|d| d.name == user)
                .find(|d| image.scram(&d.name, d.mechanism).is_none());
            if let Some(d) = missing {
                outcomes.push(SecurityOutcome {
                    name: user,
                    error: i32::from(RESOURCE_NOT_FOUND),
                    message: Some(format!(
                        "Attempt to delete a user credential that does not exist (mechanism {})",
                        d.mechanism
                    )),
                    acls: Vec::new(),
                });
                continue;
            }
            for d in op.scram_deletions.iter().filter(|d| d.name == user) {
                records.push(MetadataRecord::new(Record::RemoveUserScramCredential(
                    d.clone(),
                )));
            }
            for u in op.scram_upserts.iter().filter(|u| u.name == user) {
                if op.only_if_absent && image.scram(&u.name, u.mechanism).is_some() {
                    continue;
                }
                records.push(MetadataRecord::new(Record::UserScramCredential(u.clone())));
            }
            outcomes.push(SecurityOutcome {
                name: user,
                ..Default::default()
            });
        }
    }
    for c in op.acl_creations {
        let exists = image.acls().any(|a| same_binding(a, &c));
        if !exists {
            records.push(MetadataRecord::new(Record::AccessControlEntry(c.clone())));
        }
        outcomes.push(SecurityOutcome::default());
    }
    let mut deleted: Vec<Vec<u8>> = Vec::new();
    for f in op.acl_deletions {
        let filter = filter_of(&f);
        let matched: Vec<AccessControlEntryRecord> = image
            .acls()
            .filter(|a| filter.matches(&binding_of(a)))
            .cloned()
            .collect();
        for a in &matched {
            if !deleted.contains(&a.id) {
                deleted.push(a.id.clone());
                records.push(MetadataRecord::new(Record::RemoveAccessControlEntry(
                    RemoveAccessControlEntryRecord { id: a.id.clone() },
                )));
            }
        }
        outcomes.push(SecurityOutcome {
            acls: matched,
            ..Default::default()
        });
    }
    (records, outcomes)
}

/// Two ACL records grant or deny the same thing (ids aside).
fn same_binding(a: &AccessControlEntryRecord, b: &AccessControlEntryRecord) -> bool {
    a.resource_type == b.resource_type
        && a.resource_name == b.resource_name
        && a.pattern_type == b.pattern_type
        && a.principal == b.principal
        && a.host == b.host
        && a.operation == b.operation
        && a.permission_type == b.permission_type
}

fn code(c: i32) -> i8 {
    i8::try_from(c).unwrap_or(0) // 0 = UNKNOWN, which no binding has
}

/// The binding an ACL record stores.
pub(crate) fn binding_of(r: &AccessControlEntryRecord) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::from_code(code(r.resource_type)),
        resource_name: r.resource_name.clone(),
        pattern_type: PatternType::from_code(code(r.pattern_type)),
        principal: r.principal.clone(),
        host: r.host.clone(),
        operation: AclOperation::from_code(code(r.operation)),
        permission: AclPermissionType::from_code(code(r.permission_type)),
    }
}

/// A new ACL record for `b` (a random id).
pub(crate) fn record_of(b: &AclBinding) -> AccessControlEntryRecord {
    AccessControlEntryRecord {
        id: rand::random::<[u8; 16]>().to_vec(),
        resource_type: i32::from(b.resource_type.code()),
        resource_name: b.resource_name.clone(),
        pattern_type: i32::from(b.pattern_type.code()),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: i32::from(b.operation.code()),
        permission_type: i32::from(b.permission.code()),
    }
}

/// A filter as DeleteAcls sends it to the controller.
pub(crate) fn wire_of(f: &AclBindingFilter) -> AclFilterWire {
    AclFilterWire {
        resource_type: i32::from(f.resource_type.code()),
        resource_name: f.resource_name.clone(),
        pattern_type: i32::from(f.pattern_type.code()),
        principal: f.principal.clone(),
        host: f.host.clone(),
        operation: i32::from(f.operation.code()),
        permission_type: i32::from(f.permission.code()),
    }
}

fn filter_of(f: &AclFilterWire) -> AclBindingFilter {
    AclBindingFilter {
        resource_type: ResourceType::from_code(code(f.resource_type)),
        resource_name: f.resource_name.clone(),
        pattern_type: PatternType::from_code(code(f.pattern_type)),
        principal: f.principal.clone(),
        host: f.host.clone(),
        operation: AclOperation::from_code(code(f.operation)),
        permission: AclPermissionType::from_code(code(f.permission_type)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, mechanism: i32) -> UserScramCredentialRecord {
        UserScramCredentialRecord {
            name: name.into(),
            mechanism,
            salt: b"salt".to_vec(),
            stored_key: vec![1; 32],
            server_key: vec![2; 32],
            iterations: 4096,
        }
    }

    fn applied(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for r in records {
            image.apply(1, r);
        }
    }

    #[test]
    fn scram_changes_per_user() {
        let mut image = MetadataImage::default();
        let (recs, out) = apply(
            &image,
            SecurityOp {
                scram_upserts: vec![user("alice", 2), user("bob", 1)],
                ..Default::default()
            },
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.error == 0));
        applied(&mut image, &recs);
        assert!(image.scram("alice", 2).is_some() && image.scram("bob", 1).is_some());
        // deleting a missing credential fails that user only, and none of its changes apply
        let (recs, out) = apply(
            &image,
            SecurityOp {
                scram_deletions: vec![
                    RemoveUserScramCredentialRecord {
                        name: "alice".into(),
                        mechanism: 1,
                    },
                    RemoveUserScramCredentialRecord {
                        name: "bob".into(),
                        mechanism: 1,
                    },
                ],
                scram_upserts: vec![user("alice", 1)],
                ..Default::default()
            },
        );
        assert_eq!(out[0].name, "alice");
        assert_eq!(out[0].error, i32::from(RESOURCE_NOT_FOUND));
        assert_eq!(out[1].error, 0);
        applied(&mut image, &recs);
        assert!(
            image.scram("alice", 1).is_none(),
            "alice's upsert did not apply"
        );
        assert!(image.scram("bob", 1).is_none(), "bob's deletion did");
        // bootstrap: present credentials are kept
        let mut changed = user("alice", 2);
        changed.iterations = 8192;
        let (recs, _) = apply(
            &image,
            SecurityOp {
                scram_upserts: vec![changed],
                only_if_absent: true,
                ..Default::default()
            },
        );
        assert!(recs.is_empty());
    }

    #[test]
    fn acls_created_once_and_deleted_by_filter() {
        let mut image = MetadataImage::default();
        let read = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermissionType::Allow,
        };
        let write = AclBinding {
            operation: AclOperation::Write,
            ..read.clone()
        };
        let (recs, out) = apply(
            &image,
            SecurityOp {
                acl_creations: vec![record_of(&read), record_of(&write)],
                ..Default::default()
            },
        );
        assert_eq!(out.len(), 2);
        applied(&mut image, &recs);
        assert_eq!(image.acls().count(), 2);
        let (recs, _) = apply(
            &image,
            SecurityOp {
                acl_creations: vec![record_of(&read)],
                ..Default::default()
            },
        );
        assert!(recs.is_empty(), "an identical ACL is not added twice");
        let mut only_reads = AclBindingFilter::any();
        only_reads.operation = AclOperation::Read;
        let (recs, out) = apply(
            &image,
            SecurityOp {
                acl_deletions: vec![wire_of(&only_reads), wire_of(&AclBindingFilter::any())],
                ..Default::default()
            },
        );
        assert_eq!(out[0].acls.len(), 1);
        assert_eq!(out[1].acls.len(), 2, "each filter lists what it matched");
        assert_eq!(recs.len(), 2, "each ACL is removed once");
        applied(&mut image, &recs);
        assert_eq!(image.acls().count(), 0);
        assert_eq!(binding_of(&record_of(&write)), write);
    }
}
