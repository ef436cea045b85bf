//! Versions Kafka 3.9 served and Kafka 4.0 removed (KIP-896), below the range of
//! `kafka-protocol` 0.18: their request and response layouts, read and written by hand
//! (`wire`), around the same handlers the current versions use.
//!
//! ```text
//!  ListOffsets v0        hand ─► ListOffsetsRequest (+ max_num_offsets) ─► list_offsets ─► old_style_offsets, hand
//!  OffsetCommit v0-1     hand ─► OffsetCommitRequest (+ v1 timestamps)  ─► groups ─► v2 layout (the same bytes)
//!  OffsetFetch v0        v1 layout (the same bytes) both ways
//!  DescribeConfigs v0    hand ─► DescribeConfigsRequest ─► configs ─► is_default for config_source, hand
//!  CreateTopics v0-1     hand ─► CreateTopicsRequest ─► admin ─► hand
//!  DeleteTopics v0       v1 layout ─► admin ─► hand
//!  Produce v0-2          hand ─► ProduceRequest (message sets) ─► produce (up-converts) ─► hand
//!  Fetch v0-3            hand ─► FetchRequest ─► fetch (down-converts) ─► fetch_encode
//! ```
//! Layouts follow Kafka's message JSON (`clients/src/main/resources/common/message`) for
//! each version; every read is bounds-checked and nothing is allocated from a peer's count.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, GroupId,
    ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use sluice_proto::request::{decode_body, RequestFrame};

use super::wire::{Reader, WireError, Writer};
use super::{authz, authz_resources, groups, legacy_respond, list_offsets, Dispatch};
use crate::connection::Conn;
use crate::security::acl::{AclOperation as Op, ResourceType as Rt};
use crate::shard::ShardCtx;

/// Kafka's ConfigSource for a value nobody set (v0 reports it as `is_default`).
const DEFAULT_CONFIG: i8 = 5;

/// Starts `frame` if it is one of the old versions above; None for every other version.
/// Each answers ACLs per resource as its current versions do (`authz_resources`, and
/// here for the layouts only these versions have).
pub(crate) fn dispatch(
    ctx: &Rc<ShardCtx>,
    frame: &RequestFrame,
    conn: &Rc<Conn>,
) -> Option<Dispatch> {
    let conn = conn.clone();
    let d = match (frame.api_key, frame.version()) {
        (ApiKey::ListOffsets, 0) => legacy_respond(
            ctx,
            frame,
            list_offsets_v0_request,
            |ctx, (mut req, mut max), _| async move {
                let denied = list_offsets_v0_denied(&ctx, &conn, &mut req, &mut max);
                let mut topics = list_offsets::handle_v0(ctx, req, max).await;
                topics.extend(denied);
                list_offsets_v0_response(&topics)
            },
        ),
        (ApiKey::OffsetCommit, 0 | 1) => legacy_respond(
            ctx,
            frame,
            offset_commit_v0_v1_request,
            |ctx, (mut req, mut timestamps), v| async move {
                let resp = if ctx.access.allows(&conn, Op::Read, Rt::Group, &req.group_id) {
                    let denied = offset_commit_v0_v1_denied(&ctx, &conn, &mut req, &mut timestamps);
                    let mut resp = groups::commit(ctx, req, v, timestamps).await;
                    resp.topics.extend(denied);
                    resp
                } else {
                    commit_refused(req.topics, GROUP_AUTHORIZATION_FAILED)
                };
                // The v0-v2 responses share one layout.
                encode_body(&resp, 2)
            },
        ),
        (ApiKey::OffsetFetch, 0) => legacy_respond(
            ctx,
            frame,
            |b, _| decode_as::<OffsetFetchRequest>(b, 1),
            |ctx, req, _| async move {
                if let Some(refused) = authz::offset_fetch_group_refused(&ctx, &conn, &req, 0) {
                    return encode_body(&refused, 1);
                }
                let group = req.group_id.0.to_string();
                let mut resp = groups::offset_fetch(ctx.clone(), req, 1).await;
                authz::filter_offset_fetch(&ctx, &conn, &mut resp, &group);
                encode_body(&resp, 1)
            },
        ),
        (ApiKey::DescribeConfigs, 0) => legacy_respond(
            ctx,
            frame,
            |b, _| describe_configs_v0_request(b),
            |ctx, req, _| async move {
                describe_configs_v0_response(
                    &authz_resources::describe_configs(ctx, req, 0, conn).await,
                )
            },
        ),
        (ApiKey::CreateTopics, 0 | 1) => legacy_respond(
            ctx,
            frame,
            create_topics_v0_v1_request,
            |ctx, req, v| async move {
                create_topics_v0_v1_response(
                    &authz_resources::create_topics(ctx, req, v, conn).await,
                    v,
                )
            },
        ),
        (ApiKey::DeleteTopics, 0) => legacy_respond(
            ctx,
            frame,
            |b, _| decode_as::<DeleteTopicsRequest>(b, 1),
            |ctx, req, _| async move {
                delete_topics_v0_response(&authz_resources::delete_topics(ctx, req, 0, conn).await)
            },
        ),
        _ => return None,
    };
    Some(d)
}

