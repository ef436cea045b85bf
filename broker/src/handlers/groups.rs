//! Consumer-group APIs: FindCoordinator (this node), and the group requests routed to the
//! coordinator of the group's `__consumer_offsets` partition. Batched requests
//! (OffsetFetch v8+, DescribeGroups, DeleteGroups) are split per group; ListGroups asks
//! every shard.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_response::{DescribeGroupsResponse, DescribedGroup};
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::list_groups_response::ListGroupsResponse;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::groups::{coordinator_partition, GroupOffsets, OFFSETS_TOPIC};
use crate::groups_glue::{GroupAnswer, GroupCall};
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse};
use crate::txn::TRANSACTION_STATE_TOPIC;

/// Creates `__consumer_offsets` on first start (shard 0, before serving).
/// The coordinator partition and owning shard of `group_id`, once the offsets topic exists.
pub(crate) fn route(ctx: &ShardCtx, group_id: &str) -> Option<(i32, usize)> {
    let partitions = ctx.image.borrow().topic(OFFSETS_TOPIC)?.partitions;
    let p = coordinator_partition(group_id, partitions);
    Some((p, ctx.owner(OFFSETS_TOPIC, p)?))
}

/// Kafka's metadata check before a group stores or deletes offsets (`KafkaApis`'
/// handleOffsetCommitRequest, handleTxnOffsetCommitRequest, handleOffsetDeleteRequest):
/// partitions of a topic the metadata does not have, or past its partition count, are
/// taken out of `topics` (a topic left without partitions goes too) to be answered
/// UNKNOWN_TOPIC_OR_PARTITION; returned by topic name. Offsets of a topic that does not
/// exist would otherwise wait for a topic created later under that name.
pub(crate) fn take_unknown_partitions<T, P>(
    ctx: &ShardCtx,
    topics: &mut Vec<T>,
    name: impl Fn(&T) -> &str,
    partitions: impl Fn(&mut T) -> &mut Vec<P>,
    index: impl Fn(&P) -> i32,
) -> Vec<(String, Vec<i32>)> {
    let image = ctx.image.borrow();
    let mut unknown = Vec::new();
    topics.retain_mut(|t| {
        let count = image.topic(name(t)).map_or(0, |info| info.partitions);
        let topic = name(t).to_owned();
        let parts = partitions(t);
        let mut gone = Vec::new();
        parts.retain(|p| {
            let known = (0..count).contains(&index(p));
            if !known {
                gone.push(index(p));
            }
            known
        });
        let keep = !parts.is_empty() || gone.is_empty();
        if !gone.is_empty() {
            unknown.push((topic, gone));
        }
        keep
    });
    unknown
}

/// Adds the partitions `take_unknown_partitions` took to a response's topics, under their
/// topic's entry (made if the answer has none), each with UNKNOWN_TOPIC_OR_PARTITION.
pub(crate) fn answer_unknown_partitions<T, P>(
    topics: &mut Vec<T>,
    unknown: Vec<(String, Vec<i32>)>,
    name: impl Fn(&T) -> &str,
    new_topic: impl Fn(String) -> T,
    partitions: impl Fn(&mut T) -> &mut Vec<P>,
    new_partition: impl Fn(i32, i16) -> P,
) {
    let code = ResponseError::UnknownTopicOrPartition.code();
    for (topic, parts) in unknown {
        let i = match topics.iter().position(|t| name(t) == topic) {
            Some(i) => i,
            None => {
                topics.push(new_topic(topic));
                topics.len() - 1
            }
        };
        partitions(&mut topics[i]).extend(parts.into_iter().map(|p| new_partition(p, code)));
    }
}

/// Sends `call` to the coordinator of `group_id`.
pub(crate) async fn call(ctx: &Rc<ShardCtx>, group_id: &str, call: GroupCall) -> GroupAnswer {
    let Some((partition, shard)) = route(ctx, group_id) else {
        return GroupAnswer::NotCoordinator;
    };
    match ctx
        .call(
            shard,
            ShardRequest::Group {
                partition,
                call: Box::new(call),
            },
        )
        .await
    {
        ShardResponse::Group(a) => a,
        _ => GroupAnswer::NotCoordinator,
    }
}

const NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();

pub(crate) async fn find_coordinator(
    ctx: Rc<ShardCtx>,
    req: FindCoordinatorRequest,
    version: i16,
    listener: Rc<str>,
) -> FindCoordinatorResponse {
    // the coordinator is the leader of the key's partition of __consumer_offsets (groups,
    // key type 0) or __transaction_state (transactional ids, key type 1; created on the
    // first such request, as Kafka does)
    let topic = match req.key_type {
        0 => OFFSETS_TOPIC,
        1 => TRANSACTION_STATE_TOPIC,
        _ => "",
    };
    if req.key_type == 1 && ctx.image.borrow().topic(topic).is_none() {
        crate::txn_glue::ensure_topic(&ctx);
    }
    let answer = |key: &StrBytes| -> (i16, Option<&'static str>, BrokerId, String, i32) {
        let none = |e: i16, m| (e, Some(m), BrokerId(-1), String::new(), -1);
        if topic.is_empty() {
            return none(
                ResponseError::InvalidRequest.code(),
                "Unknown coordinator key type.",
            );
        }
        if req.key_type == 1 && key.is_empty() {
            return none(
                ResponseError::InvalidRequest.code(),
                "An empty transactional id.",
            );
        }
        let image = ctx.image.borrow();
        let leader = image.topic(topic).and_then(|t| {
            let p = coordinator_partition(key, t.partitions);
            t.parts.get(usize::try_from(p).ok()?).map(|s| s.leader)
        });
        let endpoint = leader
            .and_then(|l| image.broker(l).filter(|b| !b.fenced))
            .and_then(|b| Some((b.node_id, b.endpoint(&listener)?)));
        match endpoint {
            Some((node, (host, port))) => (0, None, BrokerId(node), host.to_string(), port),
            None => none(NOT_AVAILABLE, "The coordinator is not available yet."),
        }
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (err, msg, node, host, port) = answer(k);
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(node)
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
                    .with_error_code(err)
                    .with_error_message(msg.map(StrBytes::from_static_str))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (err, msg, node, host, port) = answer(&req.key);
    let mut r = FindCoordinatorResponse::default()
        .with_error_code(err)
        .with_node_id(node)
        .with_host(StrBytes::from_string(host))
        .with_port(port);
    if version >= 1 {
        r.error_message = msg.map(StrBytes::from_static_str);
    }
    r
}

pub(crate) async fn join_group(
    ctx: Rc<ShardCtx>,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    match call(
        &ctx,
        &group,
        GroupCall::Join {
            req,
            version,
            client_id,
            client_host,
        },
    )
    .await
    {
        GroupAnswer::Join(r) => r,
        other => JoinGroupResponse::default()
            .with_error_code(other.unanswered_code())
            .with_generation_id(-1),
    }
}

pub(crate) async fn sync_group(
    ctx: Rc<ShardCtx>,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    match call(&ctx, &group, GroupCall::Sync { req, version }).await {
        GroupAnswer::Sync(r) => r,
        other => SyncGroupResponse::default().with_error_code(other.unanswered_code()),
    }
}

pub(crate) async fn heartbeat(
    ctx: Rc<ShardCtx>,
    req: HeartbeatRequest,
    version: i16,
) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    match call(&ctx, &group, GroupCall::Heartbeat { req, version }).await {
        GroupAnswer::Heartbeat(r) => r,
        // Kafka answers a heartbeat blindly while the group loads: the member goes on
        GroupAnswer::Loading => HeartbeatResponse::default(),
        other => HeartbeatResponse::default().with_error_code(other.unanswered_code()),
    }
}

pub(crate) async fn leave_group(
    ctx: Rc<ShardCtx>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    match call(&ctx, &group, GroupCall::Leave { req, version }).await {
        GroupAnswer::Leave(r) => r,
        other => LeaveGroupResponse::default().with_error_code(other.unanswered_code()),
    }
}

pub(crate) async fn offset_commit(
    ctx: Rc<ShardCtx>,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    commit(ctx, req, version, Vec::new()).await
}

