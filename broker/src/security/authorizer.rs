//! The ACL set and Kafka's `StandardAuthorizer` decisions. Super users are always allowed;
//! otherwise the ACLs that apply to a resource are its LITERAL name, the LITERAL `*`, and
//! every PREFIXED pattern that prefixes the name; among those, a matching DENY wins, then a
//! matching ALLOW; with none applying at all, `allow.everyone.if.no.acl.found` decides.
//!
//! ```text
//!  per resource type: literal  HashMap<name, entries>       exact name, then "*"
//!                     prefixed BTreeMap<prefix, entries>    walk down the prefixes of name
//! ```
//!
//! Held by whoever owns the metadata image (a copy per shard); changed only by applying ACL
//! records, so `&mut self` methods never race `authorize`.

#[cfg(test)]
use super::acl::AclBindingFilter;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use super::acl::{
    AclBinding, AclError, AclOperation, AclPermissionType, PatternType, ResourceType, WILDCARD,
};
use super::principal::KafkaPrincipal;

/// The access-control-entry half of a binding, stored under its resource pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    principal: KafkaPrincipal,
    host: String,
    operation: AclOperation,
    permission: AclPermissionType,
}

impl Entry {
    /// Kafka's `StandardAuthorizerData.findResult`: `None` when the entry does not apply.
    fn decide(&self, principal: &KafkaPrincipal, host: &str, op: AclOperation) -> Option<bool> {
        if self.principal != *principal && !self.principal.is_wildcard() {
            return None;
        }
        if self.host != WILDCARD && self.host != host {
            return None;
        }
        let allow = self.permission == AclPermissionType::Allow;
        if self.operation != AclOperation::All && self.operation != op {
            // Only an ALLOW implies DESCRIBE / DESCRIBE_CONFIGS.
            use AclOperation::*;
            let implied = allow
                && match op {
                    Describe => matches!(self.operation, Read | Write | Delete | Alter),
                    DescribeConfigs => self.operation == AlterConfigs,
                    _ => false,
                };
            if !implied {
                return None;
            }
        }
        Some(allow)
    }
}

#[derive(Default, Clone, Debug)]
struct TypeAcls {
    literal: HashMap<String, BTreeSet<Entry>>,
    prefixed: BTreeMap<String, BTreeSet<Entry>>,
}

impl TypeAcls {
    fn map_mut(&mut self, pt: PatternType) -> Option<&mut dyn Patterns> {
        match pt {
            PatternType::Literal => Some(&mut self.literal),
            PatternType::Prefixed => Some(&mut self.prefixed),
            _ => None,
        }
    }

    /// Calls `f` on every entry set that applies to resource `name`, until it returns false.
    fn for_each_applying<'a>(&'a self, name: &str, mut f: impl FnMut(&'a BTreeSet<Entry>) -> bool) {
        for key in [name, WILDCARD] {
            if let Some(e) = self.literal.get(key) {
                if !f(e) {
                    return;
                }
            }
            if name == WILDCARD {
                break;
            }
        }
        // Prefixes of `name` present as keys, longest first. `bound` is always a prefix of
        // `name`, and every key longer than it that prefixes `name` has been visited.
        let mut bound = name;
        while let Some((key, entries)) = self
            .prefixed
            .range::<str, _>((Bound::Unbounded, Bound::Included(bound)))
            .next_back()
        {
            let next_len = if name.starts_with(key.as_str()) {
                if !f(entries) {
                    return;
                }
                match key.len().checked_sub(1) {
                    Some(len) => len,
                    None => return,
                }
            } else {
                // No key between `key` and `bound` prefixes `name` further than they agree.
                key.bytes()
                    .zip(name.bytes())
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            let mut len = next_len;
            while !name.is_char_boundary(len) {
                len -= 1;
            }
            bound = &name[..len];
        }
    }
}

/// Insertion and removal on either map of a resource type.
trait Patterns {
    fn insert_entry(&mut self, name: &str, e: Entry) -> bool;
    #[cfg(test)]
    fn remove_entry(&mut self, name: &str, e: &Entry) -> bool;
}

macro_rules! impl_patterns {
    ($map:ty) => {
        impl Patterns for $map {
            fn insert_entry(&mut self, name: &str, e: Entry) -> bool {
                self.entry(name.to_string()).or_default().insert(e)
            }
            #[cfg(test)]
            fn remove_entry(&mut self, name: &str, e: &Entry) -> bool {
                let Some(set) = self.get_mut(name) else {
                    return false;
                };
                let removed = set.remove(e);
                if set.is_empty() {
                    self.remove(name);
                }
                removed
            }
        }
    };
}
impl_patterns!(HashMap<String, BTreeSet<Entry>>);
impl_patterns!(BTreeMap<String, BTreeSet<Entry>>);

/// Kafka's StandardAuthorizer over an in-memory ACL set.
#[derive(Clone, Debug, Default)]
pub(crate) struct Authorizer {
    by_type: BTreeMap<ResourceType, TypeAcls>,
    count: usize,
    super_users: Vec<KafkaPrincipal>,
    allow_everyone_if_no_acl_found: bool,
}

impl Authorizer {
    pub(crate) fn new(
        super_users: Vec<KafkaPrincipal>,
        allow_everyone_if_no_acl_found: bool,
    ) -> Self {
        Authorizer {
            super_users,
            allow_everyone_if_no_acl_found,
            ..Self::default()
        }
    }

