//! Kafka's ACL model with its wire codes: resource, pattern, operation and permission types,
//! an [`AclBinding`] (one ACL, validated as CreateAcls validates it) and an
//! [`AclBindingFilter`] (DescribeAcls / DeleteAcls, with ANY and MATCH). Codes Kafka does
//! not know read as UNKNOWN, as Kafka's `fromCode` does; bindings serialise with serde as
//! plain codes and strings, one binding per metadata-log record.

use serde::{Deserialize, Serialize};

use super::principal::KafkaPrincipal;

/// The name of the one CLUSTER resource.
pub(crate) const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL resource name, principal name or host that matches everything.
pub(crate) const WILDCARD: &str = "*";

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(from = "i8", into = "i8")]
        pub(crate) enum $name { $($variant),+ }

        impl $name {
            #[cfg(test)]
            #[allow(dead_code)] // generated for every enum; the tests use some
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            pub(crate) fn code(self) -> i8 {
                match self { $($name::$variant => $code),+ }
            }

            /// Unknown codes read as `Unknown`.
            pub(crate) fn from_code(code: i8) -> Self {
                match code { $($code => $name::$variant,)+ _ => $name::Unknown }
            }
        }

        impl From<i8> for $name {
            fn from(code: i8) -> Self { Self::from_code(code) }
        }

        impl From<$name> for i8 {
            fn from(v: $name) -> i8 { v.code() }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $($name::$variant => $text),+ })
            }
        }
    };
}

wire_enum!(
    /// Kafka's `ResourceType`.
    ResourceType {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        Topic = 2 => "TOPIC",
        Group = 3 => "GROUP",
        Cluster = 4 => "CLUSTER",
        TransactionalId = 5 => "TRANSACTIONAL_ID",
        DelegationToken = 6 => "DELEGATION_TOKEN",
        User = 7 => "USER",
    }
);

wire_enum!(
    /// Kafka's `PatternType`. ANY and MATCH only appear in filters.
    PatternType {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        Match = 2 => "MATCH",
        Literal = 3 => "LITERAL",
        Prefixed = 4 => "PREFIXED",
    }
);

wire_enum!(
    /// Kafka's `AclOperation`.
    AclOperation {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        All = 2 => "ALL",
        Read = 3 => "READ",
        Write = 4 => "WRITE",
        Create = 5 => "CREATE",
        Delete = 6 => "DELETE",
        Alter = 7 => "ALTER",
        Describe = 8 => "DESCRIBE",
        ClusterAction = 9 => "CLUSTER_ACTION",
        DescribeConfigs = 10 => "DESCRIBE_CONFIGS",
        AlterConfigs = 11 => "ALTER_CONFIGS",
        IdempotentWrite = 12 => "IDEMPOTENT_WRITE",
        CreateTokens = 13 => "CREATE_TOKENS",
        DescribeTokens = 14 => "DESCRIBE_TOKENS",
    }
);

wire_enum!(
    /// Kafka's `AclPermissionType`.
    AclPermissionType {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        Deny = 2 => "DENY",
        Allow = 3 => "ALLOW",
    }
);

/// Why a binding or filter is refused: Kafka answers INVALID_REQUEST with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AclError(pub(crate) String);

/// One ACL: a resource pattern and an access control entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct AclBinding {
    pub(crate) resource_type: ResourceType,
    pub(crate) resource_name: String,
    pub(crate) pattern_type: PatternType,
    /// As sent, `type:name` ("User:alice", "User:*").
    pub(crate) principal: String,
    /// A client IP address as text, or "*".
    pub(crate) host: String,
    pub(crate) operation: AclOperation,
    pub(crate) permission: AclPermissionType,
}

