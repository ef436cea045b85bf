//! `sluice topic create|list|describe|delete|alter-config|add-partitions|offsets|
//! delete-records`: CreateTopics, Metadata, DescribeConfigs, DeleteTopics,
//! IncrementalAlterConfigs and CreatePartitions, sent to the controller Metadata names
//! (any Kafka broker forwards admin requests to it); `describe` also asks each
//! partition's leader for its size (DescribeLogDirs), and `offsets` (`offsets.rs`) and
//! `delete-records` (`delete_records.rs`) ask the leaders.
//! Each verb prints its result on stdout (a table, or one JSON document) and fails with the
//! Kafka error name of the first topic the broker refused.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeLogDirsRequest, IncrementalAlterConfigsRequest, MetadataResponse,
};
use serde_json::{json, Value};

use super::client::{str_bytes, topic_name, Client};
use super::format::{ids, kafka_error, print_json, split_kv, topic_id, Format, Table};
use super::ClientArgs;

/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TopicVerb {
    /// Create a topic (CreateTopics).
    Create {
        topic: String,
        /// Number of partitions; -1 takes the broker's num.partitions.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replicas of each partition; -1 takes the broker's default.replication.factor.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic setting, repeatable: --config retention.ms=86400000
        #[arg(long = "config", value_name = "NAME=VALUE")]
        config: Vec<String>,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topic names (internal topics too, unless --exclude-internal).
    List {
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Partitions (leader, replicas, ISR) and settings of topics (every topic if none is named).
    Describe {
        topics: Vec<String>,
        /// Print every setting with its source, not only the topic's own overrides (JSON
        /// always has every setting).
        #[arg(long)]
        all_configs: bool,
    },
    /// Delete topics (DeleteTopics).
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Change topic settings (IncrementalAlterConfigs): --set NAME=VALUE, --delete NAME
    /// (back to the broker's default).
    AlterConfig {
        topic: String,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        #[arg(long = "delete", value_name = "NAME")]
        delete: Vec<String>,
    },
    /// Earliest and latest offset of each partition (ListOffsets, as kafka-get-offsets.sh).
    Offsets {
        topic: String,
        /// A partition, repeatable; none names every partition of the topic.
        #[arg(long = "partition")]
        partitions: Vec<i32>,
    },
    /// Delete the records below an offset (DeleteRecords, as kafka-delete-records.sh):
    /// readers start at the new low watermark and the segments below it are freed.
    DeleteRecords {
        topic: String,
        /// Records below this offset go; -1 takes each partition's high watermark (all).
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
        /// A partition, repeatable; none names every partition of the topic.
        #[arg(long = "partition")]
        partitions: Vec<i32>,
    },
    /// Grow a topic to a new total partition count (CreatePartitions).
    AddPartitions {
        topic: String,
        /// The new total number of partitions (Kafka's kafka-topics --alter --partitions).
        #[arg(long = "total", visible_alias = "partitions")]
        total: i32,
    },
}

pub(crate) fn run(verb: &TopicVerb, args: &ClientArgs) -> Result<()> {
    let mut client = Client::connect(args)?;
    let timeout_ms = args.timeout_ms();
    match verb {
        TopicVerb::Create {
            topic,
            partitions,
            replication_factor,
            config,
            if_not_exists,
        } => {
            let configs = config
                .iter()
                .map(|kv| {
                    let (k, v) = split_kv(kv, "--config")?;
                    Ok(CreatableTopicConfig::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v))))
                })
                .collect::<Result<Vec<_>>>()?;
            let req = CreateTopicsRequest::default()
                .with_timeout_ms(timeout_ms)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic_name(topic))
                    .with_num_partitions(*partitions)
                    .with_replication_factor(*replication_factor)
                    .with_configs(configs)]);
            let conn = client.controller()?;
            if (*partitions < 0 || *replication_factor < 0)
                && conn.version::<CreateTopicsRequest>(7)? < 4
            {
                bail!(
                    "this broker needs --partitions and --replication-factor (CreateTopics < v4)"
                );
            }
            let (version, resp) = conn.call(7, &req)?;
            let Some(r) = resp.topics.first() else {
                bail!("CreateTopics answered no topic");
            };
            let existed = r.error_code == kafka_protocol::ResponseError::TopicAlreadyExists.code();
            if r.error_code != 0 && !(existed && *if_not_exists) {
                return Err(kafka_error(
                    r.error_code,
                    &format!("creating topic '{topic}'"),
                    r.error_message.as_deref(),
                ));
            }
            let known = |v: i64| (version >= 5 && v >= 0).then_some(v);
            match args.format {
                Format::Table if existed => println!("Topic {topic} already exists."),
                Format::Table => println!("Created topic {topic}."),
                Format::Json => print_json(&json!({
                    "topic": topic,
                    "created": !existed,
                    "topic_id": (version >= 7 && !existed).then(|| topic_id(&r.topic_id)),
                    "partitions": known(r.num_partitions.into()),
                    "replication_factor": known(r.replication_factor.into()),
                })),
            }
        }
        TopicVerb::List { exclude_internal } => {
            let md = client.metadata(None, false)?;
            let mut names: Vec<(String, bool, usize, usize)> = md
                .topics
                .iter()
                .filter(|t| t.error_code == 0 && !(*exclude_internal && t.is_internal))
                .map(|t| {
                    let rf = t
                        .partitions
                        .iter()
                        .map(|p| p.replica_nodes.len())
                        .max()
                        .unwrap_or(0);
                    (name_of(&t.name), t.is_internal, t.partitions.len(), rf)
                })
                .collect();
            names.sort();
            match args.format {
                Format::Table => {
                    for (n, ..) in &names {
                        println!("{n}");
                    }
                }
                Format::Json => print_json(&Value::Array(
                    names
                        .iter()
                        .map(|(n, internal, parts, rf)| {
                            json!({"name": n, "internal": internal, "partitions": parts,
                                   "replication_factor": rf})
                        })
                        .collect(),
                )),
            }
        }
        TopicVerb::Describe {
            topics,
            all_configs,
        } => describe(&mut client, topics, *all_configs, args.format)?,
        TopicVerb::Delete { topics } => {
            let conn = client.controller()?;
            let version = conn.version::<DeleteTopicsRequest>(6)?;
            let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
            if version >= 6 {
                req.topics = topics
                    .iter()
                    .map(|t| DeleteTopicState::default().with_name(Some(topic_name(t))))
                    .collect();
            } else {
                req.topic_names = topics.iter().map(|t| topic_name(t)).collect();
            }
            let resp = conn.call_at(version, &req)?;
            let mut first_err = None;
            let mut done = Vec::new();
            for r in &resp.responses {
                let name = name_of(&r.name);
                if r.error_code != 0 {
                    eprintln!(
                        "sluice: {}",
                        kafka_error(
                            r.error_code,
                            &format!("deleting topic '{name}'"),
                            r.error_message.as_deref()
                        )
                    );
                    first_err.get_or_insert((r.error_code, name));
                } else {
                    done.push(name);
                }
            }
            match args.format {
                Format::Table => {
                    for n in &done {
                        println!("Deleted topic {n}.");
                    }
                }
                Format::Json => print_json(&json!({ "deleted": done })),
            }
            if let Some((code, name)) = first_err {
                return Err(kafka_error(code, &format!("deleting topic '{name}'"), None));
            }
        }
        TopicVerb::AlterConfig { topic, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                bail!("alter-config needs --set NAME=VALUE or --delete NAME");
            }
            let mut configs = Vec::new();
            for kv in set {
                let (k, v) = split_kv(kv, "--set")?;
                configs.push(
                    AlterableConfig::default()
                        .with_name(str_bytes(k))
                        .with_config_operation(0)
                        .with_value(Some(str_bytes(v))),
                );
            }
            for k in delete {
                configs.push(
                    AlterableConfig::default()
                        .with_name(str_bytes(k))
                        .with_config_operation(1),
                );
            }
            let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(str_bytes(topic))
                    .with_configs(configs),
            ]);
            let (_, resp) = client.controller()?.call(1, &req)?;
            let Some(r) = resp.responses.first() else {
                bail!("IncrementalAlterConfigs answered no resource");
            };
            if r.error_code != 0 {
                return Err(kafka_error(
                    r.error_code,
                    &format!("altering the configs of topic '{topic}'"),
                    r.error_message.as_deref(),
                ));
            }
            match args.format {
                Format::Table => println!("Altered the configs of topic {topic}."),
                Format::Json => print_json(&json!({"topic": topic, "set": set, "deleted": delete})),
            }
        }
        TopicVerb::Offsets { topic, partitions } => {
            super::offsets::run(&mut client, topic, partitions, args.format)?
        }
        TopicVerb::DeleteRecords {
            topic,
            before,
            partitions,
        } => super::delete_records::run(&mut client, topic, partitions, *before, args.format)?,
        TopicVerb::AddPartitions { topic, total } => {
            let req = CreatePartitionsRequest::default()
                .with_timeout_ms(timeout_ms)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic_name(topic))
                    .with_count(*total)]);
            let (_, resp) = client.controller()?.call(3, &req)?;
            let Some(r) = resp.results.first() else {
                bail!("CreatePartitions answered no topic");
            };
            if r.error_code != 0 {
                return Err(kafka_error(
                    r.error_code,
                    &format!("growing topic '{topic}' to {total} partitions"),
                    r.error_message.as_deref(),
                ));
            }
            match args.format {
                Format::Table => println!("Topic {topic} now has {total} partitions."),
                Format::Json => print_json(&json!({"topic": topic, "partitions": total})),
            }
        }
    }
    Ok(())
}

