//! `sluice acl`: Kafka ACLs (as `kafka-acls.sh`): `add`, `list` and `remove` with
//! CreateAcls, DescribeAcls and DeleteAcls. A resource is `--topic`, `--group`,
//! `--transactional-id` or `--cluster`, literal unless `--prefixed`; `--operation` is
//! repeatable; `--deny` makes DENY entries. `list`/`remove` match like Kafka's filters
//! (an option left out matches anything).

use anyhow::{bail, Result};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::client::Client;
use super::format::{kafka_error, print_json, Format, Table};
use super::ClientArgs;

/// Which resource, and how its name matches.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Resource {
    #[arg(long, group = "resource")]
    topic: Option<String>,
    #[arg(long, group = "resource")]
    group: Option<String>,
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    /// The cluster resource (kafka-cluster).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The name is a prefix (PREFIXED pattern) instead of a literal name.
    #[arg(long)]
    prefixed: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AclVerb {
    /// Create ACL entries: one per --operation.
    Add {
        #[command(flatten)]
        resource: Resource,
        /// User:alice, or User:* for everyone.
        #[arg(long)]
        principal: String,
        /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
        /// ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL (repeatable).
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        #[arg(long, default_value = "*")]
        host: String,
        /// DENY instead of ALLOW.
        #[arg(long)]
        deny: bool,
    },
    /// ACLs matching the options (all without any).
    List {
        #[command(flatten)]
        resource: Resource,
        #[arg(long)]
        principal: Option<String>,
    },
    /// Delete the ACLs matching the options.
    Remove {
        #[command(flatten)]
        resource: Resource,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long = "operation")]
        operations: Vec<String>,
    },
}

const OPERATIONS: &[(&str, i8)] = &[
    ("ALL", 2),
    ("READ", 3),
    ("WRITE", 4),
    ("CREATE", 5),
    ("DELETE", 6),
    ("ALTER", 7),
    ("DESCRIBE", 8),
    ("CLUSTER_ACTION", 9),
    ("DESCRIBE_CONFIGS", 10),
    ("ALTER_CONFIGS", 11),
    ("IDEMPOTENT_WRITE", 12),
];
const RESOURCES: &[(&str, i8)] = &[
    ("TOPIC", 2),
    ("GROUP", 3),
    ("CLUSTER", 4),
    ("TRANSACTIONAL_ID", 5),
];

fn operation(name: &str) -> Result<i8> {
    let up = name.to_ascii_uppercase().replace('-', "_");
    match OPERATIONS.iter().find(|(n, _)| *n == up) {
        Some((_, c)) => Ok(*c),
        None => bail!("unknown operation {name}"),
    }
}

fn name_of(table: &[(&str, i8)], code: i8) -> String {
    table
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| code.to_string(), |(n, _)| n.to_string())
}

impl Resource {
    /// (resource type, name) or None when no resource was named (match any).
    fn target(&self) -> Option<(i8, String)> {
        if let Some(t) = &self.topic {
            Some((2, t.clone()))
        } else if let Some(g) = &self.group {
            Some((3, g.clone()))
        } else if let Some(t) = &self.transactional_id {
            Some((5, t.clone()))
        } else if self.cluster {
            Some((4, "kafka-cluster".into()))
        } else {
            None
        }
    }
    fn pattern(&self) -> i8 {
        if self.prefixed {
            4
        } else {
            3
        }
    }
}

