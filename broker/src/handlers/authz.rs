//! ACL checks of the requests whose resources are known from the request alone, before
//! they are handled (Kafka's KafkaApis checks, with Kafka's error codes). What is checked
//! here is refused whole: the request's group, transactional id or the cluster, and
//! single-resource requests. Requests naming several topics, groups or config resources
//! answer each one (`authz_resources`; Produce, Fetch, ListOffsets and OffsetCommit in
//! their handlers; the old versions in `legacy`); Metadata, OffsetFetch, DescribeGroups,
//! ListGroups and ListTransactions hide what the principal may not describe (`filter_*`).
//! An API not listed here is served to super users only while an authorizer is on (the
//! connection of anyone else closes), so nothing is left unchecked.
//!
//! ```text
//!  dispatch ─► check(frame) ─► None: handle │ Some(answer): refused with *_AUTHORIZATION_FAILED
//! ```

use std::rc::Rc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_proto::request::{decode_body, RequestFrame};

use super::{encode, unsupported, Dispatch, Response};
use crate::connection::Conn;
use crate::security::acl::{AclOperation as Op, ResourceType as Rt};
use crate::shard::ShardCtx;

const TOPIC: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER: i16 = ResponseError::ClusterAuthorizationFailed.code();
const TXN: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();

/// Decodes the request, or refuses it (closing the connection): a request that cannot be
/// checked is never handled.
macro_rules! dec {
    ($frame:expr) => {
        match decode_body(&$frame.body, $frame.version()) {
            Ok(r) => r,
            Err(e) => {
                return Some(Dispatch::Close(format!(
                    "{:?} v{}: {e}",
                    $frame.api_key,
                    $frame.version()
                )))
            }
        }
    };
}

