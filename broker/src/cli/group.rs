//! `sluice group list|describe|delete` (and the group requests `reset-offsets` and `consume
//! --group` share): ListGroups from every broker, DescribeGroups, OffsetFetch and
//! OffsetCommit at the group's coordinator, ListOffsets at the partitions' leaders.
//! Lag is the high watermark (ListOffsets LATEST, read_uncommitted) minus the committed
//! offset, as Kafka's kafka-consumer-groups computes it; it is null when nothing is
//! committed. Members come from DescribeGroups, their partitions from decoding the consumer
//! protocol's member assignment.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, Message};
use kafka_protocol::ResponseError;
use serde_json::{json, Value};

use super::client::{str_bytes, topic_name, Client, Conn, LATEST};
use super::format::{kafka_error, opt_num, print_json, Format, Table};
use super::reset::{self, ResetArgs};
use super::ClientArgs;

/// A (topic, partition) pair.
pub(crate) type Tp = (String, i32);

#[derive(Debug, clap::Subcommand)]
pub(crate) enum GroupVerb {
    /// Every consumer group any broker coordinates, with its state.
    List,
    /// Per partition: committed offset, log end offset, high watermark, lag, member and host.
    ///
    /// committed_offset: the group's last commit (null: none).
    ///
    /// high_watermark: what ListOffsets LATEST (read_uncommitted) answers, the end of what
    /// consumers can read.
    ///
    /// log_end_offset: the same ListOffsets LATEST value, which is what Kafka's
    /// kafka-consumer-groups prints as LOG-END-OFFSET. The leader's own log end (with
    /// records not yet on every in-sync replica) is not exposed to clients by the Kafka
    /// protocol, so no tool can print it.
    ///
    /// lag: high_watermark - committed_offset (null without a commit).
    ///
    /// member, host: the member the partition is assigned to and its host, while the group
    /// has members (null otherwise).
    Describe { group: String },
    /// Delete groups that have no members, with their committed offsets (DeleteGroups).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Plan (by default) or commit (--execute) new committed offsets for an inactive group.
    ResetOffsets(ResetArgs),
}

pub(crate) fn run(verb: &GroupVerb, args: &ClientArgs) -> Result<()> {
    let mut client = Client::connect(args)?;
    match verb {
        GroupVerb::List => list(&mut client, args.format),
        GroupVerb::Describe { group } => describe(&mut client, group, args.format),
        GroupVerb::Delete { groups } => delete(&mut client, groups, args.format),
        GroupVerb::ResetOffsets(r) => reset::run(&mut client, r, args.format),
    }
}

fn list(client: &mut Client, format: Format) -> Result<()> {
    client.metadata(Some(&[]), false)?;
    let ids: Vec<i32> = client.brokers().keys().copied().collect();
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    for id in ids {
        let conn = client.broker(id)?;
        let (_, resp) = conn.call(4, &ListGroupsRequest::default())?;
        if resp.error_code != 0 {
            return Err(kafka_error(
                resp.error_code,
                &format!("listing the groups of broker {id}"),
                None,
            ));
        }
        for g in resp.groups {
            groups.insert(
                g.group_id.0.to_string(),
                (g.group_state.to_string(), g.protocol_type.to_string()),
            );
        }
    }
    match format {
        Format::Table => {
            let mut t = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE"]);
            for (g, (state, proto)) in &groups {
                t.row(vec![g.clone(), or_dash(state), or_dash(proto)]);
            }
            print!("{}", t.render());
        }
        Format::Json => print_json(&Value::Array(
            groups
                .iter()
                .map(|(g, (state, proto))| {
                    json!({"group": g, "state": non_empty(state), "protocol_type": non_empty(proto)})
                })
                .collect(),
        )),
    }
    Ok(())
}

/// One row of `group describe`.
struct Row {
    tp: Tp,
    committed: Option<i64>,
    high_watermark: Option<i64>,
    member: Option<String>,
    host: Option<String>,
}