/// OffsetCommit at any version; `commit_timestamps` are v1's per-partition commit times
/// (empty for other versions). v0 carries no generation or member: a simple commit.
pub(crate) async fn commit(
    ctx: Rc<ShardCtx>,
    mut req: OffsetCommitRequest,
    version: i16,
    commit_timestamps: Vec<Vec<i64>>,
) -> OffsetCommitResponse {
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    let asked = req.topics.len();
    // v1's timestamps are indexed like the request: keep those of the partitions kept
    let commit_timestamps = if commit_timestamps.is_empty() {
        commit_timestamps
    } else {
        let image = ctx.image.borrow();
        req.topics
            .iter()
            .zip(commit_timestamps)
            .filter_map(|(t, ts)| {
                let count = image.topic(t.name.0.as_str()).map_or(0, |i| i.partitions);
                let kept: Vec<i64> = t
                    .partitions
                    .iter()
                    .zip(ts)
                    .filter(|(p, _)| (0..count).contains(&p.partition_index))
                    .map(|(_, ts)| ts)
                    .collect();
                // a topic left with no partition leaves the request (take_unknown_partitions)
                (!kept.is_empty() || t.partitions.is_empty()).then_some(kept)
            })
            .collect()
    };
    let unknown = take_unknown_partitions(
        &ctx,
        &mut req.topics,
        |t| t.name.0.as_str(),
        |t| &mut t.partitions,
        |p| p.partition_index,
    );
    let mut resp = if req.topics.is_empty() && asked > 0 {
        OffsetCommitResponse::default()
    } else {
        commit_known(ctx, req, version, commit_timestamps).await
    };
    answer_unknown_partitions(
        &mut resp.topics,
        unknown,
        |t| t.name.0.as_str(),
        |name| {
            OffsetCommitResponseTopic::default().with_name(TopicName(StrBytes::from_string(name)))
        },
        |t| &mut t.partitions,
        |p, code| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(code)
        },
    );
    resp
}

/// `commit` of the partitions the metadata knows.
async fn commit_known(
    ctx: Rc<ShardCtx>,
    req: OffsetCommitRequest,
    version: i16,
    commit_timestamps: Vec<Vec<i64>>,
) -> OffsetCommitResponse {
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    let group = req.group_id.0.to_string();
    let asked: Vec<_> = req
        .topics
        .iter()
        .map(|t| {
            let parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.clone(), parts)
        })
        .collect();
    let commit = GroupCall::Commit {
        req,
        version,
        commit_timestamps,
    };
    match call(&ctx, &group, commit).await {
        GroupAnswer::Commit(r) => r,
        other => {
            let code = other.unanswered_code();
            let topics = asked.into_iter().map(|(name, parts)| {
                let parts = parts.into_iter().map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(code)
                });
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(parts.collect())
            });
            OffsetCommitResponse::default().with_topics(topics.collect())
        }
    }
}

pub(crate) async fn offset_delete(
    ctx: Rc<ShardCtx>,
    mut req: OffsetDeleteRequest,
    version: i16,
) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let unknown = take_unknown_partitions(
        &ctx,
        &mut req.topics,
        |t| t.name.0.as_str(),
        |t| &mut t.partitions,
        |p| p.partition_index,
    );
    let group = req.group_id.0.to_string();
    let mut resp = match call(&ctx, &group, GroupCall::OffsetDelete { req, version }).await {
        GroupAnswer::OffsetDelete(r) => r,
        other => OffsetDeleteResponse::default().with_error_code(other.unanswered_code()),
    };
    // a group-level error stands alone, as the coordinator answers it
    if resp.error_code == 0 {
        answer_unknown_partitions(
            &mut resp.topics,
            unknown,
            |t| t.name.0.as_str(),
            |name| {
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
            },
            |t| &mut t.partitions,
            |p, code| {
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p)
                    .with_error_code(code)
            },
        );
    }
    resp
}