const TOPIC_AUTHORIZATION_FAILED: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_AUTHORIZATION_FAILED: i16 = ResponseError::GroupAuthorizationFailed.code();

/// ListOffsets v0: takes the topics the principal may not describe out of the request
/// (with their `max_num_offsets`); their answer is TOPIC_AUTHORIZATION_FAILED per
/// partition, as in the current versions.
fn list_offsets_v0_denied(
    ctx: &ShardCtx,
    conn: &Conn,
    req: &mut ListOffsetsRequest,
    max: &mut Vec<Vec<i32>>,
) -> Vec<OldStyleTopic> {
    let mut denied = Vec::new();
    if !ctx.access.enabled() {
        return denied;
    }
    // the decoder fills both per topic, in step
    let (topics, maxes) = (std::mem::take(&mut req.topics), std::mem::take(max));
    for (t, m) in topics.into_iter().zip(maxes) {
        if ctx.access.allows(conn, Op::Describe, Rt::Topic, &t.name) {
            req.topics.push(t);
            max.push(m);
        } else {
            denied.push(OldStyleTopic {
                name: t.name.0,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, TOPIC_AUTHORIZATION_FAILED, Vec::new()))
                    .collect(),
            });
        }
    }
    denied
}

/// OffsetCommit v0-1 (READ on the group checked first): takes the topics the principal may
/// not read out of the request (with their v1 timestamps); their offsets are not committed
/// and their answer is TOPIC_AUTHORIZATION_FAILED per partition.
fn offset_commit_v0_v1_denied(
    ctx: &ShardCtx,
    conn: &Conn,
    req: &mut OffsetCommitRequest,
    timestamps: &mut Vec<Vec<i64>>,
) -> Vec<OffsetCommitResponseTopic> {
    if !ctx.access.enabled() {
        return Vec::new();
    }
    let mut denied = Vec::new();
    // the decoder fills both per topic, in step
    let (topics, stamps) = (std::mem::take(&mut req.topics), std::mem::take(timestamps));
    for (t, ts) in topics.into_iter().zip(stamps) {
        if ctx.access.allows(conn, Op::Read, Rt::Topic, &t.name) {
            req.topics.push(t);
            timestamps.push(ts);
        } else {
            denied.push(t);
        }
    }
    commit_refused(denied, TOPIC_AUTHORIZATION_FAILED).topics
}

/// An OffsetCommit answer with `code` for every partition of `topics`.
fn commit_refused(topics: Vec<OffsetCommitRequestTopic>, code: i16) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        topics
            .into_iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Decodes a body whose layout is identical to `version` of the current message.
fn decode_as<T: kafka_protocol::protocol::Decodable>(
    body: &Bytes,
    version: i16,
) -> Result<T, WireError> {
    decode_body(body, version).map_err(|e| WireError::Other(e.to_string()))
}