fn describe(client: &mut Client, group: &str, format: Format) -> Result<()> {
    let g = describe_group(client, group)?;
    let state = g.group_state.to_string();
    let committed = committed_offsets(client, group)?;
    if state == "Dead" && committed.is_empty() {
        return Err(kafka_error(
            ResponseError::GroupIdNotFound.code(),
            &format!("describing group '{group}'"),
            Some("the group does not exist"),
        ));
    }
    let mut owners: BTreeMap<Tp, (String, String)> = BTreeMap::new();
    if g.protocol_type.is_empty() || g.protocol_type.as_str() == "consumer" {
        for m in &g.members {
            // a member of another protocol, or one whose assignment is not yet synced
            let Ok(assigned) = decode_assignment(&m.member_assignment) else {
                continue;
            };
            for tp in assigned {
                owners.insert(tp, (m.member_id.to_string(), m.client_host.to_string()));
            }
        }
    }
    let mut tps: Vec<Tp> = committed.keys().chain(owners.keys()).cloned().collect();
    tps.sort();
    tps.dedup();
    // a partition the cluster no longer has (its topic deleted, or shrunk by a
    // re-creation) shows "-" for its end and lag, as in kafka-consumer-groups.sh, rather
    // than failing the whole description
    let known = existing_partitions(client, &tps)?;
    let asked: Vec<Tp> = tps
        .iter()
        .filter(|tp| known.contains(tp))
        .cloned()
        .collect();
    let hws = if asked.is_empty() {
        BTreeMap::new()
    } else {
        client.list_offsets(&asked, LATEST)?
    };
    let rows: Vec<Row> = tps
        .into_iter()
        .map(|tp| Row {
            committed: committed.get(&tp).copied(),
            high_watermark: hws.get(&tp).copied().filter(|o| *o >= 0),
            member: owners.get(&tp).map(|o| o.0.clone()),
            host: owners.get(&tp).map(|o| o.1.clone()),
            tp,
        })
        .collect();
    let lag = |r: &Row| match (r.committed, r.high_watermark) {
        (Some(c), Some(h)) => Some((h - c).max(0)),
        _ => None,
    };
    match format {
        Format::Table => {
            println!(
                "Group {group} is {state} with {} member(s).",
                g.members.len()
            );
            let mut t = Table::new(&[
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "HIGH-WATERMARK",
                "LAG",
                "MEMBER",
                "HOST",
            ]);
            for r in &rows {
                t.row(vec![
                    r.tp.0.clone(),
                    r.tp.1.to_string(),
                    opt_num(r.committed),
                    opt_num(r.high_watermark),
                    opt_num(r.high_watermark),
                    opt_num(lag(r)),
                    r.member.clone().unwrap_or_else(|| "-".into()),
                    r.host.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            if !t.is_empty() {
                print!("{}", t.render());
            }
        }
        Format::Json => print_json(&json!({
            "group": group,
            "state": state,
            "partitions": rows.iter().map(|r| json!({
                "topic": r.tp.0,
                "partition": r.tp.1,
                "committed_offset": r.committed,
                "log_end_offset": r.high_watermark,
                "high_watermark": r.high_watermark,
                "lag": lag(r),
                "member": r.member,
                "host": r.host,
            })).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

fn delete(client: &mut Client, groups: &[String], format: Format) -> Result<()> {
    let mut deleted = Vec::new();
    let mut first_err = None;
    for g in groups {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![group_id(g)]);
        let (_, resp) = client.coordinator(g)?.call(2, &req)?;
        let code = resp.results.first().map_or(0, |r| r.error_code);
        if code == 0 {
            deleted.push(g.clone());
        } else {
            let e = kafka_error(code, &format!("deleting group '{g}'"), None);
            eprintln!("sluice: {e}");
            first_err.get_or_insert(e);
        }
    }
    match format {
        Format::Table => {
            for g in &deleted {
                println!("Deleted group {g}.");
            }
        }
        Format::Json => print_json(&json!({ "deleted": deleted })),
    }
    first_err.map_or(Ok(()), Err)
}

/// Which of `tps` the cluster's metadata lists (a topic that exists without a topic-level
/// error, a partition below its count).
fn existing_partitions(client: &mut Client, tps: &[Tp]) -> Result<BTreeSet<Tp>> {
    let mut topics: Vec<String> = tps.iter().map(|(t, _)| t.clone()).collect();
    topics.dedup();
    if topics.is_empty() {
        return Ok(BTreeSet::new());
    }
    let md = client.metadata(Some(&topics), false)?;
    Ok(md
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .flat_map(|t| {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition_index))
        })
        .collect())
}

/// DescribeGroups of one group at its coordinator.
pub(crate) fn describe_group(client: &mut Client, group: &str) -> Result<DescribedGroup> {
    let req = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let (_, resp) = client.coordinator(group)?.call(5, &req)?;
    let Some(g) = resp.groups.into_iter().next() else {
        bail!("DescribeGroups answered no group for '{group}'");
    };
    if g.error_code != 0 {
        return Err(kafka_error(
            g.error_code,
            &format!("describing group '{group}'"),
            g.error_message.as_deref(),
        ));
    }
    Ok(g)
}

/// Every committed offset of `group` (OffsetFetch of all topics, v2 and later).
pub(crate) fn committed_offsets(client: &mut Client, group: &str) -> Result<BTreeMap<Tp, i64>> {
    let conn = client.coordinator(group)?;
    let version = conn.version::<OffsetFetchRequest>(8)?;
    if version < 2 {
        bail!("the coordinator only serves OffsetFetch v{version} (v2 lists every partition)");
    }
    let req = if version >= 8 {
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(None)])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None)
    };
    let resp = conn.call_at(version, &req)?;
    let mut out = BTreeMap::new();
    let what = format!("fetching the committed offsets of group '{group}'");
    let mut put = |topic: &str, partition: i32, offset: i64, code: i16| -> Result<()> {
        if code != 0 {
            return Err(kafka_error(code, &what, None));
        }
        if offset >= 0 {
            out.insert((topic.to_string(), partition), offset);
        }
        Ok(())
    };
    if version >= 8 {
        for g in &resp.groups {
            if g.error_code != 0 {
                return Err(kafka_error(g.error_code, &what, None));
            }
            for t in &g.topics {
                for p in &t.partitions {
                    put(
                        &t.name.0,
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        }
    } else {
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, &what, None));
        }
        for t in &resp.topics {
            for p in &t.partitions {
                put(
                    &t.name.0,
                    p.partition_index,
                    p.committed_offset,
                    p.error_code,
                )?;
            }
        }
    }
    Ok(out)
}

/// OffsetCommit of `offsets` to the coordinator `conn`; generation -1 and an empty member
/// id commit for an inactive group, as Kafka's tools do.
pub(crate) fn commit_offsets(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<Tp, i64>,
) -> Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        by_topic.entry(t).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1),
        );
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str_bytes(member_id))
        .with_retention_time_ms(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let (_, resp) = conn.call(8, &req)?;
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(kafka_error(
                    p.error_code,
                    &format!(
                        "committing the offset of {}-{} for group '{group}'",
                        t.name.0, p.partition_index
                    ),
                    None,
                ));
            }
        }
    }
    Ok(())
}

/// The partitions in a consumer-protocol member assignment (empty before a sync).
pub(crate) fn decode_assignment(raw: &Bytes) -> Result<Vec<Tp>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let a: ConsumerProtocolAssignment = decode_versioned(raw, "member assignment")?;
    Ok(a.assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
        .collect())
}

/// A consumer-protocol message (assignment, subscription): an i16 version, then the
/// message in that version; a newer version than this client knows is read as the newest
/// it knows, as Kafka's clients do.
pub(crate) fn decode_versioned<M: Decodable + Message>(raw: &Bytes, what: &str) -> Result<M> {
    let mut buf = raw.clone();
    if buf.remaining() < 2 {
        bail!("{what} of {} bytes", raw.len());
    }
    let version = buf.get_i16();
    if version < 0 {
        bail!("{what} version {version}");
    }
    M::decode(&mut buf, version.min(M::VERSIONS.max))
}

pub(crate) fn group_id(g: &str) -> GroupId {
    GroupId(str_bytes(g))
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