async fn fetch_group(
    ctx: &Rc<ShardCtx>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> GroupOffsets {
    match call(
        ctx,
        &group_id.clone(),
        GroupCall::Fetch {
            group_id: group_id.clone(),
            topics,
            require_stable,
        },
    )
    .await
    {
        GroupAnswer::Fetch(g) => g,
        other => GroupOffsets {
            group_id,
            error_code: other.unanswered_code(),
            topics: Vec::new(),
        },
    }
}

pub(crate) async fn offset_fetch(
    ctx: Rc<ShardCtx>,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let r = fetch_group(&ctx, g.group_id.0.to_string(), topics, req.require_stable).await;
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(r.group_id)))
                    .with_error_code(r.error_code)
                    .with_topics(
                        r.topics
                            .into_iter()
                            .map(|t| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(StrBytes::from_string(t.name)))
                                    .with_partitions(
                                        t.partitions
                                            .into_iter()
                                            .map(|p| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p.partition)
                                                    .with_committed_offset(p.offset)
                                                    .with_committed_leader_epoch(p.leader_epoch)
                                                    .with_metadata(Some(StrBytes::from_string(
                                                        p.metadata,
                                                    )))
                                                    .with_error_code(p.error_code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let requested: Option<Vec<(String, Vec<i32>)>> =
        if version < 2 { topics.clone() } else { None };
    let r = fetch_group(&ctx, req.group_id.0.to_string(), topics, req.require_stable).await;
    if version < 2 && r.error_code != 0 {
        return partitions_failed(requested.unwrap_or_default(), r.error_code);
    }
    let mut resp = OffsetFetchResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.name)))
                    .with_partitions(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                let mut out = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p.partition)
                                    .with_committed_offset(p.offset)
                                    .with_metadata(Some(StrBytes::from_string(p.metadata)))
                                    .with_error_code(p.error_code);
                                if version >= 5 {
                                    out.committed_leader_epoch = p.leader_epoch;
                                }
                                out
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    if version >= 2 {
        resp.error_code = r.error_code;
    }
    resp
}

/// OffsetFetch v0/v1 have no group-level error code: as in Kafka, a group error is answered
/// in every requested partition (offset -1, empty metadata).
fn partitions_failed(requested: Vec<(String, Vec<i32>)>, error_code: i16) -> OffsetFetchResponse {
    OffsetFetchResponse::default().with_topics(
        requested
            .into_iter()
            .map(|(name, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(-1)
                                    .with_metadata(Some(StrBytes::default()))
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub(crate) async fn describe_groups(
    ctx: Rc<ShardCtx>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let id = g.0.to_string();
        let mut d = match call(
            &ctx,
            &id,
            GroupCall::Describe {
                group_id: id.clone(),
            },
        )
        .await
        {
            GroupAnswer::Describe(d) => d,
            other => DescribedGroup::default()
                .with_group_id(g.clone())
                .with_error_code(other.unanswered_code()),
        };
        if version < 3 {
            d.authorized_operations = i32::MIN;
        }
        if version < 4 {
            for m in &mut d.members {
                m.group_instance_id = None;
            }
        }
        if version < 6 {
            d.error_message = None;
        }
        groups.push(d);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(crate) async fn list_groups(
    ctx: Rc<ShardCtx>,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let mut groups = Vec::new();
    for shard in 0..ctx.shards {
        let call = GroupCall::List {
            states: req.states_filter.clone(),
            types: req.types_filter.clone(),
        };
        if let ShardResponse::Group(GroupAnswer::List(mut l)) = ctx
            .call(
                shard,
                ShardRequest::Group {
                    partition: -1,
                    call: Box::new(call),
                },
            )
            .await
        {
            groups.append(&mut l);
        }
    }
    for g in &mut groups {
        if version < 4 {
            g.group_state = StrBytes::default();
        }
        if version < 5 {
            g.group_type = StrBytes::default();
        }
    }
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default().with_groups(groups)
}

pub(crate) async fn delete_groups(
    ctx: Rc<ShardCtx>,
    req: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let id = g.0.to_string();
        let code = match call(
            &ctx,
            &id,
            GroupCall::Delete {
                group_id: id.clone(),
            },
        )
        .await
        {
            GroupAnswer::Delete(c) => c,
            other => other.unanswered_code(),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