/// One topic setting as DescribeConfigs answered it.
struct ConfigEntry {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

fn describe(client: &mut Client, topics: &[String], all: bool, format: Format) -> Result<()> {
    let md: MetadataResponse = if topics.is_empty() {
        client.metadata(None, false)?
    } else {
        client.metadata(Some(topics), false)?
    };
    let mut out = Vec::new();
    let mut text = String::new();
    let mut described: Vec<_> = md.topics.iter().collect();
    described.sort_by_key(|t| name_of(&t.name));
    let sizes = leader_sizes(client, &described);
    for t in described {
        let name = name_of(&t.name);
        if t.error_code != 0 {
            return Err(kafka_error(
                t.error_code,
                &format!("describing topic '{name}'"),
                None,
            ));
        }
        let configs = describe_configs(client, &name)?;
        let mut parts: Vec<_> = t.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        let rf = parts
            .iter()
            .map(|p| p.replica_nodes.len())
            .max()
            .unwrap_or(0);
        let id = (!t.topic_id.is_nil()).then(|| topic_id(&t.topic_id));
        let as_ids = |v: &[kafka_protocol::messages::BrokerId]| -> Vec<i32> {
            v.iter().map(|b| b.0).collect()
        };
        match format {
            Format::Table => {
                text.push_str(&format!(
                    "Topic: {name}  TopicId: {}  PartitionCount: {}  ReplicationFactor: {rf}  Internal: {}\n",
                    id.as_deref().unwrap_or("-"),
                    parts.len(),
                    t.is_internal
                ));
                let shown: Vec<String> = configs
                    .iter()
                    .filter(|c| all || c.source == "DYNAMIC_TOPIC_CONFIG")
                    .map(|c| {
                        let v = if c.sensitive {
                            "(sensitive)".to_string()
                        } else {
                            c.value.clone().unwrap_or_else(|| "null".into())
                        };
                        if all {
                            format!("{}={v} ({})", c.name, c.source)
                        } else {
                            format!("{}={v}", c.name)
                        }
                    })
                    .collect();
                if all {
                    text.push_str("Configs:\n");
                    for c in &shown {
                        text.push_str(&format!("  {c}\n"));
                    }
                } else {
                    text.push_str(&format!("Configs: {}\n", shown.join(",")));
                }
                let mut table = Table::new(&[
                    "PARTITION",
                    "LEADER",
                    "EPOCH",
                    "REPLICAS",
                    "ISR",
                    "OFFLINE",
                    "SIZE",
                ]);
                for p in &parts {
                    let size = sizes.get(&(name.clone(), p.partition_index));
                    table.row(vec![
                        p.partition_index.to_string(),
                        if p.leader_id.0 < 0 {
                            "none".into()
                        } else {
                            p.leader_id.0.to_string()
                        },
                        p.leader_epoch.to_string(),
                        ids(&as_ids(&p.replica_nodes)),
                        ids(&as_ids(&p.isr_nodes)),
                        ids(&as_ids(&p.offline_replicas)),
                        size.map_or_else(|| "-".into(), i64::to_string),
                    ]);
                }
                text.push_str(&table.render());
                text.push('\n');
            }
            Format::Json => out.push(json!({
                "name": name,
                "topic_id": id,
                "internal": t.is_internal,
                "partitions": parts.iter().map(|p| json!({
                    "partition": p.partition_index,
                    "leader": (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                    "leader_epoch": p.leader_epoch,
                    "replicas": as_ids(&p.replica_nodes),
                    "isr": as_ids(&p.isr_nodes),
                    "offline_replicas": as_ids(&p.offline_replicas),
                    "size_bytes": sizes.get(&(name.clone(), p.partition_index)),
                })).collect::<Vec<_>>(),
                "configs": configs.iter().map(|c| json!({
                    "name": c.name,
                    "value": if c.sensitive { None } else { c.value.clone() },
                    "source": c.source,
                    "read_only": c.read_only,
                    "sensitive": c.sensitive,
                })).collect::<Vec<_>>(),
            })),
        }
    }
    match format {
        Format::Table => print!("{text}"),
        Format::Json => print_json(&Value::Array(out)),
    }
    Ok(())
}

/// Each partition's size in bytes on its leader: DescribeLogDirs to every leader of the
/// `topics` described, naming only their partitions. A broker that cannot answer (no
/// DESCRIBE on the cluster, a broker without the API, a connection that fails) leaves its
/// partitions out (shown as "-"): the sizes add to the description, they never fail it.
fn leader_sizes(
    client: &mut Client,
    topics: &[&MetadataResponseTopic],
) -> BTreeMap<(String, i32), i64> {
    let mut by_leader: BTreeMap<i32, Vec<DescribableLogDirTopic>> = Default::default();
    for t in topics.iter().filter(|t| t.error_code == 0) {
        let mut led: BTreeMap<i32, Vec<i32>> = Default::default();
        for p in t.partitions.iter().filter(|p| p.leader_id.0 >= 0) {
            led.entry(p.leader_id.0)
                .or_default()
                .push(p.partition_index);
        }
        for (leader, partitions) in led {
            by_leader.entry(leader).or_default().push(
                DescribableLogDirTopic::default()
                    .with_topic(topic_name(&name_of(&t.name)))
                    .with_partitions(partitions),
            );
        }
    }
    let mut out = BTreeMap::new();
    for (leader, wanted) in by_leader {
        let req = DescribeLogDirsRequest::default().with_topics(Some(wanted));
        let answer = client
            .broker(leader)
            .and_then(|conn| conn.call(4, &req))
            .map(|(_, r)| r);
        let Ok(resp) = answer else {
            // a connection left mid-answer is of no further use
            client.drop_conn(leader);
            continue;
        };
        if resp.error_code != 0 {
            continue;
        }
        for dir in resp.results.iter().filter(|d| d.error_code == 0) {
            for t in &dir.topics {
                for p in &t.partitions {
                    *out.entry((t.name.0.to_string(), p.partition_index))
                        .or_insert(0) += p.partition_size;
                }
            }
        }
    }
    out
}

/// Every setting of `topic` (DescribeConfigs, from any broker).
fn describe_configs(client: &mut Client, topic: &str) -> Result<Vec<ConfigEntry>> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(str_bytes(topic))
            .with_configuration_keys(None)]);
    let (version, resp) = client.any().call(4, &req)?;
    let Some(r) = resp.results.first() else {
        bail!("DescribeConfigs answered no resource for topic '{topic}'");
    };
    if r.error_code != 0 {
        return Err(kafka_error(
            r.error_code,
            &format!("describing the configs of topic '{topic}'"),
            r.error_message.as_deref(),
        ));
    }
    let mut out: Vec<ConfigEntry> = r
        .configs
        .iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            // v0 has only is_default (decoded into config_source's place as not present)
            source: if version == 0 {
                "UNKNOWN"
            } else {
                config_source(c.config_source)
            },
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Kafka's ConfigSource names.
fn config_source(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

fn name_of(n: &Option<kafka_protocol::messages::TopicName>) -> String {
    n.as_ref().map(|n| n.0.to_string()).unwrap_or_default()
}
