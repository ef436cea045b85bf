//! The admin verbs of the `sluice` binary (`topic`, `group`, `cluster`, `txn`, `produce`,
//! `consume`): blocking Kafka-protocol clients of any broker given with `-b/--bootstrap`,
//! Apache Kafka included. They never link the broker's runtime; each verb connects, asks,
//! prints (a table, or JSON with `--format json`) and exits: 0 on success, 1 on an error
//! (printed with its Kafka error name), 3 when `cluster health` finds the cluster unhealthy.
//!
//! ```text
//!  main ─► AdminCommand ─► topic / group / reset / cluster / produce / consume (member)
//!                             └──► client (Conn per broker, ApiVersions, Metadata) ─► format
//! ```

mod acl;
mod client;
mod cluster;
mod consume;
mod delete_records;
mod format;
mod group;
mod member;
mod offsets;
mod produce;
mod reset;
mod security;
mod topic;
mod txn;
mod user;

use std::time::Duration;

/// Exit status of `cluster health` when the cluster answered but is not healthy.
const EXIT_UNHEALTHY: i32 = 3;

/// How to reach the cluster and how to print; every admin verb takes these.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// Broker(s) to ask first: host:port[,host:port...]
    #[arg(short = 'b', long, default_value = "127.0.0.1:9092", global = true)]
    pub(crate) bootstrap: String,
    /// Bound on every network wait and retry (30s, 500ms, 2m); `consume` also exits after
    /// this long without a record.
    #[arg(long, default_value = "30s", value_parser = format::parse_duration, global = true)]
    pub(crate) timeout: Duration,
    /// table for people, json for scripts.
    #[arg(long, value_enum, default_value_t = format::Format::Table, global = true)]
    pub(crate) format: format::Format,
    #[command(flatten)]
    pub(crate) security: security::SecurityArgs,
}

impl ClientArgs {
    /// The timeout as a request's timeout_ms.
    pub(crate) fn timeout_ms(&self) -> i32 {
        self.timeout.as_millis().min(i32::MAX as u128) as i32
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Create, list, describe, delete, alter-config, add-partitions, offsets,
    /// delete-records.
    Topic {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        verb: topic::TopicVerb,
    },
    /// Consumer groups: list, describe (offsets and lag), delete, reset-offsets.
    Group {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        verb: group::GroupVerb,
    },
    /// Brokers, controller, under-replicated and offline partitions; `health` for probes.
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        verb: cluster::ClusterVerb,
    },
    /// Transactions: list, describe, a partition's producers, abort a hanging one.
    Txn {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        verb: txn::TxnVerb,
    },
    /// ACLs: add, list, remove (as kafka-acls.sh).
    Acl {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        verb: acl::AclVerb,
    },
    /// SCRAM users: add (before the first start), set, delete, list.
    User {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        verb: user::UserVerb,
    },
    /// Write one record per line of stdin (or --file) to a topic.
    Produce(produce::ProduceArgs),
    /// Print a topic's records, one per line, until --max-messages or --timeout idle.
    Consume(consume::ConsumeArgs),
}

/// Runs one admin verb; returns the process exit status.
pub(crate) fn run(cmd: &AdminCommand) -> i32 {
    let result = match cmd {
        AdminCommand::Topic { client, verb } => topic::run(verb, client).map(|()| 0),
        AdminCommand::Group { client, verb } => group::run(verb, client).map(|()| 0),
        AdminCommand::Cluster { client, verb } => {
            cluster::run(verb, client).map(|healthy| if healthy { 0 } else { EXIT_UNHEALTHY })
        }
        AdminCommand::Txn { client, verb } => txn::run(verb, client).map(|()| 0),
        AdminCommand::User { client, verb } => user::run(verb, client).map(|()| 0),
        AdminCommand::Acl { client, verb } => acl::run(verb, client).map(|()| 0),
        AdminCommand::Produce(args) => produce::run(args).map(|()| 0),
        AdminCommand::Consume(args) => consume::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            1
        }
    }
}