/// Encodes a response body in the layout of `version` of the current message.
fn encode_body<R: Encodable>(body: &R, version: i16) -> Result<BytesMut, WireError> {
    let mut out = BytesMut::new();
    body.encode(&mut out, version)
        .map_err(|e| WireError::Other(e.to_string()))?;
    Ok(out)
}

fn topic_name(s: StrBytes) -> TopicName {
    TopicName(s)
}

/// ListOffsets v0: replica_id, [topic, [partition, timestamp, max_num_offsets]]. Returns
/// the request and each partition's max_num_offsets.
pub(crate) fn list_offsets_v0_request(
    body: &Bytes,
    _version: i16,
) -> Result<(ListOffsetsRequest, Vec<Vec<i32>>), WireError> {
    let mut r = Reader::new(body);
    let replica_id = r.i32("replica_id")?;
    let mut req = ListOffsetsRequest::default().with_replica_id(BrokerId(replica_id));
    let mut max = Vec::new();
    for _ in 0..r.count("topics", 6)? {
        let name = r.string("topic name")?;
        let mut topic = ListOffsetsTopic::default().with_name(topic_name(name));
        let mut topic_max = Vec::new();
        for _ in 0..r.count("partitions", 16)? {
            let partition = r.i32("partition")?;
            let timestamp = r.i64("timestamp")?;
            topic_max.push(r.i32("max_num_offsets")?);
            topic.partitions.push(
                ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp),
            );
        }
        req.topics.push(topic);
        max.push(topic_max);
    }
    Ok((req, max))
}

/// One topic of a ListOffsets v0 answer: (partition, error code, old_style_offsets).
pub(crate) struct OldStyleTopic {
    pub(crate) name: StrBytes,
    pub(crate) partitions: Vec<(i32, i16, Vec<i64>)>,
}

/// ListOffsets v0 response: [topic, [partition, error_code, [offset]]].
pub(crate) fn list_offsets_v0_response(topics: &[OldStyleTopic]) -> Result<BytesMut, WireError> {
    let mut w = Writer::new();
    w.array_len("topics", topics.len())?;
    for t in topics {
        w.string("topic name", &t.name)?;
        w.array_len("partitions", t.partitions.len())?;
        for (partition, error, offsets) in &t.partitions {
            w.i32(*partition);
            w.i16(*error);
            w.array_len("old_style_offsets", offsets.len())?;
            for &o in offsets {
                w.i64(o);
            }
        }
    }
    Ok(w.finish())
}

/// OffsetCommit v0: group, [topic, [partition, offset, metadata]]. v1 adds generation and
/// member id after the group, and a commit timestamp after each offset. Returns the request
/// (generation -1 and no member for v0) and v1's timestamps (empty lists for v0).
pub(crate) fn offset_commit_v0_v1_request(
    body: &Bytes,
    version: i16,
) -> Result<(OffsetCommitRequest, Vec<Vec<i64>>), WireError> {
    let mut r = Reader::new(body);
    let group = r.string("group_id")?;
    let mut req = OffsetCommitRequest::default().with_group_id(GroupId(group));
    if version >= 1 {
        req.generation_id_or_member_epoch = r.i32("generation_id")?;
        req.member_id = r.string("member_id")?;
    }
    let min_partition = if version >= 1 { 22 } else { 14 };
    let mut timestamps = Vec::new();
    for _ in 0..r.count("topics", 6)? {
        let name = r.string("topic name")?;
        let mut topic = OffsetCommitRequestTopic::default().with_name(topic_name(name));
        let mut topic_ts = Vec::new();
        for _ in 0..r.count("partitions", min_partition)? {
            let partition = r.i32("partition")?;
            let offset = r.i64("committed_offset")?;
            if version >= 1 {
                topic_ts.push(r.i64("commit_timestamp")?);
            }
            let metadata = r.nullable_string("committed_metadata")?;
            topic.partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_metadata(metadata),
            );
        }
        req.topics.push(topic);
        timestamps.push(topic_ts);
    }
    Ok((req, timestamps))
}