impl AclBinding {
    /// CreateAcls' checks (the broker's and the controller's `validateNewAcl`), in Kafka's
    /// order and words. Returns the parsed principal.
    pub(crate) fn validate(&self) -> Result<KafkaPrincipal, AclError> {
        let err = |m: String| Err(AclError(m));
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if self.resource_name.is_empty() {
            return err("Invalid empty resource name".to_string());
        }
        if matches!(
            self.resource_type,
            ResourceType::Unknown | ResourceType::Any
        ) {
            return err(format!("Invalid resourceType {}", self.resource_type));
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return err(format!("Invalid patternType {}", self.pattern_type));
        }
        if matches!(self.operation, AclOperation::Unknown | AclOperation::Any) {
            return err(format!("Invalid operation {}", self.operation));
        }
        if !matches!(
            self.permission,
            AclPermissionType::Allow | AclPermissionType::Deny
        ) {
            return err(format!("Invalid permissionType {}", self.permission));
        }
        KafkaPrincipal::parse(&self.principal).map_err(|_| {
            AclError(format!(
                "Could not parse principal from `{}` (no colon is present separating the \
                 principal type from the principal name)",
                self.principal
            ))
        })
    }
}

/// A DescribeAcls / DeleteAcls filter. `None` strings and ANY codes match everything;
/// pattern type MATCH matches every pattern that applies to the named resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AclBindingFilter {
    pub(crate) resource_type: ResourceType,
    pub(crate) resource_name: Option<String>,
    pub(crate) pattern_type: PatternType,
    pub(crate) principal: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) operation: AclOperation,
    pub(crate) permission: AclPermissionType,
}