    #[cfg(test)]
    pub(crate) fn set_config(
        &mut self,
        super_users: Vec<KafkaPrincipal>,
        allow_everyone_if_no_acl_found: bool,
    ) {
        self.super_users = super_users;
        self.allow_everyone_if_no_acl_found = allow_everyone_if_no_acl_found;
    }

    pub(crate) fn is_super_user(&self, principal: &KafkaPrincipal) -> bool {
        self.super_users.contains(principal)
    }

    #[cfg(test)]
    /// Number of ACLs held.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    #[cfg(test)]
    /// Adds each binding after CreateAcls validation; one already present is a success.
    pub(crate) fn add(
        &mut self,
        bindings: impl IntoIterator<Item = AclBinding>,
    ) -> Vec<Result<(), AclError>> {
        bindings
            .into_iter()
            .map(|b| self.add_one(&b).map(|_| ()))
            .collect()
    }

    /// Adds one binding; `Ok(false)` when it was already there.
    pub(crate) fn add_one(&mut self, b: &AclBinding) -> Result<bool, AclError> {
        let principal = b.validate()?;
        let entry = Entry {
            principal,
            host: b.host.clone(),
            operation: b.operation,
            permission: b.permission,
        };
        let map = self
            .by_type
            .entry(b.resource_type)
            .or_default()
            .map_mut(b.pattern_type);
        let added = map.is_some_and(|m| m.insert_entry(&b.resource_name, entry));
        self.count += usize::from(added);
        Ok(added)
    }

    #[cfg(test)]
    /// Removes exactly this binding (applying an ACL-removal record); false if absent.
    pub(crate) fn remove_one(&mut self, b: &AclBinding) -> bool {
        let Ok(principal) = KafkaPrincipal::parse(&b.principal) else {
            return false;
        };
        let entry = Entry {
            principal,
            host: b.host.clone(),
            operation: b.operation,
            permission: b.permission,
        };
        let Some(acls) = self.by_type.get_mut(&b.resource_type) else {
            return false;
        };
        let removed = acls
            .map_mut(b.pattern_type)
            .is_some_and(|m| m.remove_entry(&b.resource_name, &entry));
        self.count -= usize::from(removed);
        removed
    }

    #[cfg(test)]
    /// DeleteAcls for one filter: removes and returns every matching binding.
    pub(crate) fn remove(&mut self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        let gone = self.describe(filter);
        for b in &gone {
            self.remove_one(b);
        }
        gone
    }

    #[cfg(test)]
    /// DescribeAcls: every binding the filter matches, in a stable order.
    pub(crate) fn describe(&self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        let mut out: Vec<AclBinding> = self.bindings().filter(|b| filter.matches(b)).collect();
        out.sort();
        out
    }