/// None when the request may be handled; else its refusal.
pub(crate) fn check(ctx: &Rc<ShardCtx>, frame: &RequestFrame, conn: &Conn) -> Option<Dispatch> {
    if !ctx.access.enabled() {
        return None;
    }
    let a = &ctx.access;
    let group = |op, name: &str| a.allows(conn, op, Rt::Group, name);
    let txn = |name: &str| a.allows(conn, Op::Write, Rt::TransactionalId, name);
    let refused = match frame.api_key {
        // served here or checked by their handlers
        ApiKey::ApiVersions
        | ApiKey::SaslHandshake
        | ApiKey::SaslAuthenticate
        | ApiKey::Produce
        | ApiKey::Fetch
        | ApiKey::Metadata
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups
        | ApiKey::DescribeUserScramCredentials
        | ApiKey::AlterUserScramCredentials
        | ApiKey::DescribeAcls
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls => None,
        // per resource in `authz_resources`
        ApiKey::OffsetForLeaderEpoch
        | ApiKey::CreateTopics
        | ApiKey::DeleteTopics
        | ApiKey::CreatePartitions
        | ApiKey::DescribeConfigs
        | ApiKey::AlterConfigs
        | ApiKey::IncrementalAlterConfigs
        | ApiKey::DeleteGroups
        | ApiKey::DescribeProducers
        | ApiKey::DescribeTransactions => None,
        // DESCRIBE on the cluster, refused in its own answer (`log_dirs`)
        ApiKey::DescribeLogDirs => None,
        // DELETE per topic, in its own answer (`delete_records`)
        ApiKey::DeleteRecords => None,
        // per topic: `list_offsets_denied` (v1+), `legacy` (v0)
        ApiKey::ListOffsets => None,
        // v4+ (batched keys): per key in `authz_resources`
        ApiKey::FindCoordinator if frame.version() >= 4 => None,
        ApiKey::FindCoordinator => {
            let r: FindCoordinatorRequest = dec!(frame);
            match r.key_type {
                0 => (!group(Op::Describe, &r.key)).then_some(GROUP),
                1 => (!a.allows(conn, Op::Describe, Rt::TransactionalId, &r.key)).then_some(TXN),
                _ => None, // the handler refuses an unknown key type
            }
        }
        ApiKey::JoinGroup => {
            let r: JoinGroupRequest = dec!(frame);
            (!group(Op::Read, &r.group_id)).then_some(GROUP)
        }
        ApiKey::SyncGroup => {
            let r: SyncGroupRequest = dec!(frame);
            (!group(Op::Read, &r.group_id)).then_some(GROUP)
        }
        ApiKey::Heartbeat => {
            let r: HeartbeatRequest = dec!(frame);
            (!group(Op::Read, &r.group_id)).then_some(GROUP)
        }
        ApiKey::LeaveGroup => {
            let r: LeaveGroupRequest = dec!(frame);
            (!group(Op::Read, &r.group_id)).then_some(GROUP)
        }
        // v0-1: the group and each topic in `legacy`
        ApiKey::OffsetCommit if frame.version() < 2 => None,
        ApiKey::OffsetCommit => {
            let r: OffsetCommitRequest = dec!(frame);
            // topics: per topic in `offset_commit_denied`
            (!group(Op::Read, &r.group_id)).then_some(GROUP)
        }
        ApiKey::InitProducerId => {
            let r: InitProducerIdRequest = dec!(frame);
            match &r.transactional_id {
                Some(id) if !id.is_empty() => (!txn(id)).then_some(TXN),
                _ => {
                    let ok = a.allows_cluster(conn, Op::IdempotentWrite)
                        || a.allows_any(conn, Op::Write, Rt::Topic);
                    (!ok).then_some(CLUSTER)
                }
            }
        }
        ApiKey::AddPartitionsToTxn => {
            let r: AddPartitionsToTxnRequest = dec!(frame);
            if frame.version() >= 4 {
                // the broker-to-coordinator form (verify_only batches): a cluster action
                (!a.allows_cluster(conn, Op::ClusterAction)).then_some(CLUSTER)
            } else {
                // topics: in `authz_resources`
                (!txn(&r.v3_and_below_transactional_id)).then_some(TXN)
            }
        }
        ApiKey::AddOffsetsToTxn => {
            let r: AddOffsetsToTxnRequest = dec!(frame);
            if !txn(&r.transactional_id) {
                Some(TXN)
            } else {
                (!group(Op::Read, &r.group_id)).then_some(GROUP)
            }
        }
        ApiKey::EndTxn => {
            let r: EndTxnRequest = dec!(frame);
            (!txn(&r.transactional_id)).then_some(TXN)
        }
        ApiKey::TxnOffsetCommit => {
            let r: TxnOffsetCommitRequest = dec!(frame);
            if !txn(&r.transactional_id) {
                Some(TXN)
            } else {
                // topics: per topic in `authz_resources`
                (!group(Op::Read, &r.group_id)).then_some(GROUP)
            }
        }
        ApiKey::DescribeCluster => (!a.allows_cluster(conn, Op::Describe)).then_some(CLUSTER),
        ApiKey::OffsetDelete => {
            let r: OffsetDeleteRequest = dec!(frame);
            // topics: per topic in `authz_resources`
            (!group(Op::Delete, &r.group_id)).then_some(GROUP)
        }
        ApiKey::ElectLeaders | ApiKey::AlterPartitionReassignments => {
            (!a.allows_cluster(conn, Op::Alter)).then_some(CLUSTER)
        }
        ApiKey::ListPartitionReassignments => {
            (!a.allows_cluster(conn, Op::Describe)).then_some(CLUSTER)
        }
        ApiKey::WriteTxnMarkers => (!a.allows_cluster(conn, Op::ClusterAction)).then_some(CLUSTER),
        ApiKey::ListTransactions => None,
        // everything else: super users (ALL on the cluster) only, until checked one by one
        _ => (!a.allows_cluster(conn, Op::All)).then_some(-1),
    }?;
    Some(refuse(frame, refused, conn))
}

fn decode<R: kafka_protocol::protocol::Decodable>(frame: &RequestFrame) -> Option<R> {
    decode_body(&frame.body, frame.version()).ok()
}

/// The refusal of `frame` with `code` for everything it names (-1: close the connection).
fn refuse(frame: &RequestFrame, code: i16, conn: &Conn) -> Dispatch {
    let api = frame.api_key;
    let principal = conn.principal();
    if code < 0 {
        return Dispatch::Close(format!(
            "{api:?} is served to super users only while an authorizer is on ({principal} is not one)"
        ));
    }
    tracing::debug!(?api, %principal, code, "request refused by ACLs");
    let answer: Response = match refusal(frame, code) {
        Some(r) => r,
        None => unsupported::answer_with(frame, code),
    };
    Dispatch::Respond(Box::pin(async move { answer }))
}