/// DescribeConfigs v0: [resource_type, resource_name, [configuration_keys] (nullable)].
pub(crate) fn describe_configs_v0_request(
    body: &Bytes,
) -> Result<DescribeConfigsRequest, WireError> {
    let mut r = Reader::new(body);
    let mut req = DescribeConfigsRequest::default();
    for _ in 0..r.count("resources", 7)? {
        let resource_type = r.i8("resource_type")?;
        let resource_name = r.string("resource_name")?;
        let keys = match r.array_len("configuration_keys", 2)? {
            None => None,
            Some(n) => Some(
                (0..n)
                    .map(|_| r.string("configuration key"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        req.resources.push(
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(resource_name)
                .with_configuration_keys(keys),
        );
    }
    Ok(req)
}

/// DescribeConfigs v0 response: throttle_time_ms, [error_code, error_message,
/// resource_type, resource_name, [name, value, read_only, is_default, is_sensitive]].
pub(crate) fn describe_configs_v0_response(
    resp: &DescribeConfigsResponse,
) -> Result<BytesMut, WireError> {
    let mut w = Writer::new();
    w.i32(resp.throttle_time_ms);
    w.array_len("results", resp.results.len())?;
    for res in &resp.results {
        w.i16(res.error_code);
        w.nullable_string("error_message", res.error_message.as_deref())?;
        w.i8(res.resource_type);
        w.string("resource_name", &res.resource_name)?;
        w.array_len("configs", res.configs.len())?;
        for c in &res.configs {
            w.string("config name", &c.name)?;
            w.nullable_string("config value", c.value.as_deref())?;
            w.bool(c.read_only);
            w.bool(c.config_source == DEFAULT_CONFIG);
            w.bool(c.is_sensitive);
        }
    }
    Ok(w.finish())
}

/// CreateTopics v0: [name, num_partitions, replication_factor, [partition, [broker]],
/// [config name, config value]], timeout_ms; v1 adds validate_only at the end.
pub(crate) fn create_topics_v0_v1_request(
    body: &Bytes,
    version: i16,
) -> Result<CreateTopicsRequest, WireError> {
    let mut r = Reader::new(body);
    let mut req = CreateTopicsRequest::default();
    for _ in 0..r.count("topics", 16)? {
        let name = r.string("topic name")?;
        let mut topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(r.i32("num_partitions")?)
            .with_replication_factor(r.i16("replication_factor")?);
        for _ in 0..r.count("assignments", 8)? {
            let partition = r.i32("assignment partition")?;
            let brokers = (0..r.count("broker_ids", 4)?)
                .map(|_| r.i32("broker id").map(BrokerId))
                .collect::<Result<Vec<_>, _>>()?;
            topic.assignments.push(
                CreatableReplicaAssignment::default()
                    .with_partition_index(partition)
                    .with_broker_ids(brokers),
            );
        }
        for _ in 0..r.count("configs", 4)? {
            let name = r.string("config name")?;
            let value = r.nullable_string("config value")?;
            topic.configs.push(
                CreatableTopicConfig::default()
                    .with_name(name)
                    .with_value(value),
            );
        }
        req.topics.push(topic);
    }
    req.timeout_ms = r.i32("timeout_ms")?;
    if version >= 1 {
        req.validate_only = r.bool("validate_only")?;
    }
    Ok(req)
}

/// CreateTopics v0 response: [name, error_code]; v1 adds error_message.
pub(crate) fn create_topics_v0_v1_response(
    resp: &CreateTopicsResponse,
    version: i16,
) -> Result<BytesMut, WireError> {
    let mut w = Writer::new();
    w.array_len("topics", resp.topics.len())?;
    for t in &resp.topics {
        w.string("topic name", &t.name.0)?;
        w.i16(t.error_code);
        if version >= 1 {
            w.nullable_string("error_message", t.error_message.as_deref())?;
        }
    }
    Ok(w.finish())
}

/// DeleteTopics v0 response: [name, error_code].
pub(crate) fn delete_topics_v0_response(
    resp: &DeleteTopicsResponse,
) -> Result<BytesMut, WireError> {
    let mut w = Writer::new();
    w.array_len("responses", resp.responses.len())?;
    for t in &resp.responses {
        w.string("topic name", t.name.as_ref().map_or("", |n| n.0.as_str()))?;
        w.i16(t.error_code);
    }
    Ok(w.finish())
}

/// Produce v0-2: acks, timeout_ms, [topic, [partition, records]]. The records are message
/// sets (formats v0/v1), left as they came for `produce` to convert.
pub(crate) fn produce_v0_v2_request(body: &Bytes) -> Result<ProduceRequest, WireError> {
    let mut r = Reader::new(body);
    let mut req = ProduceRequest::default()
        .with_acks(r.i16("acks")?)
        .with_timeout_ms(r.i32("timeout_ms")?);
    for _ in 0..r.count("topics", 6)? {
        let name = r.string("topic name")?;
        let mut topic = TopicProduceData::default().with_name(topic_name(name));
        for _ in 0..r.count("partitions", 8)? {
            let index = r.i32("partition")?;
            let records = r.nullable_bytes("records")?;
            topic.partition_data.push(
                PartitionProduceData::default()
                    .with_index(index)
                    .with_records(records),
            );
        }
        req.topic_data.push(topic);
    }
    Ok(req)
}

/// Produce v0 response: [topic, [partition, error_code, base_offset]]; v1 adds
/// throttle_time_ms at the end, v2 log_append_time after each base_offset.
pub(crate) fn produce_v0_v2_response(
    resp: &ProduceResponse,
    version: i16,
) -> Result<BytesMut, WireError> {
    let mut w = Writer::new();
    w.array_len("responses", resp.responses.len())?;
    for t in &resp.responses {
        w.string("topic name", &t.name.0)?;
        w.array_len("partitions", t.partition_responses.len())?;
        for p in &t.partition_responses {
            w.i32(p.index);
            w.i16(p.error_code);
            w.i64(p.base_offset);
            if version >= 2 {
                w.i64(p.log_append_time_ms);
            }
        }
    }
    if version >= 1 {
        w.i32(resp.throttle_time_ms);
    }
    Ok(w.finish())
}

/// Fetch v0-2: replica_id, max_wait_ms, min_bytes, [topic, [partition, fetch_offset,
/// partition_max_bytes]]; v3 adds the response's max_bytes after min_bytes. Before v3 a
/// response has no size limit of its own (Kafka read it as Int.MaxValue); the broker's
/// `fetch.max.bytes` still bounds it.
pub(crate) fn fetch_v0_v3_request(body: &Bytes, version: i16) -> Result<FetchRequest, WireError> {
    let mut r = Reader::new(body);
    let mut req = FetchRequest::default()
        .with_replica_id(BrokerId(r.i32("replica_id")?))
        .with_max_wait_ms(r.i32("max_wait_ms")?)
        .with_min_bytes(r.i32("min_bytes")?)
        .with_max_bytes(i32::MAX);
    if version >= 3 {
        req.max_bytes = r.i32("max_bytes")?;
    }
    for _ in 0..r.count("topics", 6)? {
        let name = r.string("topic name")?;
        let mut topic = FetchTopic::default().with_topic(topic_name(name));
        for _ in 0..r.count("partitions", 16)? {
            topic.partitions.push(
                FetchPartition::default()
                    .with_partition(r.i32("partition")?)
                    .with_fetch_offset(r.i64("fetch_offset")?)
                    .with_partition_max_bytes(r.i32("partition_max_bytes")?),
            );
        }
        req.topics.push(topic);
    }
    Ok(req)
}

#[cfg(test)]
#[path = "legacy_tests.rs"]
mod tests;