    #[cfg(test)]
    /// Every binding held (for a metadata snapshot), in no particular order.
    pub(crate) fn bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.by_type.iter().flat_map(|(&rt, acls)| {
            let literal = acls
                .literal
                .iter()
                .map(|(n, e)| (PatternType::Literal, n, e));
            let prefixed = acls
                .prefixed
                .iter()
                .map(|(n, e)| (PatternType::Prefixed, n, e));
            literal
                .chain(prefixed)
                .flat_map(move |(pt, name, entries)| {
                    entries.iter().map(move |e| AclBinding {
                        resource_type: rt,
                        resource_name: name.clone(),
                        pattern_type: pt,
                        principal: e.principal.to_string(),
                        host: e.host.clone(),
                        operation: e.operation,
                        permission: e.permission,
                    })
                })
        })
    }

    /// May `principal`, connected from `host` (the client IP as text), do `op` on the
    /// resource (`resource_name` is "kafka-cluster" for CLUSTER)?
    pub(crate) fn authorize(
        &self,
        principal: &KafkaPrincipal,
        host: &str,
        op: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let Some(acls) = self.by_type.get(&resource_type) else {
            return self.allow_everyone_if_no_acl_found;
        };
        let (mut any_acl, mut allowed, mut denied) = (false, false, false);
        acls.for_each_applying(resource_name, |entries| {
            any_acl |= !entries.is_empty();
            for e in entries {
                match e.decide(principal, host, op) {
                    Some(false) => {
                        denied = true;
                        return false;
                    }
                    Some(true) => allowed = true,
                    None => {}
                }
            }
            true
        });
        if denied {
            false
        } else if allowed {
            true
        } else {
            !any_acl && self.allow_everyone_if_no_acl_found
        }
    }

    /// Kafka's `Authorizer.authorizeByResourceType`: may `principal` do `op` on at least one
    /// resource of this type? InitProducerId allows an idempotent producer when
    /// `authorize(IDEMPOTENT_WRITE, CLUSTER, "kafka-cluster")` or
    /// `authorize_by_resource_type(WRITE, TOPIC)`. Like Kafka, it first authorizes a
    /// resource literally named "hardcode" (so super users and the no-ACL default apply),
    /// then looks for an ALLOW (exact operation or ALL, no implied operations) that no DENY
    /// covers. ANY/UNKNOWN arguments are refused (Kafka throws).
    pub(crate) fn authorize_by_resource_type(
        &self,
        principal: &KafkaPrincipal,
        host: &str,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if matches!(op, AclOperation::Any | AclOperation::Unknown)
            || matches!(resource_type, ResourceType::Any | ResourceType::Unknown)
        {
            return false;
        }
        if self.authorize(principal, host, op, resource_type, "hardcode") {
            return true;
        }
        let Some(acls) = self.by_type.get(&resource_type) else {
            return false;
        };
        let applies = |e: &Entry| {
            (e.host == host || e.host == WILDCARD)
                && (e.principal == *principal || e.principal.is_wildcard())
                && (e.operation == op || e.operation == AclOperation::All)
        };
        let denied = |entries: &BTreeSet<Entry>| {
            entries
                .iter()
                .any(|e| e.permission == AclPermissionType::Deny && applies(e))
        };
        let allowed = |entries: &BTreeSet<Entry>| {
            entries
                .iter()
                .any(|e| e.permission == AclPermissionType::Allow && applies(e))
        };
        // A DENY on the literal "*" or on the empty prefix denies the whole type.
        if acls.literal.get(WILDCARD).is_some_and(denied)
            || acls.prefixed.get("").is_some_and(denied)
        {
            return false;
        }
        if acls.literal.get(WILDCARD).is_some_and(allowed) {
            return true;
        }
        // An ALLOW counts unless a DENY on the same literal or on a prefix of it dominates.
        let dominated = |name: &str, literal: bool| {
            (literal && acls.literal.get(name).is_some_and(denied))
                || name
                    .char_indices()
                    .map(|(i, c)| &name[..i + c.len_utf8()])
                    .any(|p| acls.prefixed.get(p).is_some_and(denied))
        };
        acls.literal
            .iter()
            .any(|(n, e)| n != WILDCARD && allowed(e) && !dominated(n, true))
            || acls
                .prefixed
                .iter()
                .any(|(n, e)| allowed(e) && !dominated(n, false))
    }
}

#[cfg(test)]
#[path = "authorizer_tests.rs"]
mod tests;