/// Refusals of APIs the UNSUPPORTED_VERSION builders do not cover (or cover only at
/// versions where a top-level error exists).
fn refusal(frame: &RequestFrame, code: i16) -> Option<Response> {
    let (api, v, corr) = (frame.api_key, frame.version(), frame.correlation_id());
    Some(match api {
        ApiKey::JoinGroup => encode(
            api,
            v,
            corr,
            &JoinGroupResponse::default().with_error_code(code),
        ),
        ApiKey::SyncGroup => encode(
            api,
            v,
            corr,
            &SyncGroupResponse::default().with_error_code(code),
        ),
        ApiKey::Heartbeat => encode(
            api,
            v,
            corr,
            &HeartbeatResponse::default().with_error_code(code),
        ),
        ApiKey::LeaveGroup => encode(
            api,
            v,
            corr,
            &LeaveGroupResponse::default().with_error_code(code),
        ),
        ApiKey::OffsetDelete => encode(
            api,
            v,
            corr,
            &OffsetDeleteResponse::default().with_error_code(code),
        ),
        ApiKey::ElectLeaders if v >= 1 => encode(
            api,
            v,
            corr,
            &ElectLeadersResponse::default().with_error_code(code),
        ),
        ApiKey::AlterPartitionReassignments => encode(
            api,
            v,
            corr,
            &AlterPartitionReassignmentsResponse::default().with_error_code(code),
        ),
        ApiKey::ListPartitionReassignments => encode(
            api,
            v,
            corr,
            &ListPartitionReassignmentsResponse::default().with_error_code(code),
        ),
        ApiKey::WriteTxnMarkers => {
            let r: WriteTxnMarkersRequest = decode(frame)?;
            let markers = r
                .markers
                .iter()
                .map(|m| {
                    write_txn_markers_response::WritableTxnMarkerResult::default()
                        .with_producer_id(m.producer_id)
                        .with_topics(
                            m.topics
                                .iter()
                                .map(|t| {
                                    write_txn_markers_response::WritableTxnMarkerTopicResult::default()
                                        .with_name(t.name.clone())
                                        .with_partitions(
                                            t.partition_indexes
                                                .iter()
                                                .map(|p| {
                                                    write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                                                        .with_partition_index(*p)
                                                        .with_error_code(code)
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            encode(
                api,
                v,
                corr,
                &WriteTxnMarkersResponse::default().with_markers(markers),
            )
        }
        ApiKey::AddPartitionsToTxn if v < 4 => {
            let r: AddPartitionsToTxnRequest = decode(frame)?;
            let results = r
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(*p)
                                        .with_partition_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            encode(
                api,
                v,
                corr,
                &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
            )
        }
        _ => return None,
    })
}

/// Metadata: topics the principal may not describe are left out of an all-topics answer
/// and answered TOPIC_AUTHORIZATION_FAILED when named.
pub(crate) fn filter_metadata(
    ctx: &ShardCtx,
    conn: &Conn,
    named: bool,
    resp: &mut MetadataResponse,
) {
    if !ctx.access.enabled() {
        return;
    }
    let allowed = |t: &metadata_response::MetadataResponseTopic| {
        t.name
            .as_ref()
            .is_some_and(|n| ctx.access.allows(conn, Op::Describe, Rt::Topic, n))
    };
    if named {
        for t in resp.topics.iter_mut() {
            if !allowed(t) {
                *t = metadata_response::MetadataResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_error_code(TOPIC);
            }
        }
    } else {
        resp.topics.retain(allowed);
    }
}

/// Whether Metadata may create `topic` for this principal (auto-creation).
pub(crate) fn may_create(ctx: &ShardCtx, conn: &Conn, topic: &str) -> bool {
    ctx.access.allows_cluster(conn, Op::Create)
        || ctx.access.allows(conn, Op::Create, Rt::Topic, topic)
}

/// OffsetFetch: a group the principal may not describe is answered
/// GROUP_AUTHORIZATION_FAILED; topics it may not describe are left out.
pub(crate) fn filter_offset_fetch(
    ctx: &ShardCtx,
    conn: &Conn,
    resp: &mut OffsetFetchResponse,
    v0_v7_group: &str,
) {
    if !ctx.access.enabled() {
        return;
    }
    let a = &ctx.access;
    let topic_ok = |n: &str| a.allows(conn, Op::Describe, Rt::Topic, n);
    if !v0_v7_group.is_empty() && !a.allows(conn, Op::Describe, Rt::Group, v0_v7_group) {
        resp.topics.clear();
        resp.error_code = GROUP;
    }
    resp.topics.retain(|t| topic_ok(&t.name));
    for g in resp.groups.iter_mut() {
        if !a.allows(conn, Op::Describe, Rt::Group, &g.group_id) {
            g.topics.clear();
            g.error_code = GROUP;
        }
        g.topics.retain(|t| topic_ok(&t.name));
    }
}

/// OffsetFetch v0-1 of a group the principal may not describe: these versions have no
/// top-level error code, so (as Kafka does) each partition asked for carries
/// GROUP_AUTHORIZATION_FAILED. None when the request may go on.
pub(crate) fn offset_fetch_group_refused(
    ctx: &ShardCtx,
    conn: &Conn,
    req: &OffsetFetchRequest,
    version: i16,
) -> Option<OffsetFetchResponse> {
    if version >= 2
        || !ctx.access.enabled()
        || ctx
            .access
            .allows(conn, Op::Describe, Rt::Group, &req.group_id)
    {
        return None;
    }
    let topics = req.topics.iter().flatten().map(|t| {
        offset_fetch_response::OffsetFetchResponseTopic::default()
            .with_name(t.name.clone())
            .with_partitions(
                t.partition_indexes
                    .iter()
                    .map(|p| {
                        offset_fetch_response::OffsetFetchResponsePartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(-1)
                            .with_metadata(Some(StrBytes::default()))
                            .with_error_code(GROUP)
                    })
                    .collect(),
            )
    });
    Some(OffsetFetchResponse::default().with_topics(topics.collect()))
}

/// DescribeGroups: groups the principal may not describe are answered
/// GROUP_AUTHORIZATION_FAILED.
pub(crate) fn filter_describe_groups(
    ctx: &ShardCtx,
    conn: &Conn,
    resp: &mut DescribeGroupsResponse,
) {
    if !ctx.access.enabled() {
        return;
    }
    for g in resp.groups.iter_mut() {
        if !ctx
            .access
            .allows(conn, Op::Describe, Rt::Group, &g.group_id)
        {
            *g = describe_groups_response::DescribedGroup::default()
                .with_group_id(g.group_id.clone())
                .with_error_code(GROUP);
        }
    }
}

/// ListTransactions: the transactional ids the principal may describe.
pub(crate) fn filter_list_transactions(
    ctx: &ShardCtx,
    conn: &Conn,
    resp: &mut ListTransactionsResponse,
) {
    if !ctx.access.enabled() {
        return;
    }
    resp.transaction_states.retain(|t| {
        ctx.access
            .allows(conn, Op::Describe, Rt::TransactionalId, &t.transactional_id)
    });
}

/// ListGroups: with DESCRIBE on the cluster every group, else those it may describe.
pub(crate) fn filter_list_groups(ctx: &ShardCtx, conn: &Conn, resp: &mut ListGroupsResponse) {
    if !ctx.access.enabled() || ctx.access.allows_cluster(conn, Op::Describe) {
        return;
    }
    resp.groups.retain(|g| {
        ctx.access
            .allows(conn, Op::Describe, Rt::Group, &g.group_id)
    });
}

/// KIP-430: the operations the principal may do on a resource, as the bit field clients
/// ask for (`include_*_authorized_operations`): bit `code` set per allowed operation. With
/// no authorizer every operation of the resource type is allowed, as in Kafka.
pub(crate) fn authorized_operations(ctx: &ShardCtx, conn: &Conn, rt: Rt, name: &str) -> i32 {
    let ops: &[Op] = match rt {
        Rt::Topic => &[
            Op::Read,
            Op::Write,
            Op::Create,
            Op::Delete,
            Op::Alter,
            Op::Describe,
            Op::DescribeConfigs,
            Op::AlterConfigs,
        ],
        Rt::Group => &[Op::Read, Op::Describe, Op::Delete],
        Rt::Cluster => &[
            Op::Create,
            Op::Alter,
            Op::Describe,
            Op::ClusterAction,
            Op::DescribeConfigs,
            Op::AlterConfigs,
            Op::IdempotentWrite,
        ],
        _ => &[],
    };
    ops.iter()
        .filter(|op| ctx.access.allows(conn, **op, rt, name))
        .fold(0i32, |bits, op| bits | (1 << op.code()))
}

/// ListOffsets: takes the topics the principal may not describe out of `req`; their
/// answer is TOPIC_AUTHORIZATION_FAILED per partition.
pub(crate) fn list_offsets_denied(
    ctx: &ShardCtx,
    conn: &Conn,
    req: &mut ListOffsetsRequest,
) -> Vec<list_offsets_response::ListOffsetsTopicResponse> {
    let (denied, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics)
        .into_iter()
        .partition(|t| !ctx.access.allows(conn, Op::Describe, Rt::Topic, &t.name));
    req.topics = kept;
    denied
        .into_iter()
        .map(|t| {
            list_offsets_response::ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            list_offsets_response::ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(TOPIC)
                                .with_timestamp(-1)
                                .with_offset(-1)
                        })
                        .collect(),
                )
        })
        .collect()
}

/// OffsetCommit: takes the topics the principal may not read out of `req` (their offsets
/// are not committed); their answer is TOPIC_AUTHORIZATION_FAILED per partition.
pub(crate) fn offset_commit_denied(
    ctx: &ShardCtx,
    conn: &Conn,
    req: &mut OffsetCommitRequest,
) -> Vec<offset_commit_response::OffsetCommitResponseTopic> {
    let (denied, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics)
        .into_iter()
        .partition(|t| !ctx.access.allows(conn, Op::Read, Rt::Topic, &t.name));
    req.topics = kept;
    denied
        .into_iter()
        .map(|t| {
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_topic_id(t.topic_id)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            offset_commit_response::OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(TOPIC)
                        })
                        .collect(),
                )
        })
        .collect()
}
