//! Authorization on a shard: Kafka's StandardAuthorizer over the ACLs of the metadata
//! image, turned on by `authorizer.class.name` (Kafka's class name or `StandardAuthorizer`),
//! with `super.users` and `allow.everyone.if.no.acl.found`. Each shard keeps its own
//! `Authorizer`, rebuilt when the image's ACLs change; with no authorizer configured every
//! request is allowed, as in Kafka. The handlers ask `allows` with the connection's
//! principal and host and Kafka's operation and resource.
//!
//! ```text
//!  metadata records ─► image.acls ─► Change::AclsChanged ─► Access::rebuild (per shard)
//!  handler ─► Access::allows(conn, op, resource) ─► allow | *_AUTHORIZATION_FAILED
//! ```

use std::cell::RefCell;

use crate::config::BrokerConfig;
use crate::connection::Conn;
use crate::metadata::image::MetadataImage;
use crate::metadata::security_ops::binding_of;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Authorizer;
use crate::security::principal::parse_super_users;

/// The values `authorizer.class.name` accepts besides empty (off).
pub(crate) const AUTHORIZERS: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "StandardAuthorizer",
];

/// A shard's authorizer. Owned by the shard; never crosses cores.
pub(crate) struct Access {
    /// None when `authorizer.class.name` is empty: everything is allowed.
    authorizer: RefCell<Option<Authorizer>>,
}

impl Access {
    pub(crate) fn new(config: &BrokerConfig) -> Self {
        let on = !config.str_value("authorizer.class.name").trim().is_empty();
        let authorizer = on.then(|| {
            Authorizer::new(
                parse_super_users(config.str_value("super.users")).unwrap_or_default(), // ok: validated on set
                config.flag("allow.everyone.if.no.acl.found"),
            )
        });
        Self {
            authorizer: RefCell::new(authorizer),
        }
    }

    /// Whether an authorizer is configured.
    pub(crate) fn enabled(&self) -> bool {
        self.authorizer.borrow().is_some()
    }

    /// Takes the image's ACLs (after a change).
    pub(crate) fn rebuild(&self, config: &BrokerConfig, image: &MetadataImage) {
        let mut slot = self.authorizer.borrow_mut();
        if slot.is_none() {
            return;
        }
        let mut fresh = Authorizer::new(
            parse_super_users(config.str_value("super.users")).unwrap_or_default(), // ok: validated on set
            config.flag("allow.everyone.if.no.acl.found"),
        );
        for r in image.acls() {
            if let Err(e) = fresh.add_one(&binding_of(r)) {
                tracing::warn!(error = %e, "an ACL of the metadata log is not valid; skipped");
            }
        }
        *slot = Some(fresh);
    }

    /// Whether the connection's principal may do `op` on the resource.
    pub(crate) fn allows(
        &self,
        conn: &Conn,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let guard = self.authorizer.borrow();
        let Some(a) = guard.as_ref() else {
            return true;
        };
        a.authorize(&conn.identity(), conn.host(), op, resource_type, name)
    }

    /// `allows` on the cluster resource.
    pub(crate) fn allows_cluster(&self, conn: &Conn, op: AclOperation) -> bool {
        self.allows(conn, op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether `op` is allowed on some resource of the type (Kafka's
    /// `authorizeByResourceType`, for idempotent producers).
    pub(crate) fn allows_any(
        &self,
        conn: &Conn,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        let guard = self.authorizer.borrow();
        let Some(a) = guard.as_ref() else {
            return true;
        };
        a.authorize_by_resource_type(&conn.identity(), conn.host(), op, resource_type)
    }
}