pub(crate) fn run(verb: &AclVerb, args: &ClientArgs) -> Result<()> {
    let mut client = Client::connect(args)?;
    match verb {
        AclVerb::Add {
            resource,
            principal,
            operations,
            host,
            deny,
        } => {
            let Some((rt, name)) = resource.target() else {
                bail!("name a resource: --topic, --group, --transactional-id or --cluster");
            };
            let mut creations = Vec::new();
            for op in operations {
                creations.push(
                    AclCreation::default()
                        .with_resource_type(rt)
                        .with_resource_name(StrBytes::from_string(name.clone()))
                        .with_resource_pattern_type(resource.pattern())
                        .with_principal(StrBytes::from_string(principal.clone()))
                        .with_host(StrBytes::from_string(host.clone()))
                        .with_operation(operation(op)?)
                        .with_permission_type(if *deny { 2 } else { 3 }),
                );
            }
            let req = CreateAclsRequest::default().with_creations(creations);
            let (_, resp) = client.any().call(3, &req)?;
            for r in &resp.results {
                if r.error_code != 0 {
                    return Err(kafka_error(
                        r.error_code,
                        "CreateAcls",
                        r.error_message.as_deref(),
                    ));
                }
            }
            println!("{} ACL(s) added", resp.results.len());
        }
        AclVerb::List {
            resource,
            principal,
        } => {
            let (rt, name) = resource.target().map_or((1, None), |(t, n)| (t, Some(n)));
            let req = DescribeAclsRequest::default()
                .with_resource_type_filter(rt)
                .with_resource_name_filter(name.map(StrBytes::from_string))
                .with_pattern_type_filter(if name_given(resource) {
                    resource.pattern()
                } else {
                    1
                })
                .with_principal_filter(principal.clone().map(StrBytes::from_string))
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1);
            let (_, resp) = client.any().call(3, &req)?;
            if resp.error_code != 0 {
                return Err(kafka_error(
                    resp.error_code,
                    "DescribeAcls",
                    resp.error_message.as_deref(),
                ));
            }
            let mut rows = Vec::new();
            for r in &resp.resources {
                for a in &r.acls {
                    rows.push(vec![
                        name_of(RESOURCES, r.resource_type),
                        r.resource_name.to_string(),
                        if r.pattern_type == 4 {
                            "PREFIXED"
                        } else {
                            "LITERAL"
                        }
                        .to_string(),
                        a.principal.to_string(),
                        a.host.to_string(),
                        name_of(OPERATIONS, a.operation),
                        if a.permission_type == 2 {
                            "DENY"
                        } else {
                            "ALLOW"
                        }
                        .to_string(),
                    ]);
                }
            }
            match args.format {
                Format::Json => print_json(&json!(rows
                    .iter()
                    .map(
                        |r| json!({"resource_type": r[0], "name": r[1], "pattern": r[2],
                        "principal": r[3], "host": r[4], "operation": r[5], "permission": r[6]})
                    )
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let mut t = Table::new(&[
                        "RESOURCE",
                        "NAME",
                        "PATTERN",
                        "PRINCIPAL",
                        "HOST",
                        "OPERATION",
                        "PERMISSION",
                    ]);
                    for r in rows {
                        t.row(r);
                    }
                    print!("{}", t.render());
                }
            }
        }
        AclVerb::Remove {
            resource,
            principal,
            operations,
        } => {
            let (rt, name) = resource.target().map_or((1, None), |(t, n)| (t, Some(n)));
            let ops: Vec<i8> = if operations.is_empty() {
                vec![1]
            } else {
                operations
                    .iter()
                    .map(|o| operation(o))
                    .collect::<Result<_>>()?
            };
            let filters = ops
                .into_iter()
                .map(|op| {
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(rt)
                        .with_resource_name_filter(name.clone().map(StrBytes::from_string))
                        .with_pattern_type_filter(if name_given(resource) {
                            resource.pattern()
                        } else {
                            1
                        })
                        .with_principal_filter(principal.clone().map(StrBytes::from_string))
                        .with_host_filter(None)
                        .with_operation(op)
                        .with_permission_type(1)
                })
                .collect();
            let (_, resp) = client
                .any()
                .call(3, &DeleteAclsRequest::default().with_filters(filters))?;
            let mut removed = 0;
            for r in &resp.filter_results {
                if r.error_code != 0 {
                    return Err(kafka_error(
                        r.error_code,
                        "DeleteAcls",
                        r.error_message.as_deref(),
                    ));
                }
                removed += r.matching_acls.len();
            }
            println!("{removed} ACL(s) removed");
        }
    }
    Ok(())
}

fn name_given(r: &Resource) -> bool {
    r.target().is_some()
}