impl AclBindingFilter {
    /// Matches every binding.
    #[cfg(test)]
    pub(crate) fn any() -> Self {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermissionType::Any,
        }
    }

    /// Kafka refuses a filter with an UNKNOWN field (`findIndefiniteField`).
    pub(crate) fn validate(&self) -> Result<(), AclError> {
        let field = if self.resource_type == ResourceType::Unknown {
            "Resource type is UNKNOWN."
        } else if self.pattern_type == PatternType::Unknown {
            "Resource pattern type is UNKNOWN."
        } else if self.operation == AclOperation::Unknown {
            "Operation is UNKNOWN."
        } else if self.permission == AclPermissionType::Unknown {
            "Permission type is UNKNOWN."
        } else {
            return Ok(());
        };
        Err(AclError(format!("Invalid filter: {field}")))
    }

    /// `ResourcePatternFilter.matches` and `AccessControlEntryFilter.matches`.
    pub(crate) fn matches(&self, b: &AclBinding) -> bool {
        self.matches_pattern(b.resource_type, &b.resource_name, b.pattern_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == AclPermissionType::Any || self.permission == b.permission)
    }

    pub(crate) fn matches_pattern(&self, rt: ResourceType, name: &str, pt: PatternType) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != rt {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != pt
        {
            return false;
        }
        let Some(want) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == pt {
            return want == name;
        }
        // MATCH: every pattern that applies to the resource `want`.
        match pt {
            PatternType::Literal => want == name || name == WILDCARD,
            PatternType::Prefixed => want.starts_with(name),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn binding(rt: ResourceType, name: &str, pt: PatternType) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.to_string(),
            pattern_type: pt,
            principal: "User:alice".to_string(),
            host: "*".to_string(),
            operation: AclOperation::Read,
            permission: AclPermissionType::Allow,
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_read_as_unknown() {
        for op in AclOperation::ALL {
            assert_eq!(AclOperation::from_code(op.code()), *op);
        }
        assert_eq!(AclOperation::IdempotentWrite.code(), 12);
        assert_eq!(ResourceType::User.code(), 7);
        assert_eq!(PatternType::Prefixed.code(), 4);
        assert_eq!(AclPermissionType::Allow.code(), 3);
        assert_eq!(ResourceType::from_code(99), ResourceType::Unknown);
        assert_eq!(PatternType::from_code(-1), PatternType::Unknown);
        assert_eq!(
            AclOperation::DescribeConfigs.to_string(),
            "DESCRIBE_CONFIGS"
        );
    }

    #[test]
    fn binding_serialises_as_codes() {
        let b = binding(ResourceType::Topic, "t", PatternType::Prefixed);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(
            json,
            r#"{"resource_type":2,"resource_name":"t","pattern_type":4,"principal":"User:alice","host":"*","operation":3,"permission":3}"#
        );
        assert_eq!(serde_json::from_str::<AclBinding>(&json).unwrap(), b);
    }

    #[test]
    fn validation_follows_create_acls() {
        use PatternType::{Literal, Match, Prefixed};
        use ResourceType::{Cluster, Topic};
        assert!(binding(Topic, "*", Literal).validate().is_ok());
        assert!(binding(Topic, "pre", Prefixed).validate().is_ok());
        assert!(binding(Cluster, CLUSTER_NAME, Literal).validate().is_ok());
        let msg = |b: AclBinding| b.validate().unwrap_err().0;
        assert_eq!(
            msg(binding(Cluster, "other", Literal)),
            "The only valid name for the CLUSTER resource is kafka-cluster"
        );
        assert_eq!(
            msg(binding(Topic, "", Literal)),
            "Invalid empty resource name"
        );
        assert_eq!(
            msg(binding(ResourceType::Any, "t", Literal)),
            "Invalid resourceType ANY"
        );
        assert_eq!(
            msg(binding(ResourceType::Unknown, "t", Literal)),
            "Invalid resourceType UNKNOWN"
        );
        assert_eq!(msg(binding(Topic, "t", Match)), "Invalid patternType MATCH");
        assert_eq!(
            msg(binding(Topic, "t", PatternType::Any)),
            "Invalid patternType ANY"
        );
        let mut b = binding(Topic, "t", Literal);
        b.operation = AclOperation::Any;
        assert_eq!(msg(b.clone()), "Invalid operation ANY");
        b.operation = AclOperation::Read;
        b.permission = AclPermissionType::Any;
        assert_eq!(msg(b.clone()), "Invalid permissionType ANY");
        b.permission = AclPermissionType::Deny;
        b.principal = "alice".to_string();
        assert!(msg(b).starts_with("Could not parse principal from `alice`"));
    }

    #[test]
    fn filter_match_semantics() {
        use PatternType::*;
        use ResourceType::Topic;
        let f = |pt: PatternType, name: Option<&str>| AclBindingFilter {
            resource_type: Topic,
            resource_name: name.map(str::to_string),
            pattern_type: pt,
            ..AclBindingFilter::any()
        };
        let lit = binding(Topic, "foo", Literal);
        let wild = binding(Topic, "*", Literal);
        let pre = binding(Topic, "fo", Prefixed);
        let other = binding(Topic, "bar", Prefixed);
        let m = f(Match, Some("foo"));
        assert!(m.matches(&lit) && m.matches(&wild) && m.matches(&pre) && !m.matches(&other));
        let a = f(PatternType::Any, Some("foo"));
        assert!(a.matches(&lit) && !a.matches(&wild) && !a.matches(&pre));
        let p = f(Prefixed, Some("fo"));
        assert!(p.matches(&pre) && !p.matches(&lit));
        assert!(f(Match, None).matches(&other));
        assert!(!f(Literal, None).matches(&other));
        let mut by_host = AclBindingFilter::any();
        by_host.host = Some("10.0.0.1".to_string());
        assert!(!by_host.matches(&lit));
        by_host.host = Some("*".to_string());
        assert!(by_host.matches(&lit));
        let mut cluster = AclBindingFilter::any();
        cluster.resource_type = ResourceType::Cluster;
        assert!(!cluster.matches(&lit));
    }

    #[test]
    fn filters_with_unknown_fields_are_refused() {
        assert!(AclBindingFilter::any().validate().is_ok());
        let mut f = AclBindingFilter::any();
        f.operation = AclOperation::Unknown;
        assert_eq!(
            f.validate().unwrap_err().0,
            "Invalid filter: Operation is UNKNOWN."
        );
    }
}
